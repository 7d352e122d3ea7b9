#!/usr/bin/env node
// Run a Python file inside Pyodide under Node.js, offline, with onnxruntime-web beside it.
//
//   node [--experimental-wasm-jspi | --experimental-wasm-stack-switching] \
//     wasm/ort/run_onnx_web.mjs [--src DIR] [--wheels DIR] [--mount DIR] FILE [ARGS...]
//
// Like wasm/run_python.mjs (the pinned pyodide from wasm/node_modules, every wheel of
// wasm/.cache/wheels, the working tree's edge_min/ copied in, network fetches refused), and:
// - onnxruntime-web's backend (./ort_backend.mjs over wasm/node_modules/onnxruntime-web/
//   dist, its .wasm read from there) is globalThis.edgeMinOrt, so Python reaches it as
//   `js.edgeMinOrt`;
// - --mount DIR makes a host folder /host inside Pyodide (NODEFS), for models and data;
// - FILE runs through pyodide.runPythonAsync: top-level `await` works, and the Python stack
//   is entered through a Promise, so pyodide.ffi.run_sync (JSPI) can block when node has
//   JSPI (Node 20: --experimental-wasm-stack-switching; 22/24: --experimental-wasm-jspi).
//
// Exit status: the script's SystemExit code, 0 when it ends normally, 1 on an uncaught
// Python exception (traceback on stderr), 2 when the harness cannot start.

import fs from "node:fs";
import path from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";

import { loadOrtBackend } from "./ort_backend.mjs";

const HERE = path.dirname(fileURLToPath(import.meta.url));
const WASM = path.dirname(HERE);
const USAGE = "usage: node wasm/ort/run_onnx_web.mjs [--src DIR] [--wheels DIR] [--mount DIR] FILE [ARGS...]";
const SKIP_NAMES = new Set(["__pycache__", ".mypy_cache", ".pytest_cache", ".ruff_cache"]);

class HarnessError extends Error {}

function parseArgs(argv) {
  const opts = { src: path.dirname(WASM), wheels: path.join(WASM, ".cache", "wheels"), mount: null, file: null, args: [] };
  for (let i = 0; i < argv.length; i += 1) {
    const arg = argv[i];
    if (arg === "--src" || arg === "--wheels" || arg === "--mount") {
      if (i + 1 >= argv.length) throw new HarnessError(`${arg} needs a folder\n${USAGE}`);
      opts[arg.slice(2)] = path.resolve(argv[i + 1]);
      i += 1;
    } else if (arg.startsWith("-")) {
      throw new HarnessError(`unknown option ${arg}\n${USAGE}`);
    } else {
      opts.file = path.resolve(arg);
      opts.args = argv.slice(i + 1);
      return opts;
    }
  }
  throw new HarnessError(`no Python file given\n${USAGE}`);
}

function copyTree(FS, hostDir, pyDir) {
  FS.mkdirTree(pyDir);
  for (const entry of fs.readdirSync(hostDir, { withFileTypes: true })) {
    if (SKIP_NAMES.has(entry.name) || entry.name.endsWith(".pyc")) continue;
    const hostPath = path.join(hostDir, entry.name);
    const pyPath = `${pyDir}/${entry.name}`;
    if (entry.isDirectory()) copyTree(FS, hostPath, pyPath);
    else if (entry.isFile()) FS.writeFile(pyPath, new Uint8Array(fs.readFileSync(hostPath)));
  }
}

const RUNNER = `
async def run(target, argv):
    import sys
    import traceback

    from pyodide.code import eval_code_async

    sys.argv = list(argv)
    with open(target, encoding="utf-8") as fh:
        source = fh.read()
    namespace = {"__name__": "__main__", "__file__": target}
    try:
        await eval_code_async(source, namespace, filename=target)
    except SystemExit as exc:
        if exc.code is None:
            return 0
        if isinstance(exc.code, int):
            return exc.code
        print(exc.code, file=sys.stderr)
        return 1
    except BaseException:
        traceback.print_exc()
        return 1
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
    return 0
`;

async function main() {
  const opts = parseArgs(process.argv.slice(2));
  const pyodideDir = path.join(WASM, "node_modules", "pyodide");
  const ortDist = path.join(WASM, "node_modules", "onnxruntime-web", "dist");
  for (const [file, what] of [
    [path.join(pyodideDir, "pyodide.mjs"), "pyodide"],
    [path.join(ortDist, "ort-wasm-simd-threaded.wasm"), "onnxruntime-web"],
  ]) {
    if (!fs.existsSync(file)) throw new HarnessError(`${file} is missing: run wasm/setup.sh (npm ci installs ${what})`);
  }
  if (!fs.existsSync(opts.file)) throw new HarnessError(`${opts.file}: no such file`);
  const wheels = fs.existsSync(opts.wheels) ? fs.readdirSync(opts.wheels).filter((n) => n.endsWith(".whl")).sort() : [];
  if (wheels.length === 0) throw new HarnessError(`no wheels in ${opts.wheels}: run wasm/setup.sh`);

  const localFetch = globalThis.fetch;
  globalThis.fetch = async (resource, init) => {
    const url = String(resource?.url ?? resource);
    if (url.startsWith("file:")) return localFetch(resource, init);
    throw new Error(`offline harness: refused to fetch ${url}; load it from a local file instead`);
  };

  const { loadPyodide } = await import(pathToFileURL(path.join(pyodideDir, "pyodide.mjs")).href);
  const indexURL = `${pyodideDir}${path.sep}`;
  const pyodide = await loadPyodide({ indexURL, packageCacheDir: indexURL, lockFileURL: `${indexURL}pyodide-lock.json` });
  pyodide.setStdout({ write: (buf) => fs.writeSync(1, buf) });
  pyodide.setStderr({ write: (buf) => fs.writeSync(2, buf) });
  globalThis.edgeMinOrt = await loadOrtBackend({ distUrl: pathToFileURL(ortDist).href + "/" });

  const sitePackages = pyodide.runPython("import sysconfig; sysconfig.get_path('purelib')");
  for (const wheel of wheels) {
    const bytes = new Uint8Array(fs.readFileSync(path.join(opts.wheels, wheel)));
    pyodide.unpackArchive(bytes, "wheel", { extractDir: sitePackages });
  }
  copyTree(pyodide.FS, path.join(opts.src, "edge_min"), `${sitePackages}/edge_min`);
  pyodide.runPython("import importlib; importlib.invalidate_caches()");

  if (opts.mount !== null) {
    pyodide.FS.mkdirTree("/host");
    pyodide.FS.mount(pyodide.FS.filesystems.NODEFS, { root: opts.mount }, "/host");
  }
  const target = `/home/pyodide/${path.basename(opts.file)}`;
  pyodide.FS.writeFile(target, new Uint8Array(fs.readFileSync(opts.file)));
  const namespace = pyodide.toPy({});
  pyodide.runPython(RUNNER, { globals: namespace });
  return await namespace.get("run")(target, pyodide.toPy([target, ...opts.args]));
}

try {
  process.exitCode = await main();
} catch (err) {
  const detail = err instanceof HarnessError ? err.message : `internal error: ${err?.stack ?? err}`;
  process.stderr.write(`run_onnx_web: ${detail}\n`);
  process.exitCode = 2;
}
