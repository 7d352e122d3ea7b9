#!/usr/bin/env node
// Run a Python file or snippet inside Pyodide under Node.js, offline, with edge_min loaded.
//
//   node wasm/run_python.mjs [--src DIR] [--wheels DIR] [--mount DIR] [--ort] [--timings]
//                            (FILE | -c CODE) [ARGS...]
//
// Boots the pinned pyodide from wasm/node_modules (indexURL is that folder, so nothing
// comes from a CDN), unpacks every wheel in wasm/.cache/wheels (made by wasm/setup.sh) into
// site-packages, copies the working tree's edge_min/ package beside them, then runs the
// code as __main__. Python's stdout and stderr go to this process's stdout and stderr.
//
// Exit status: the script's SystemExit code, 0 when it ends normally, 1 on an uncaught
// Python exception (traceback on stderr), 2 when the harness itself cannot start
// (usage, pyodide not installed, wheels missing). --timings adds one line to stderr:
//   run_python timings {"boot_ms":..,"install_ms":..,"run_ms":..}
// Any network fetch is refused with an error, so a run that passes here passes offline.
//
// --mount DIR makes a host folder /host inside Pyodide (NODEFS), for models and data.
// --ort loads onnxruntime-web's backend (wasm/ort/ort_backend.mjs over
// wasm/node_modules/onnxruntime-web/dist, its .wasm read from there) as globalThis.edgeMinOrt
// (Python reaches it as `js.edgeMinOrt`), and runs FILE through eval_code_async: top-level
// `await` works and the Python stack is entered through a Promise, so pyodide.ffi.run_sync
// (JSPI) can block where node has it (Node 20: --experimental-wasm-stack-switching; 22/24:
// --experimental-wasm-jspi; node's own flags go before the script's name).

import fs from "node:fs";
import path from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";

const HERE = path.dirname(fileURLToPath(import.meta.url));
const USAGE =
  "usage: node wasm/run_python.mjs [--src DIR] [--wheels DIR] [--mount DIR] [--ort] [--timings] " +
  "(FILE | -c CODE) [ARGS...]";
// Top-level names of the copied tree that are never part of the package.
const SKIP_NAMES = new Set(["__pycache__", ".mypy_cache", ".pytest_cache", ".ruff_cache"]);

class HarnessError extends Error {}

function parseArgs(argv) {
  const opts = {
    src: path.dirname(HERE),
    wheels: path.join(HERE, ".cache", "wheels"),
    timings: false,
    mount: null,
    ort: false,
    code: null,
    file: null,
    args: [],
  };
  let i = 0;
  while (i < argv.length) {
    const arg = argv[i];
    if (arg === "--src" || arg === "--wheels" || arg === "--mount") {
      if (i + 1 >= argv.length) throw new HarnessError(`${arg} needs a folder\n${USAGE}`);
      opts[arg.slice(2)] = path.resolve(argv[i + 1]);
      i += 2;
    } else if (arg === "--timings" || arg === "--ort") {
      opts[arg.slice(2)] = true;
      i += 1;
    } else if (arg === "-c") {
      if (i + 1 >= argv.length) throw new HarnessError(`-c needs the Python code\n${USAGE}`);
      opts.code = argv[i + 1];
      opts.args = argv.slice(i + 2);
      return opts;
    } else if (arg === "-h" || arg === "--help") {
      process.stdout.write(`${USAGE}\n`);
      process.exit(0);
    } else if (arg.startsWith("-")) {
      throw new HarnessError(`unknown option ${arg}\n${USAGE}`);
    } else {
      opts.file = path.resolve(arg);
      opts.args = argv.slice(i + 1);
      return opts;
    }
  }
  throw new HarnessError(`no Python file or -c CODE given\n${USAGE}`);
}

// onnxruntime-web's backend for Python (edge_min.agents.onnx_web), from wasm/node_modules.
async function loadOrt() {
  const dist = path.join(HERE, "node_modules", "onnxruntime-web", "dist");
  if (!fs.existsSync(path.join(dist, "ort-wasm-simd-threaded.wasm"))) {
    throw new HarnessError(`${dist} has no onnxruntime-web: run wasm/setup.sh (npm ci installs it)`);
  }
  const { loadOrtBackend } = await import(pathToFileURL(path.join(HERE, "ort", "ort_backend.mjs")).href);
  return loadOrtBackend({ distUrl: `${pathToFileURL(dist).href}/` });
}

// Refuse every network fetch: the harness must prove that edge_min boots from local files.
// Pyodide reads its own files from indexURL with node:fs; a fetch means something tried
// to reach a CDN or a package index (for example an import that auto-loads a package).
function forbidNetwork() {
  const localFetch = globalThis.fetch;
  globalThis.fetch = async (resource, init) => {
    const url = String(resource?.url ?? resource);
    if (url.startsWith("file:")) return localFetch(resource, init);
    throw new Error(`offline harness: refused to fetch ${url}; load it from a local file instead`);
  };
}

function pinnedPyodideVersion() {
  const pkg = JSON.parse(fs.readFileSync(path.join(HERE, "package.json"), "utf8"));
  return pkg.dependencies.pyodide;
}

