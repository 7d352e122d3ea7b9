"""Build the static, offline browser bundle: ``python wasm/build_web.py [--out dist/web]``.

``make web`` runs it after ``wasm/setup.sh`` (the pinned pyodide npm package, the pure
cbor2 and PyYAML wheels) and ``make manifest`` (the signed program manifest). It writes::

    dist/web/
      index.html, page.js, page.css,         the page a person uses, its examples,
      examples.js, edge-min.js, worker.js    its loader, the Web Worker (wasm/web/)
      pyodide/                               the pinned Pyodide, copied from node_modules
      wheels/edge_min-<v>-py3-none-any.whl   exactly the files the program manifest lists
      wheels/edge_min_browser-<v>-...whl     targets/browser (the worker's shim)
      wheels/cbor2-..., pyyaml-...           the pure dependencies
      ort/                                   onnxruntime-web's wasm build (3 files, from
                                             node_modules) and wasm/ort/ort_backend.mjs
      models/text-classifier-lite.onnx       the shipped int8 classifier (make models)
      examples/                              ready to add: text-classifier-lite (its model
                                             at MODELS_DIR), notify (a Python agent), and
                                             the feedback-triage workflow
      bundle.json                            versions, and each wheel's, model's and
                                             example's sha256 (checked by the worker)

Nothing in it comes from a CDN: serve it with ``python -m http.server -d dist/web``. The
edge_min wheel holds exactly the files its manifest signs, and refuses to build when a file
differs from its digest there, so the tamper check's ``boot_integrity`` holds in the tab for
the same reason it holds on a gateway. Stdlib only.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))

from make_pure_wheel import write_wheel  # noqa: E402

PYODIDE_FILES = (
    "pyodide.mjs",
    "pyodide.asm.mjs",
    "pyodide.asm.wasm",
    "python_stdlib.zip",
    "pyodide-lock.json",
    "package.json",
)
PAGE_FILES = ("index.html", "page.js", "page.css", "examples.js", "edge-min.js", "worker.js")
#: onnxruntime-web's files the wasm-only build loads (one thread: no COOP/COEP needed).
ORT_FILES = ("ort.wasm.min.mjs", "ort-wasm-simd-threaded.mjs", "ort-wasm-simd-threaded.wasm")
MODEL = REPO / "models" / "out" / "text-classifier-lite.onnx"
#: Where the worker puts the shipped models in the tab's file system (not persisted: they
#: come with the bundle, checked against bundle.json, at every start).
MODELS_DIR = "/opt/edge-min/models"
DEPENDENCY_WHEELS = ("cbor2-", "pyyaml-")
SETUP_HINT = "run `bash wasm/setup.sh` (or `make wasm-setup`)"


class BuildError(Exception):
    """The bundle cannot be built as things are; the message says what to run."""


def sha256_bytes(data: bytes) -> str:
    """Hex sha256."""
    return hashlib.sha256(data).hexdigest()


def project_version() -> str:
    """``project.version`` of pyproject.toml."""
    import tomllib

    with open(REPO / "pyproject.toml", "rb") as handle:
        return str(tomllib.load(handle)["project"]["version"])


def program_files() -> dict[str, bytes]:
    """The edge_min package as its signed manifest lists it, each file checked against it."""
    package = REPO / "edge_min"
    manifest_path = package / "program-manifest.json"
    try:
        manifest = json.loads(manifest_path.read_text())
    except FileNotFoundError:
        raise BuildError(f"{manifest_path} is missing: run `make manifest`") from None
    files: dict[str, bytes] = {}
    for name, digest in sorted(manifest["files"].items()):
        path = package / name
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise BuildError(
                f"edge_min/{name} is in the manifest but gone: run `make manifest`"
            ) from None
        if sha256_bytes(data) != digest:
            raise BuildError(f"edge_min/{name} changed since the manifest: run `make manifest`")
        files[f"edge_min/{name}"] = data
    on_disk = {
        p.relative_to(package).as_posix()
        for p in package.rglob("*")
        if p.is_file() and "__pycache__" not in p.parts and p.suffix not in (".pyc", ".pyo")
    } - {"program-manifest.json"}
    unlisted = sorted(on_disk - set(manifest["files"]))
    if unlisted:
        raise BuildError(f"edge_min/{unlisted[0]} is not in the manifest: run `make manifest`")
    files["edge_min/program-manifest.json"] = manifest_path.read_bytes()
    return files


def shim_files() -> dict[str, bytes]:
    """``targets/__init__.py`` and the browser shim's modules."""
    files = {"targets/__init__.py": (REPO / "targets" / "__init__.py").read_bytes()}
    for path in sorted((REPO / "targets" / "browser").glob("*.py")):
        files[f"targets/browser/{path.name}"] = path.read_bytes()
    return files


def pyodide_version() -> str:
    """The installed pyodide, checked against the pin in wasm/package.json."""
    installed = HERE / "node_modules" / "pyodide" / "package.json"
    if not installed.is_file():
        raise BuildError(f"{installed} is missing: {SETUP_HINT}")
    version = str(json.loads(installed.read_text())["version"])
    pinned = str(json.loads((HERE / "package.json").read_text())["dependencies"]["pyodide"])
    if version != pinned:
        raise BuildError(
            f"node_modules has pyodide {version}, package.json pins {pinned}: {SETUP_HINT}"
        )
    return version


