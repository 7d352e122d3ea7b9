// window.edgeMin: the page's handle on the edge_min runtime running in a Web Worker.
//
//   await edgeMin.ready;                                  // the runtime is open (or why not)
//   await edgeMin.addAgent(yamlText, { files: { "mod.py": code } });
//   await edgeMin.addWorkflow(yamlText);
//   const id = await edgeMin.run("feedback-triage", { text: "the app keeps crashing" });
//   const run = await edgeMin.wait(id);                   // the run with its steps
//   await edgeMin.runs({ status: "succeeded", limit: 20 });
//   await edgeMin.status();
//   await edgeMin.configure({ central_url: "https://central.example.com:8765", device_id: "tab-1" });
//   const { report, status, took_ms } = await edgeMin.syncNow();  // push and pull now
//
// Every method returns a Promise. It rejects with an EdgeMinError: an Error whose `code` is
// one of the runtime's error codes (edge_min.errors: not_found, workflow_invalid,
// agent_error, not_persisted, ...) and whose `message` says what to do. A value the Promise
// resolves with is already persisted in the browser's storage (targets/browser/host.py).
//
// One tab of an origin runs the runtime (its worker holds the origin's Web Lock); every other
// tab of the origin follows it: its calls go to that tab's worker over a BroadcastChannel and
// come back the same way, so both see the same runs, and only the leader syncs. `status().tab`
// says which this tab is ({role: "leader" | "follower", id, leader}). When the leader closes
// or crashes, one follower's worker takes the lock and runs the runtime on what the leader
// last persisted; a call that was on its way to the old leader rejects with `leader_gone`
// (it may or may not have been carried out: look with runs() before you run it again).
//
// ?storage=opfs on the page's URL (or on edge-min.js's) picks OPFS instead of IndexedDB, for
// comparing the two; IndexedDB is the default (docs/browser.md says why).

export class EdgeMinError extends Error {
  constructor(code, message) {
    super(message);
    this.name = "EdgeMinError";
    this.code = code;
  }

  toJSON() {
    return { code: this.code, message: this.message };
  }
}

const CHANNEL = "edge-min:calls"; // worker.js answers other tabs on it
const STORAGE_EVERY_MS = 60_000;

