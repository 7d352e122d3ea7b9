// The fleet page: reads central's API with the operator's token, every few seconds.
// Plain ES module, no dependencies, no build step. Every value is put in the page with
// textContent (never as HTML), so what devices report cannot run as script here.

const TOKEN_KEY = "edge-min.fleet.token";
const REFRESH_MS = 5000;
const DEVICE_PAGE = 500;
const MAX_DEVICE_PAGES = 20; // 10,000 devices: past that the page says it shows a part
const ALERTS_SHOWN = 50;
const FINISHED = new Set(["cancelled", "completed"]);
const ACTIONS = ["pause", "resume", "cancel"];

const $ = (id) => document.getElementById(id);
let timer = null;
let busy = false;
// Whether the message on show came from a refresh (cleared by the next good one) rather
// than from something the person did (kept until their next action).
let messageFromRefresh = false;

// A refused token: the page stops asking and says why.
class Refused extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

function storedToken() {
  return sessionStorage.getItem(TOKEN_KEY);
}

async function api(method, path) {
  const token = storedToken();
  if (!token) throw new Refused(401, "unauthorized", "no token entered");
  const response = await fetch(path, {
    method,
    headers: { Authorization: `Bearer ${token}`, Accept: "application/json" },
    cache: "no-store",
  });
  let body = null;
  try {
    body = await response.json();
  } catch {
    body = null;
  }
  if (response.ok) return body;
  const error = (body && body.error) || {};
  const message = error.message || `${method} ${path} answered HTTP ${response.status}`;
  if (response.status === 401 || response.status === 403) {
    throw new Refused(response.status, error.code || String(response.status), message);
  }
  const failure = new Error(message);
  failure.status = response.status;
  throw failure;
}

async function allDevices() {
  const devices = [];
  let after = null;
  for (let page = 0; page < MAX_DEVICE_PAGES; page++) {
    const query = new URLSearchParams({ limit: String(DEVICE_PAGE) });
    if (after) query.set("after", after);
    const body = await api("GET", `/api/devices?${query}`);
    devices.push(...(body.devices || []));
    after = body.next;
    if (!after) return { devices, partial: false };
  }
  return { devices, partial: true };
}

async function rollouts() {
  try {
    return (await api("GET", "/api/rollouts")).rollouts || [];
  } catch (error) {
    if (error.status === 404) return []; // this central has no rollouts part
    throw error;
  }
}

// -- rendering -----------------------------------------------------------------------------

function cell(row, text, className) {
  const td = document.createElement("td");
  td.textContent = text ?? "—";
  if (className) td.className = className;
  row.append(td);
  return td;
}

function badge(row, value) {
  const td = cell(row, "");
  const span = document.createElement("span");
  const text = value || "unknown";
  span.textContent = text;
  span.className = `badge badge-${text.replace(/[^a-z_-]/gi, "")}`;
  td.append(span);
  return td;
}

function ago(iso) {
  if (!iso) return "never";
  const seconds = Math.round((Date.now() - Date.parse(iso)) / 1000);
  if (!Number.isFinite(seconds)) return iso;
  if (seconds < 60) return `${Math.max(0, seconds)} s ago`;
  if (seconds < 3600) return `${Math.round(seconds / 60)} min ago`;
  if (seconds < 86400) return `${Math.round(seconds / 3600)} h ago`;
  return `${Math.round(seconds / 86400)} days ago`;
}

function timeCell(row, iso) {
  const td = cell(row, "");
  const time = document.createElement("time");
  time.textContent = ago(iso);
  if (iso) {
    time.dateTime = iso;
    time.title = iso;
  }
  td.append(time);
}

function fill(tableId, emptyId, items, render) {
  const body = $(tableId).tBodies[0];
  const rows = items.map((item) => {
    const tr = document.createElement("tr");
    render(tr, item);
    return tr;
  });
  body.replaceChildren(...rows);
  $(tableId).hidden = items.length === 0;
  $(emptyId).hidden = items.length !== 0;
}

function renderDevices({ devices, partial }) {
  $("device-count").textContent = `(${devices.length}${partial ? "+" : ""})`;
  fill("devices", "devices-empty", devices, (tr, d) => {
    tr.dataset.device = d.id;
    const th = document.createElement("th");
    th.scope = "row";
    th.textContent = d.id;
    tr.append(th);
    cell(tr, d.status);
    badge(tr, d.health);
    cell(tr, d.version, "mono");
    timeCell(tr, d.last_seen);
    const trust = (d.attestation && d.attestation.trust) || "unknown";
    badge(tr, trust).title = (d.attestation && d.attestation.reason) || "";
    cell(tr, (d.tags || []).join(", ") || "—");
  });
}

