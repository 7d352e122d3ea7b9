// onnxruntime-web for edge_min's ONNX agents: the JavaScript half of
// edge_min/agents/onnx_web.py, the same module in a browser's Web Worker and under Node.js.
//
//   import { loadOrtBackend } from "./ort/ort_backend.mjs";
//   const backend = await loadOrtBackend({ distUrl });   // the local onnxruntime-web dist/
//   globalThis.edgeMinOrt = backend;                    // or hand it to onnx_web.register()
//
// `distUrl` is the folder holding ort.wasm.min.mjs, ort-wasm-simd-threaded.mjs and
// ort-wasm-simd-threaded.wasm (from the pinned npm package): onnxruntime-web loads its
// WebAssembly from there and from nowhere else (ort.env.wasm.wasmPaths), so it works
// offline and never reaches a CDN. One thread: no SharedArrayBuffer, so the page needs no
// COOP/COEP headers.
//
// Everything crosses the Python boundary as JSON text, so no proxy has to be freed and no
// typed array is shared with Pyodide's heap:
//
//   create(modelBytes: Uint8Array) -> Promise<text>  {id, inputs, outputs, load_ms, version}
//       inputs/outputs: [{name, type, shape}], type as onnxruntime-web names it ("string",
//       "float32", "int64", ...; "non-tensor" for sequences and maps), shape's symbolic
//       dims by name, unknown ones null
//   run(id, feedsText) -> Promise<text>  {outputs: {name: {type, dims, data}}, run_ms}
//       feeds: {name: {type, dims, data}}, type a numpy-style name (float32, int64, bool,
//       str, ...), data flat in C order; int64/uint64 values as decimal strings (exact
//       beyond 2**53), float16 as their 16-bit patterns, non-finite floats as "NaN",
//       "Infinity", "-Infinity". Outputs use the same conventions.
//   release(id)  frees the session.
//
// A failure rejects with an Error whose message is onnxruntime-web's.

const TYPED = {
  float32: Float32Array,
  float64: Float64Array,
  int8: Int8Array,
  int16: Int16Array,
  int32: Int32Array,
  uint8: Uint8Array,
  uint16: Uint16Array,
  uint32: Uint32Array,
};

function describe(names, metadata) {
  return names.map((name, i) => {
    const meta = metadata?.[i] ?? {};
    if (meta.isTensor === false) return { name, type: "non-tensor", shape: null };
    const shape = Array.isArray(meta.shape)
      ? meta.shape.map((d) => (typeof d === "number" && d >= 0 ? d : typeof d === "string" && d ? d : null))
      : null;
    return { name, type: meta.type ?? "unknown", shape };
  });
}

function toTensor(ort, name, feed) {
  const { type, dims, data } = feed;
  switch (type) {
    case "str":
      return new ort.Tensor("string", data.map(String), dims);
    case "bool":
      return new ort.Tensor("bool", Uint8Array.from(data, (v) => (v ? 1 : 0)), dims);
    case "int64":
      return new ort.Tensor("int64", BigInt64Array.from(data, (v) => BigInt(v)), dims);
    case "uint64":
      return new ort.Tensor("uint64", BigUint64Array.from(data, (v) => BigInt(v)), dims);
    case "float16":
      return new ort.Tensor("float16", Uint16Array.from(data), dims);
    default: {
      const Typed = TYPED[type];
      if (Typed === undefined) throw new Error(`input '${name}': element type ${type} is not supported`);
      return new ort.Tensor(type, Typed.from(data, Number), dims);
    }
  }
}

function finite(v) {
  return Number.isFinite(v) ? v : String(v);
}

function fromTensor(tensor) {
  const { type, dims, data } = tensor;
  let out;
  if (type === "int64" || type === "uint64") out = Array.from(data, (v) => v.toString());
  else if (type === "float16") {
    // The bit patterns, whatever array type this build hands back (Uint16Array or Float16Array).
    out = Array.from(data instanceof Uint16Array ? data : new Uint16Array(data.buffer, data.byteOffset, data.length));
  } else if (type === "float32" || type === "float64") out = Array.from(data, finite);
  else if (type === "bool") out = Array.from(data, (v) => Boolean(v));
  else out = Array.from(data);
  return { type, dims: Array.from(dims), data: out };
}

// A backend over an already imported onnxruntime-web module (its `ort` namespace).
export function createOrtBackend(ort, { wasmPaths, numThreads = 1 } = {}) {
  if (wasmPaths) ort.env.wasm.wasmPaths = wasmPaths;
  ort.env.wasm.numThreads = numThreads;
  ort.env.wasm.proxy = false;
  ort.env.logLevel = "error";
  const sessions = new Map();
  let next = 1;
  return {
    version: ort.env.versions?.web ?? "unknown",
    async create(modelBytes) {
      const started = performance.now();
      const session = await ort.InferenceSession.create(modelBytes, {
        executionProviders: ["wasm"],
        graphOptimizationLevel: "all",
        logSeverityLevel: 3,
      });
      const id = next++;
      sessions.set(id, session);
      return JSON.stringify({
        id,
        inputs: describe(session.inputNames, session.inputMetadata),
        outputs: describe(session.outputNames, session.outputMetadata),
        load_ms: performance.now() - started,
        version: ort.env.versions?.web ?? "unknown",
      });
    },
    async run(id, feedsText) {
      const session = sessions.get(id);
      if (session === undefined) throw new Error(`no onnxruntime-web session ${id} (released?)`);
      const feeds = {};
      for (const [name, feed] of Object.entries(JSON.parse(feedsText))) {
        feeds[name] = toTensor(ort, name, feed);
      }
      const started = performance.now();
      const results = await session.run(feeds);
      const run_ms = performance.now() - started;
      const outputs = {};
      for (const name of session.outputNames) {
        outputs[name] = fromTensor(results[name]);
        results[name].dispose?.();
      }
      return JSON.stringify({ outputs, run_ms });
    },
    release(id) {
      const session = sessions.get(id);
      sessions.delete(id);
      if (session !== undefined) return session.release();
      return undefined;
    },
    sessions: () => sessions.size,
  };
}

// Import onnxruntime-web's wasm-only build from `distUrl` (a folder URL ending in "/") and
// make a backend that loads its .wasm from the same folder.
export async function loadOrtBackend({ distUrl, numThreads = 1 } = {}) {
  if (!distUrl) throw new Error("loadOrtBackend needs distUrl: the local onnxruntime-web dist/ folder");
  const base = distUrl.endsWith("/") ? distUrl : `${distUrl}/`;
  const ort = await import(`${base}ort.wasm.min.mjs`);
  return createOrtBackend(ort, { wasmPaths: base, numThreads });
}
