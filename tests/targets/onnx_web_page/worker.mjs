// Boots Pyodide and onnxruntime-web from the served folder (never a CDN), unpacks the
// wheels and edge_min, copies the files of manifest.json's `host` into /host, runs
// check.py with top-level await (so run_sync can block, through JSPI) and posts
// {status, stdout, stderr}. The folder is laid out by tests/targets/test_onnx_web.py.
import { loadPyodide } from "./pyodide/pyodide.mjs";
import { loadOrtBackend } from "./ort/ort_backend.mjs";

const RUNNER = `
async def run(target, argv):
    import sys
    import traceback

    from pyodide.code import eval_code_async

    sys.argv = list(argv)
    with open(target, encoding="utf-8") as fh:
        source = fh.read()
    try:
        await eval_code_async(source, {"__name__": "__main__", "__file__": target}, filename=target)
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except BaseException:
        traceback.print_exc()
        return 1
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
    return 0
`;

async function bytes(name) {
  const response = await fetch(new URL(name, import.meta.url));
  if (!response.ok) throw new Error(`${name}: HTTP ${response.status}`);
  return new Uint8Array(await response.arrayBuffer());
}

async function main() {
  const stdout = [];
  const stderr = [];
  const manifest = JSON.parse(new TextDecoder().decode(await bytes("manifest.json")));
  const indexURL = new URL("./pyodide/", import.meta.url).href;
  const pyodide = await loadPyodide({ indexURL, lockFileURL: `${indexURL}pyodide-lock.json` });
  pyodide.setStdout({ batched: (line) => stdout.push(line) });
  pyodide.setStderr({ batched: (line) => stderr.push(line) });
  globalThis.edgeMinOrt = await loadOrtBackend({ distUrl: new URL("./ort-dist/", import.meta.url).href });
  const site = pyodide.runPython("import sysconfig; sysconfig.get_path('purelib')");
  for (const wheel of manifest.wheels) {
    pyodide.unpackArchive(await bytes(`wheels/${wheel}`), "wheel", { extractDir: site });
  }
  pyodide.unpackArchive(await bytes("edge_min.zip"), "zip", { extractDir: site });
  pyodide.FS.mkdirTree("/host");
  for (const name of manifest.host) {
    pyodide.FS.mkdirTree(`/host/${name}`.replace(/\/[^/]*$/, ""));
    pyodide.FS.writeFile(`/host/${name}`, await bytes(`host/${name}`));
  }
  pyodide.FS.writeFile("/home/pyodide/check.py", await bytes("check.py"));
  pyodide.runPython("import importlib; importlib.invalidate_caches()");
  const namespace = pyodide.toPy({});
  pyodide.runPython(RUNNER, { globals: namespace });
  const status = await namespace.get("run")("/home/pyodide/check.py", pyodide.toPy(["check.py", ...manifest.argv]));
  return { status, stdout: stdout.join("\n"), stderr: stderr.join("\n"), userAgent: navigator.userAgent };
}

main().then(
  (result) => self.postMessage(result),
  (err) => self.postMessage({ status: 2, stdout: "", stderr: `worker: ${err?.stack ?? err}` }),
);
