// The page a person uses (index.html): workflows, a run button with JSON input, the runs
// with their steps and outputs, sync status, storage persistence and quota, one-click
// examples (examples.js). Plain DOM on top of window.edgeMin (edge-min.js); no build step.

import { edgeMin } from "./edge-min.js";
import { EXAMPLES } from "./examples.js";

const $ = (id) => document.getElementById(id);
const REFRESH_MS = 3000;
let selectedRun = null;
let running = false;

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") node.className = v;
    else if (k.startsWith("data-")) node.setAttribute(k, v);
    else node[k] = v;
  }
  node.append(...children.filter((c) => c != null));
  return node;
}

const mb = (n) =>
  n == null ? "?" : n >= 2 ** 30 ? `${(n / 2 ** 30).toFixed(1)} GB` : `${(n / 2 ** 20).toFixed(1)} MB`;
const json = (v) => (v === undefined ? "" : JSON.stringify(v, null, 2));
const when = (iso) => (iso ? new Date(iso).toLocaleString() : "—");

// A runtime error (an EdgeMinError: code and message) in the error banner.
function showError(err, what) {
  const box = $("error");
  box.hidden = false;
  box.replaceChildren(
    el("strong", {}, `${what} failed: `),
    el("code", { class: "code" }, err?.code ?? "error"),
    " ",
    el("span", { class: "message" }, err?.message ?? String(err)),
  );
}

function clearError() {
  $("error").hidden = true;
  $("error").replaceChildren();
}

// --- status: runtime, storage, sync -------------------------------------------------------

function storageLine(info) {
  const p = info.persistence ?? {};
  const b = info.browser ?? {};
  const persisted = b.persisted
    ? "persistent storage granted"
    : `persistent storage not granted${b.why ? ` (${b.why})` : ""}: the browser may evict this data`;
  const backend = `${p.backend ?? "?"} ${p.state ?? "?"}${p.error ? `: ${p.error.message ?? p.error}` : ""}`;
  return { persisted: !!b.persisted, text: `${persisted}; ${mb(b.usage)} used of ${mb(b.quota)} quota; ${backend}` };
}

// status().sync is a /sync/status document ({status, entities: {name: {last_success,
// pending, last_error}}}) once sync exists in the tab; until then it is absent. A document
// without entities is read as one entity (last_success, pending, last_error at its top).
function syncLine(sync) {
  if (!sync || sync.configured === false) return { state: "not-configured", text: "not configured" };
  const entities = sync.entities ? Object.values(sync.entities) : [sync];
  const pending = entities.reduce((n, e) => n + (Number(e.pending) || 0), 0);
  const last = entities.map((e) => e.last_success).filter(Boolean).sort().pop();
  const error = entities.map((e) => e.last_error).filter(Boolean).pop();
  const text = `${sync.status ?? "?"}; last success ${last ? when(last) : "never"}; ${pending} pending` +
    (error ? `; last error: ${typeof error === "string" ? error : json(error)}` : "");
  return { state: sync.status ?? "unknown", text };
}

async function refreshStatus() {
  const info = await edgeMin.status();
  const storage = storageLine(info);
  $("storage").textContent = storage.text;
  $("storage").dataset.persisted = String(storage.persisted);
  const sync = syncLine(info.sync);
  $("sync").textContent = sync.text;
  $("sync").dataset.state = sync.state;
  const ex = info.executions ?? {};
  $("counts").textContent = `${info.workflows ?? 0} workflows, ${info.agents ?? 0} agents; runs: ` +
    Object.entries(ex).map(([k, v]) => `${v} ${k}`).join(", ");
  const follower = info.tab?.role === "follower";
  $("state").textContent = follower ? "ready (following another tab)" : "ready";
  $("state").dataset.role = info.tab?.role ?? "leader";
  $("state").title = follower
    ? "Another tab of this site runs edge_min and syncs; this one sends it its calls and takes over when it closes."
    : "This tab runs edge_min (and syncs, once configured).";
}

// --- workflows --------------------------------------------------------------------------

async function refreshWorkflows(select = null) {
  const list = await edgeMin.workflows();
  const picker = $("workflow");
  const keep = select ?? picker.value;
  picker.replaceChildren(
    ...list.map((w) => el("option", { value: w.name }, `${w.name} ${w.version}`)),
  );
  if (list.some((w) => w.name === keep)) picker.value = keep;
  $("run").disabled = running || list.length === 0;
  $("no-workflows").hidden = list.length > 0;
}

// --- runs -------------------------------------------------------------------------------

