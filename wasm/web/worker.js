// The edge_min runtime's dedicated Web Worker (a module worker started by edge-min.js).
//
// 1. boots the bundled Pyodide (./pyodide/, never a CDN) while it waits for the origin's
//    Web Lock: one runtime per origin. A worker that finds the lock held says it is a
//    follower (its page forwards calls to the tab that holds it) and waits on: when that tab
//    closes or crashes, the browser hands the lock to one waiting worker, which goes on;
// 2. mounts /data on durable storage and loads what is there: IndexedDB through
//    Emscripten's IDBFS (the default), or OPFS through pyodide.mountNativeFS with
//    ?storage=opfs on the worker's URL (kept for measuring the two; see docs/browser.md);
// 3. checks each wheel of bundle.json against its sha256 and unpacks it;
// 4. runs targets.browser.host.BrowserHost.serve(): the runtime's loop, which calls
//    persist() below before it tells the page anything.
//
// Messages in: {type: "call", id, method, params}. Out: {type: "role", role}, {type:
// "ready"}, {type: "reply", ...}, {type: "fatal", error: {code, message}}, {type:
// "stopping"}, {type: "boot", timings}. A message that arrives before the runtime is up
// waits in `early`.
//
// The leader also answers the other tabs of the origin on the BroadcastChannel CHANNEL:
// {type: "hello"} -> {type: "leader", tab}; {type: "call", from, id, method, params} -> the
// same loop as its own page's calls -> {type: "reply", to: from, leader: tab, id, ...}.
// {type: "leader-gone", tab, error} tells them it failed.

import { loadPyodide } from "./pyodide/pyodide.mjs";

const MOUNT = "/data";
const CHANNEL = "edge-min:calls";
const TAB = new URL(self.location.href).searchParams.get("tab") || "unnamed";
const early = [];
let host = null;
let dead = false;
let serving = false;
let channel = null;
let releaseLock = null;

function receive(message) {
  const text = JSON.stringify(message);
  if (host !== null) host.receive(text);
  else early.push(text);
}

self.onmessage = (event) => receive(event.data);

function fatal(code, message) {
  if (dead) return;
  dead = true;
  self.postMessage({ type: "fatal", error: { code, message } });
  // The other tabs stop waiting on this one, and the lock goes to the next of them, which
  // tries on its own (and says so in its own page if it fails too).
  channel?.postMessage({ type: "leader-gone", tab: TAB, error: { code, message } });
  releaseLock?.();
}

// A forwarded call's id is "<tab>/<id>" inside the loop, so its reply goes back to that tab.
function listen() {
  channel = new BroadcastChannel(CHANNEL);
  channel.onmessage = (event) => {
    const message = event.data;
    if (dead || !message || typeof message !== "object") return;
    if (message.type === "hello" && serving) {
      channel.postMessage({ type: "leader", tab: TAB });
    } else if (message.type === "call" && typeof message.from === "string") {
      receive({ type: "call", id: `${message.from}/${message.id}`, method: message.method,
        params: message.params ?? {} });
    }
  };
}

function post(text) {
  const message = JSON.parse(text);
  if (message.type === "reply" && typeof message.id === "string" && message.id.includes("/")) {
    const cut = message.id.indexOf("/");
    channel?.postMessage({ ...message, to: message.id.slice(0, cut), leader: TAB,
      id: Number(message.id.slice(cut + 1)) });
    return;
  }
  if (message.type === "fatal") {
    // the runtime's own fatal hook: the same as a failure before it was up
    fatal(message.error?.code || "edge_error", message.error?.message || "the runtime failed");
    return;
  }
  self.postMessage(message);
  if (message.type === "ready") {
    serving = true;
    channel?.postMessage({ type: "leader", tab: TAB });
  }
}

function describe(err) {
  if (err === null || err === undefined) return "unknown error";
  if (typeof err === "string") return err;
  const name = err.name || err.constructor?.name || "Error";
  return `${name}: ${err.message ?? String(err)}`;
}

async function sha256hex(buffer) {
  const digest = await crypto.subtle.digest("SHA-256", buffer);
  return Array.from(new Uint8Array(digest), (b) => b.toString(16).padStart(2, "0")).join("");
}

// IDBFS keeps the files in memory and copies the changed ones into IndexedDB, all in one
// readwrite transaction that calls back on `complete`: a persist is all or nothing.
// After a failure the cached connection is dropped, so the retry opens IndexedDB again: when
// the browser closed it (site data cleared under the tab), the retry writes every file anew.
async function mountIdbfs(FS) {
  const IDBFS = FS.filesystems.IDBFS;
  FS.mkdirTree(MOUNT);
  FS.mount(IDBFS, {}, MOUNT);
  const sync = (populate) =>
    new Promise((resolve, reject) =>
      FS.syncfs(populate, (err) => (err ? reject(err) : resolve())),
    );
  await sync(true);
  const persist = async () => {
    try {
      await sync(false);
    } catch (err) {
      try {
        IDBFS.dbs[MOUNT]?.close();
      } catch {}
      delete IDBFS.dbs[MOUNT];
      throw err;
    }
  };
  return { backend: "idbfs", persist };
}

// OPFS through Pyodide's native file system: also in memory, written back file by file
// (each file atomically, but not all files together).
async function mountOpfs(pyodide) {
  const root = await navigator.storage.getDirectory();
  const dir = await root.getDirectoryHandle("edge-min", { create: true });
  const native = await pyodide.mountNativeFS(MOUNT, dir);
  return { backend: "opfs", persist: () => native.syncfs() };
}

