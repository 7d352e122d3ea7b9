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

function start() {
  const here = new URL(import.meta.url);
  const workerUrl = new URL("./worker.js", here);
  const storage = here.searchParams.get("storage") ?? new URLSearchParams(location.search).get("storage");
  if (storage) workerUrl.searchParams.set("storage", storage);
  const worker = new Worker(workerUrl, { type: "module", name: "edge-min" });
  const pending = new Map();
  let nextId = 1;
  let failure = null;
  let boot = null;
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
  }

  worker.onmessage = (event) => {
    const message = event.data;
    if (message.type === "reply") {
      const call = pending.get(message.id);
      if (!call) return;
      pending.delete(message.id);
      if (message.ok) call.resolve(message.value);
      else call.reject(new EdgeMinError(message.error.code, message.error.message));
    } else if (message.type === "ready") {
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

  function call(method, params = {}) {
    if (failure !== null) return Promise.reject(failure);
    return new Promise((resolve, reject) => {
      const id = nextId++;
      pending.set(id, { resolve, reject });
      worker.postMessage({ type: "call", id, method, params });
    });
  }

  const sayOnline = () => call("online", { up: navigator.onLine }).catch(() => {});
  self.addEventListener("online", sayOnline);
  self.addEventListener("offline", sayOnline);
  ready.then(sayOnline, () => {});

  const api = {
    ready,
    async status() {
      const info = await call("status");
      const estimate = (await navigator.storage?.estimate?.()) ?? {};
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