async function refreshRuns() {
  const list = await edgeMin.runs({ limit: 25 });
  $("runs").replaceChildren(
    ...list.map((r) => {
      const tr = el(
        "tr",
        { "data-run": r.id, "data-status": r.status, class: r.id === selectedRun ? "selected" : "" },
        el("td", {}, el("code", {}, r.id.slice(0, 8))),
        el("td", {}, r.workflow),
        el("td", { class: `status ${r.status}` }, r.status),
        el("td", {}, when(r.started_at)),
        el("td", {}, when(r.completed_at)),
      );
      tr.addEventListener("click", () => showRun(r.id).catch((e) => showError(e, "get")));
      return tr;
    }),
  );
  $("no-runs").hidden = list.length > 0;
}

function renderRun(run) {
  selectedRun = run.id;
  const box = $("run-detail");
  box.hidden = false;
  box.dataset.run = run.id;
  box.dataset.status = run.status;
  $("run-title").textContent = `${run.workflow}: ${run.status}`;
  $("run-id").textContent = run.id;
  $("run-times").textContent = `started ${when(run.started_at)}, completed ${when(run.completed_at)}`;
  $("run-input").textContent = json(run.input);
  $("run-output").textContent = run.output == null ? "—" : json(run.output);
  $("steps").replaceChildren(
    ...(run.steps ?? []).map((s) =>
      el(
        "tr",
        { "data-step": s.step, "data-status": s.status },
        el("td", {}, s.step),
        el("td", { class: `status ${s.status}` }, s.status),
        el("td", {}, String(s.attempt ?? "")),
        el("td", {}, s.metrics?.duration_ms != null ? `${s.metrics.duration_ms} ms` : ""),
        el("td", {}, el("pre", {}, s.error ? json(s.error) : json(s.output))),
      ),
    ),
  );
}

async function showRun(id) {
  renderRun(await edgeMin.get(id));
  await refreshRuns();
}

// --- run button -------------------------------------------------------------------------

function parseInput() {
  const text = $("input").value.trim();
  const error = $("input-error");
  if (text === "") {
    error.hidden = true;
    return { ok: true, value: null };
  }
  try {
    const value = JSON.parse(text);
    error.hidden = true;
    $("input").removeAttribute("aria-invalid");
    return { ok: true, value };
  } catch (e) {
    error.textContent = `The input is not valid JSON: ${e.message}`;
    error.hidden = false;
    $("input").setAttribute("aria-invalid", "true");
    return { ok: false };
  }
}

async function runSelected(event) {
  event.preventDefault();
  const input = parseInput();
  if (!input.ok) return;
  const name = $("workflow").value;
  clearError();
  running = true;
  $("run").disabled = true;
  try {
    const id = await edgeMin.run(name, input.value);
    await showRun(id);
    renderRun(await edgeMin.wait(id));
    await Promise.all([refreshRuns(), refreshStatus()]);
  } catch (e) {
    showError(e, `run ${name}`);
  } finally {
    running = false;
    $("run").disabled = false;
  }
}

// --- examples ---------------------------------------------------------------------------

async function addExample(example) {
  clearError();
  try {
    if (example.bundled) {
      await edgeMin.addExamples(); // the bundle's own files: model, agents, workflow
    } else {
      for (const agent of example.agents) await edgeMin.addAgent(agent.yaml, { files: agent.files });
      await edgeMin.addWorkflow(example.workflow);
    }
    await refreshWorkflows(example.key);
    $("workflow").value = example.key;
    $("input").value = JSON.stringify(example.input, null, 2);
    parseInput();
    await refreshStatus();
  } catch (e) {
    showError(e, `add example ${example.key}`);
  }
}

function renderExamples() {
  $("examples").replaceChildren(
    ...EXAMPLES.map((ex) => {
      const button = el("button", { type: "button", "data-example": ex.key }, `Add ${ex.title}`);
      if (ex.unavailable) {
        button.disabled = true;
        return el("li", {}, button, " ", el("span", { class: "note" }, ex.unavailable));
      }
      button.addEventListener("click", () => addExample(ex));
      return el("li", {}, button);
    }),
  );
}

// --- start ------------------------------------------------------------------------------

async function refreshAll() {
  await Promise.all([refreshStatus(), refreshWorkflows(), refreshRuns()]);
}

function start() {
  renderExamples();
  $("input").addEventListener("input", () => {
    if (!$("input-error").hidden) parseInput();
  });
  $("run-form").addEventListener("submit", runSelected);
  const state = $("state");
  edgeMin.ready.then(
    async () => {
      state.textContent = "ready";
      state.dataset.state = "ready";
      document.body.dataset.ready = "true";
      await refreshAll().catch((e) => showError(e, "refresh"));
      setInterval(() => refreshAll().catch(() => {}), REFRESH_MS);
    },
    (err) => {
      state.textContent = "failed";
      state.dataset.state = "failed";
      showError(err, "starting the runtime");
    },
  );
}

start();