// One runtime per origin: two workers on the same files would each persist their own copy
// of them, and IDBFS would mix one tab's database with the other's WAL. The worker holds a
// Web Lock for its whole life (the browser releases it when the worker or its renderer dies),
// taken before the files are read, so it starts from the last holder's last persist. A worker
// that does not get it at once tells its page it follows, and waits (without a limit) to
// take over.
const LOCK = "edge-min:/data";

function holdLock() {
  return new Promise((resolve, reject) => {
    if (!navigator.locks) {
      reject(new Error("this browser has no Web Locks (navigator.locks)"));
      return;
    }
    const held = () => {
      resolve();
      return new Promise((release) => { releaseLock = release; }); // held until the worker ends
    };
    navigator.locks
      .request(LOCK, { ifAvailable: true }, (lock) => {
        if (lock !== null) return held();
        self.postMessage({ type: "role", role: "follower" });
        navigator.locks.request(LOCK, held).catch(reject);
        return undefined;
      })
      .catch(reject);
  });
}

async function boot() {
  const t0 = performance.now();
  const locked = holdLock();
  const timings = {};
  const storageChoice = new URL(self.location.href).searchParams.get("storage") || "idbfs";
  const bundle = await (await fetch(new URL("./bundle.json", import.meta.url), { cache: "no-cache" })).json();
  const indexURL = new URL("./pyodide/", import.meta.url).href;
  const pyodide = await loadPyodide({ indexURL, lockFileURL: `${indexURL}pyodide-lock.json` });
  pyodide.setStdout({ batched: (line) => console.log(line) });
  pyodide.setStderr({ batched: (line) => console.warn(line) });
  timings.pyodide_ms = Math.round(performance.now() - t0);

  try {
    await locked;
  } catch (err) {
    fatal("runtime_busy", `the origin's Web Lock cannot be taken (${describe(err)}), so ` +
      "this tab cannot know it runs the only edge_min on this storage; use a browser with " +
      "navigator.locks");
    return;
  }
  self.postMessage({ type: "role", role: "leader" });
  listen();
  timings.lock_ms = Math.round(performance.now() - t0 - timings.pyodide_ms);
  let storage;
  try {
    storage = storageChoice === "opfs" ? await mountOpfs(pyodide) : await mountIdbfs(pyodide.FS);
  } catch (err) {
    fatal("not_persisted", `durable storage (${storageChoice}) cannot be opened: ${describe(err)}; ` +
      "the runtime does not start on memory alone");
    return;
  }
  timings.storage_ms = Math.round(performance.now() - t0 - timings.pyodide_ms - timings.lock_ms);

  const sitePackages = pyodide.runPython("import sysconfig; sysconfig.get_path('purelib')");
  for (const wheel of bundle.wheels) {
    const response = await fetch(new URL(`./wheels/${wheel.file}`, import.meta.url));
    if (!response.ok) throw new Error(`wheels/${wheel.file}: HTTP ${response.status}`);
    const buffer = await response.arrayBuffer();
    const digest = await sha256hex(buffer);
    if (digest !== wheel.sha256) {
      throw new Error(`wheels/${wheel.file}: sha256 ${digest}, bundle.json says ${wheel.sha256}`);
    }
    pyodide.unpackArchive(buffer, "wheel", { extractDir: sitePackages });
  }
  timings.wheels_ms = Math.round(
    performance.now() - t0 - timings.pyodide_ms - timings.lock_ms - timings.storage_ms,
  );

  // ONNX agents: onnxruntime-web from ./ort/ (no CDN), and the shipped models, each checked
  // against bundle.json, at their path in the tab's file system (edge_min.agents.onnx_web).
  const ortStarted = performance.now();
  const { loadOrtBackend } = await import(new URL("./ort/ort_backend.mjs", import.meta.url).href);
  const ortBackend = await loadOrtBackend({ distUrl: new URL("./ort/", import.meta.url).href });
  for (const model of bundle.models ?? []) {
    const response = await fetch(new URL(`./models/${model.file}`, import.meta.url));
    if (!response.ok) throw new Error(`models/${model.file}: HTTP ${response.status}`);
    const bytes = new Uint8Array(await response.arrayBuffer());
    const digest = await sha256hex(bytes.buffer);
    if (digest !== model.sha256) {
      throw new Error(`models/${model.file}: sha256 ${digest}, bundle.json says ${model.sha256}`);
    }
    pyodide.FS.mkdirTree(model.path.slice(0, model.path.lastIndexOf("/")));
    pyodide.FS.writeFile(model.path, bytes);
  }
  pyodide.pyimport("edge_min.agents.onnx_web").register(ortBackend);
  timings.ort_ms = Math.round(performance.now() - ortStarted);

  // A persist returns only once the clock has moved on: IDBFS copies a file when its mtime
  // differs from the copy's, and MEMFS mtimes are milliseconds, so a write in the very
  // millisecond of the last persist would otherwise look unchanged and be skipped.
  const persist = async () => {
    const started = Date.now();
    await storage.persist();
    while (Date.now() <= started) await new Promise((resolve) => setTimeout(resolve, 1));
  };
  pyodide.runPython(`
import importlib, logging, sys
importlib.invalidate_caches()
logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s")
`);
  const { BrowserHost } = pyodide.pyimport("targets.browser.host");
  host = BrowserHost.callKwargs(persist, post, {
    mount: MOUNT,
    backend: storage.backend,
  });
  timings.total_ms = Math.round(performance.now() - t0);
  self.postMessage({ type: "boot", timings, backend: storage.backend, bundle });
  for (const text of early.splice(0)) host.receive(text);
  try {
    await host.serve();
  } catch (err) {
    // serve() posted `fatal` itself through the runtime's hooks when it could; this covers
    // what fails before its hooks exist.
    fatal("edge_error", describe(err));
  }
}

boot().catch((err) => fatal("edge_error", `the worker could not start: ${describe(err)}`));