def write_examples(folder: Path) -> dict[str, object]:
    """The examples a page adds with one call (``edgeMin.addExamples()``): the shipped
    classifier's config with its model at MODELS_DIR, the browser's notify agent (Python),
    and the spec's feedback-triage workflow as it is; their list, in the order to add."""
    folder.mkdir()
    classifier = (REPO / "models" / "text-classifier-lite.yaml").read_text()
    relative = "path: out/text-classifier-lite.onnx"
    if relative not in classifier:
        raise BuildError(f"models/text-classifier-lite.yaml no longer says {relative!r}")
    (folder / "text-classifier-lite.yaml").write_text(
        classifier.replace(relative, f"path: {MODELS_DIR}/{MODEL.name}")
    )
    for name in ("notify.yaml", "notify.py"):
        shutil.copy2(HERE / "web" / "examples" / name, folder / name)
    flow = REPO / "examples" / "workflows" / "feedback-triage.yaml"
    shutil.copy2(flow, folder / flow.name)
    return {
        "agents": [
            {"yaml": "text-classifier-lite.yaml", "files": []},
            {"yaml": "notify.yaml", "files": ["notify.py"]},
        ],
        "workflows": ["feedback-triage.yaml"],
    }


def build(out: Path) -> dict[str, object]:
    """Write the bundle into ``out`` (replaced whole); its bundle.json as a dict."""
    version = project_version()
    pyodide = pyodide_version()
    dependency_wheels = sorted((HERE / ".cache" / "wheels").glob("*.whl"))
    for prefix in DEPENDENCY_WHEELS:
        if not any(w.name.startswith(prefix) for w in dependency_wheels):
            raise BuildError(f"no {prefix}*.whl in wasm/.cache/wheels: {SETUP_HINT}")

    staging = out.with_name(out.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    wheels_dir = staging / "wheels"
    wheels_dir.mkdir(parents=True)
    wheels = [
        write_wheel(
            wheels_dir,
            "edge-min",
            version,
            program_files(),
            summary="edge_min, the portable core",
            license_name="Apache-2.0",
            top_level=["edge_min"],
        ),
        write_wheel(
            wheels_dir,
            "edge-min-browser",
            version,
            shim_files(),
            summary="edge_min's browser target (targets/browser)",
            license_name="Apache-2.0",
            top_level=["targets"],
        ),
    ]
    for wheel in dependency_wheels:
        wheels.append(Path(shutil.copy2(wheel, wheels_dir / wheel.name)))
    (staging / "pyodide").mkdir()
    for name in PYODIDE_FILES:
        shutil.copy2(HERE / "node_modules" / "pyodide" / name, staging / "pyodide" / name)
    for name in PAGE_FILES:
        shutil.copy2(HERE / "web" / name, staging / name)
    (staging / "ort").mkdir()
    ort_dist = HERE / "node_modules" / "onnxruntime-web" / "dist"
    for name in ORT_FILES:
        if not (ort_dist / name).is_file():
            raise BuildError(f"no onnxruntime-web file {ort_dist / name}: {SETUP_HINT}")
        shutil.copy2(ort_dist / name, staging / "ort" / name)
    shutil.copy2(HERE / "ort" / "ort_backend.mjs", staging / "ort" / "ort_backend.mjs")
    if not MODEL.is_file():
        raise BuildError(f"no {MODEL.relative_to(REPO)}: build it first with `make models`")
    (staging / "models").mkdir()
    shutil.copy2(MODEL, staging / "models" / MODEL.name)
    examples = write_examples(staging / "examples")

    bundle: dict[str, object] = {
        "edge_min": version,
        "pyodide": pyodide,
        "wheels": [
            {"file": w.name, "sha256": sha256_bytes(w.read_bytes()), "bytes": w.stat().st_size}
            for w in wheels
        ],
        "models": [
            {
                "file": MODEL.name,
                "path": f"{MODELS_DIR}/{MODEL.name}",
                "sha256": sha256_bytes(MODEL.read_bytes()),
            }
        ],
        "examples": examples,
        "bytes": sum(p.stat().st_size for p in staging.rglob("*") if p.is_file()),
    }
    (staging / "bundle.json").write_text(json.dumps(bundle, indent=1) + "\n")
    shutil.rmtree(out, ignore_errors=True)
    staging.rename(out)
    return bundle


def main(argv: list[str] | None = None) -> int:
    """Command line: build the bundle and print one line of what it holds."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(REPO / "dist" / "web"), help="the bundle folder")
    args = parser.parse_args(argv)
    out = Path(args.out).resolve()
    try:
        bundle = build(out)
    except BuildError as exc:
        print(f"build_web.py: error: {exc}", file=sys.stderr)
        return 1
    wheels = ", ".join(str(w["file"]) for w in bundle["wheels"])  # type: ignore[attr-defined]
    print(f"build_web.py: {out}: pyodide {bundle['pyodide']}, {wheels}; {bundle['bytes']} bytes")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