function progressOf(r) {
  // GET /api/rollouts: one entry per phase, {devices, committed, failed, ...}
  let total = 0, done = 0, failed = 0;
  for (const phase of r.progress || []) {
    total += Number(phase.devices) || 0;
    done += Number(phase.committed) || 0;
    failed += Number(phase.failed) || 0;
  }
  return { total, done, failed };
}

function renderRollouts(items) {
  fill("rollouts", "rollouts-empty", items, (tr, r) => {
    tr.dataset.rollout = r.id;
    const th = document.createElement("th");
    th.scope = "row";
    th.textContent = r.id;
    tr.append(th);
    cell(tr, r.version, "mono");
    badge(tr, r.status);
    const phases = r.phases || [];
    const percent = phases[(Number(r.phase) || 0) - 1]; // phase counts from 1
    const phaseText = phases.length
      ? `${percent ?? "?"}% (${r.phase ?? "?"} of ${phases.length}: ${phases.map((p) => `${p}%`).join(" → ")})`
      : String(r.phase ?? "—");
    cell(tr, phaseText);
    const { total, done, failed } = progressOf(r);
    const td = cell(tr, "");
    const bar = document.createElement("progress");
    bar.max = Math.max(total, 1);
    bar.value = done;
    bar.setAttribute("aria-label", `rollout ${r.id}: ${done} of ${total} devices committed`);
    const label = document.createElement("span");
    label.textContent = ` ${done} of ${total} committed` + (failed ? `, ${failed} failed or rolled back` : "");
    td.append(bar, label);
    const actions = cell(tr, "");
    for (const action of ACTIONS) actions.append(actionButton(r, action));
  });
}

function actionButton(r, action) {
  const button = document.createElement("button");
  button.type = "button";
  button.textContent = action[0].toUpperCase() + action.slice(1);
  button.setAttribute("aria-label", `${button.textContent} rollout ${r.id}`);
  const state = String(r.status || "").toLowerCase();
  button.disabled =
    FINISHED.has(state) ||
    (action === "pause" && state !== "active") ||
    (action === "resume" && state !== "paused"); // a halted rollout is cancelled, not resumed
  button.addEventListener("click", async () => {
    button.disabled = true;
    try {
      await api("POST", `/api/rollouts/${encodeURIComponent(r.id)}/${action}`);
      say(`Rollout ${r.id}: ${action} sent.`, "info");
    } catch (error) {
      say(`Rollout ${r.id} could not ${action}: ${error.message}`, "error");
    }
    refresh();
  });
  return button;
}

function renderAlerts(alerts) {
  fill("alerts", "alerts-empty", alerts, (tr, a) => {
    timeCell(tr, a.at || a.received_at);
    cell(tr, a.node);
    badge(tr, a.severity);
    cell(tr, a.name);
    cell(tr, a.message);
  });
}

// -- state -----------------------------------------------------------------------------------

function say(text, kind, fromRefresh = false) {
  messageFromRefresh = fromRefresh;
  const box = $("message");
  box.textContent = text;
  box.className = kind || "error";
  box.hidden = !text;
}

function signedIn(yes) {
  $("sign-in").hidden = yes;
  $("fleet").hidden = !yes;
  $("sign-out").hidden = !yes;
}

function stop() {
  if (timer !== null) clearInterval(timer);
  timer = null;
}

async function refresh() {
  if (busy || !storedToken()) return;
  busy = true;
  try {
    const [devices, rolls, alerts] = await Promise.all([
      allDevices(),
      rollouts(),
      api("GET", `/api/alerts?limit=${ALERTS_SHOWN}`),
    ]);
    renderDevices(devices);
    renderRollouts(rolls);
    renderAlerts(alerts.alerts || []);
    signedIn(true);
    if (messageFromRefresh) say("");
    $("refreshed").textContent = `Updated ${new Date().toLocaleTimeString()}`;
  } catch (error) {
    if (error instanceof Refused && error.status === 401) {
      stop();
      sessionStorage.removeItem(TOKEN_KEY);
      signedIn(false);
      say(`Central refused the token (${error.code}): ${error.message}`, "error", false);
    } else if (error instanceof Refused) {
      say(`This token may not read the fleet (${error.code}): ${error.message}`, "error", true);
    } else {
      say(`Central did not answer: ${error.message}. Trying again every ${REFRESH_MS / 1000} s.`, "error", true);
    }
  } finally {
    busy = false;
  }
}

function start() {
  stop();
  refresh();
  timer = setInterval(refresh, REFRESH_MS);
}

$("token-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const token = $("token").value.trim();
  if (!token) return;
  sessionStorage.setItem(TOKEN_KEY, token);
  $("token").value = "";
  say("");
  start();
});

$("sign-out").addEventListener("click", () => {
  stop();
  sessionStorage.removeItem(TOKEN_KEY);
  signedIn(false);
  say("Token forgotten.", "info");
});

if (storedToken()) {
  start();
} else {
  signedIn(false);
}