async function importPyodide() {
  const entry = path.join(HERE, "node_modules", "pyodide", "pyodide.mjs");
  if (!fs.existsSync(entry)) {
    throw new HarnessError(`${entry} is missing: run wasm/setup.sh (npm ci installs the pinned pyodide)`);
  }
  const installed = JSON.parse(
    fs.readFileSync(path.join(HERE, "node_modules", "pyodide", "package.json"), "utf8"),
  ).version;
  const pinned = pinnedPyodideVersion();
  if (installed !== pinned) {
    throw new HarnessError(
      `wasm/node_modules has pyodide ${installed} but wasm/package.json pins ${pinned}: run wasm/setup.sh`,
    );
  }
  return import(pathToFileURL(entry).href);
}

function listWheels(folder) {
  const wheels = fs.existsSync(folder)
    ? fs.readdirSync(folder).filter((name) => name.endsWith(".whl")).sort()
    : [];
  if (wheels.length === 0) {
    throw new HarnessError(`no wheels in ${folder}: run wasm/setup.sh (it downloads cbor2 and PyYAML)`);
  }
  return wheels.map((name) => path.join(folder, name));
}

// Copy a host folder into the Pyodide file system, leaving caches and bytecode behind so
// the run always compiles the working tree's sources.
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

// Runs the target as __main__ and returns an exit status instead of raising, so a Python
// failure becomes a traceback on stderr and a non-zero exit, never a JS stack trace.
const RUNNER = `
async def run(kind, target, argv):
    import runpy
    import sys
    import traceback

    sys.argv = list(argv)
    try:
        if kind == "file":
            runpy.run_path(target, run_name="__main__")
        elif kind == "async":
            from pyodide.code import eval_code_async

            with open(target, encoding="utf-8") as fh:
                source = fh.read()
            await eval_code_async(source, {"__name__": "__main__", "__file__": target}, filename=target)
        else:
            import __main__
            exec(compile(target, "<string>", "exec"), __main__.__dict__)
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
  const packageDir = path.join(opts.src, "edge_min");
  if (!fs.existsSync(path.join(packageDir, "__init__.py"))) {
    throw new HarnessError(`${packageDir}/__init__.py not found: --src must be the folder holding edge_min/`);
  }
  if (opts.file !== null && !fs.existsSync(opts.file)) {
    throw new HarnessError(`${opts.file}: no such file`);
  }
  const wheels = listWheels(opts.wheels);
  const { loadPyodide } = await importPyodide();
  forbidNetwork();

  const indexURL = `${path.join(HERE, "node_modules", "pyodide")}${path.sep}`;
  const t0 = performance.now();
  const pyodide = await loadPyodide({
    indexURL,
    packageCacheDir: indexURL,
    lockFileURL: `${indexURL}pyodide-lock.json`,
  });
  // Raw byte writers keep the script's output exact (no line batching, no added newlines);
  // writeSync so nothing is lost when the process exits right after.
  pyodide.setStdout({ write: (buf) => fs.writeSync(1, buf) });
  pyodide.setStderr({ write: (buf) => fs.writeSync(2, buf) });
  if (opts.ort) globalThis.edgeMinOrt = await loadOrt();
  const t1 = performance.now();

  const sitePackages = pyodide.runPython("import sysconfig; sysconfig.get_path('purelib')");
  for (const wheel of wheels) {
    // A plain Uint8Array: Pyodide rejects node's Buffer subclass as an unknown typed array.
    const bytes = new Uint8Array(fs.readFileSync(wheel));
    pyodide.unpackArchive(bytes, "wheel", { extractDir: sitePackages });
  }
  copyTree(pyodide.FS, packageDir, `${sitePackages}/edge_min`);
  pyodide.runPython("import importlib; importlib.invalidate_caches()");

  if (opts.mount !== null) {
    pyodide.FS.mkdirTree("/host");
    pyodide.FS.mount(pyodide.FS.filesystems.NODEFS, { root: opts.mount }, "/host");
  }
  let kind = "code";
  let target = opts.code;
  let argv0 = "-c";
  if (opts.file !== null) {
    kind = opts.ort ? "async" : "file";
    target = `/home/pyodide/${path.basename(opts.file)}`;
    argv0 = target;
    pyodide.FS.writeFile(target, new Uint8Array(fs.readFileSync(opts.file)));
  }
  const t2 = performance.now();

  const namespace = pyodide.toPy({});
  pyodide.runPython(RUNNER, { globals: namespace });
  const run = namespace.get("run");
  const argv = pyodide.toPy([argv0, ...opts.args]);
  const status = await run(kind, target, argv);
  const t3 = performance.now();

  if (opts.timings) {
    const ms = (a, b) => Math.round(b - a);
    const timings = { boot_ms: ms(t0, t1), install_ms: ms(t1, t2), run_ms: ms(t2, t3) };
    fs.writeSync(2, `run_python timings ${JSON.stringify(timings)}\n`);
  }
  return status;
}

try {
  process.exitCode = await main();
} catch (err) {
  // Print the message, not node's default report: that quotes a line of Pyodide's minified
  // bundle, hundreds of kilobytes long, and buries the cause.
  const detail = err instanceof HarnessError ? err.message : `internal error: ${err?.stack ?? err}`;
  process.stderr.write(`run_python: ${detail}\n`);
  process.exitCode = 2;
}