function start() {
  const here = new URL(import.meta.url);
  const tab = crypto.randomUUID();
  const workerUrl = new URL("./worker.js", here);
  const storage = here.searchParams.get("storage") ?? new URLSearchParams(location.search).get("storage");
  if (storage) workerUrl.searchParams.set("storage", storage);
  workerUrl.searchParams.set("tab", tab);
  const worker = new Worker(workerUrl, { type: "module", name: "edge-min" });
  const channel = new BroadcastChannel(CHANNEL);
  const pending = new Map(); // id -> {resolve, reject, leader}: leader is null for our worker
  const queued = []; // calls made before this tab knows where they go
  let nextId = 1;
  let failure = null;
  let boot = null;
  let role = "starting"; // "leader" once our worker holds the lock, "follower" while another does
  let leader = null; // the tab whose worker answers a follower's calls, once it said so
  let resolveReady;
  let rejectReady;
  const ready = new Promise((resolve, reject) => {
    resolveReady = resolve;
    rejectReady = reject;
  });

  // The page asks for persistent storage (only a window may): without it the browser may
  // evict the origin's data under storage pressure. What it answered is in status().
  const persistence = (async () => {
    const storageApi = navigator.storage;
    if (!storageApi?.persist) return { persisted: false, why: "navigator.storage.persist is missing" };
    try {
      return { persisted: await storageApi.persist() };
    } catch (err) {
      return { persisted: false, why: String(err) };
    }
  })();

  function fail(error) {
    if (failure !== null) return;
    failure = new EdgeMinError(error.code || "edge_error", error.message || String(error));
    rejectReady(failure);
    for (const { reject } of pending.values()) reject(failure);
    pending.clear();
    for (const { reject } of queued.splice(0)) reject(failure);
  }

  function settle(message) {
    const call = pending.get(message.id);
    if (!call) return;
    pending.delete(message.id);
    if (message.ok) call.resolve(message.value);
    else call.reject(new EdgeMinError(message.error.code, message.error.message));
  }

  // The calls that went to a leader that is gone: none of them will be answered.
  function abandon(gone, why) {
    for (const [id, call] of pending) {
      if (call.leader !== null && call.leader === gone) {
        pending.delete(id);
        call.reject(new EdgeMinError("leader_gone", `the tab that ran edge_min (${gone}) ${why} ` +
          "before it answered; another tab runs it now. The call may or may not have been " +
          "carried out: look (runs(), get()) before you make it again"));
      }
    }
  }

  function send(entry) {
    pending.set(entry.id, { resolve: entry.resolve, reject: entry.reject,
      leader: role === "leader" ? null : leader });
    const message = { type: "call", id: entry.id, method: entry.method, params: entry.params };
    if (role === "leader") worker.postMessage(message);
    else channel.postMessage({ ...message, from: tab });
  }

  function flush() {
    for (const entry of queued.splice(0)) send(entry);
  }

  worker.onmessage = (event) => {
    const message = event.data;
    if (message.type === "reply") {
      settle(message);
    } else if (message.type === "role") {
      if (message.role === "follower") {
        role = "follower";
        channel.postMessage({ type: "hello", from: tab });
      } else {
        // Our worker took the lock: the tab we followed (if any) is gone.
        if (leader !== null) abandon(leader, "closed");
        role = "leader";
        leader = null;
        flush();
        sayOnline();
        sayStorage();
      }
    } else if (message.type === "ready") {
      flush();
      resolveReady(api);
    } else if (message.type === "boot") {
      boot = { timings: message.timings, backend: message.backend, bundle: message.bundle };
    } else if (message.type === "fatal") {
      fail(message.error);
    }
  };
  worker.onerror = (event) => {
    event.preventDefault();
    fail({ code: "edge_error", message: `the worker failed: ${event.message || "unknown error"}` });
  };

  channel.onmessage = (event) => {
    const message = event.data;
    if (!message || typeof message !== "object" || role !== "follower") return;
    if (message.type === "leader") {
      if (leader !== null && leader !== message.tab) abandon(leader, "closed");
      leader = message.tab;
      flush();
      resolveReady(api);
    } else if (message.type === "reply" && message.to === tab) {
      settle(message);
    } else if (message.type === "leader-gone" && message.tab === leader) {
      // Calls from now on wait for the next leader (our worker, or another follower's).
      abandon(leader, message.error ? `failed (${message.error.code}: ${message.error.message})`
        : "closed");
      leader = null;
    }
  };

  // A leader that is closed or navigated away says so, so that the followers' next calls wait
  // for the next leader instead of going to a worker that is about to end. (A crash says
  // nothing: its followers learn of it when the next leader speaks.)
  self.addEventListener("pagehide", () => {
    if (role === "leader") channel.postMessage({ type: "leader-gone", tab });
  });

  function call(method, params = {}) {
    if (failure !== null) return Promise.reject(failure);
    return new Promise((resolve, reject) => {
      const entry = { id: nextId++, method, params, resolve, reject };
      // our own worker queues what comes before its runtime is up; a follower waits for a leader
      if (role === "leader" || (role === "follower" && leader !== null)) send(entry);
      else queued.push(entry);
    });
  }

  // The leader's page tells its runtime about the link; a follower's link is its own.
  function sayOnline() {
    if (role === "leader") call("online", { up: navigator.onLine }).catch(() => {});
  }
  self.addEventListener("online", sayOnline);
  self.addEventListener("offline", sayOnline);

  // ... and what only a page can ask of the origin's storage, which the device's report to
  // central carries: whether persistence was granted (else the browser may evict the data),
  // the quota and the usage. Again every STORAGE_EVERY_MS, as the usage grows.
  async function sayStorage() {
    if (role !== "leader") return;
    const estimate = (await navigator.storage?.estimate?.().catch(() => null)) ?? {};
    const { persisted } = await persistence;
    call("storage", { persisted, quota: estimate.quota ?? null, usage: estimate.usage ?? null })
      .catch(() => {});
  }
  setInterval(sayStorage, STORAGE_EVERY_MS);

  const api = {
    ready,
    async status() {
      const info = await call("status");
      const estimate = (await navigator.storage?.estimate?.()) ?? {};
      info.tab = { role, id: tab, leader: role === "leader" ? tab : leader };
      info.browser = {
        ...(await persistence),
        quota: estimate.quota ?? null,
        usage: estimate.usage ?? null,
        boot,
      };
      return info;
    },
    addAgent: (yaml, options = {}) => call("addAgent", { yaml, files: options.files ?? null }),
    addWorkflow: (yaml) => call("addWorkflow", { yaml }),
    run: (name, input = null) => call("run", { name, input }),
    wait: (runId) => call("wait", { id: runId }),
    get: (runId) => call("get", { id: runId }),
    runs: ({ status = null, limit = 100 } = {}) => call("runs", { status, limit }),
    workflows: () => call("workflows"),
    agents: () => call("agents"),
    // The bundle's examples (text-classifier-lite on onnxruntime-web, notify, the
    // feedback-triage workflow), added as a person would add them; their names.
    async addExamples() {
      const base = new URL("./examples/", import.meta.url);
      const text = async (name) => {
        const response = await fetch(new URL(name, base));
        if (!response.ok) throw { code: "not_found", message: `examples/${name}: HTTP ${response.status}` };
        return response.text();
      };
      const bundle = await (await fetch(new URL("./bundle.json", import.meta.url))).json();
      const added = { agents: [], workflows: [] };
      for (const agent of bundle.examples.agents) {
        const files = {};
        for (const name of agent.files) files[name] = await text(name);
        added.agents.push((await api.addAgent(await text(agent.yaml), { files })).name);
      }
      for (const name of bundle.examples.workflows) {
        added.workflows.push((await api.addWorkflow(await text(name))).name);
      }
      return added;
    },
    // {central_url, device_id?, token?, encryption?}: stored in the tab's data dir; from then
    // the runtime syncs while the link is up (a failed link only queues the work).
    configure: (settings) => call("configure", settings ?? {}),
    syncNow: () => call("syncNow"),
  };
  return api;
}

export const edgeMin = start();
window.edgeMin = edgeMin;
