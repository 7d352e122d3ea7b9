"""``edge-min web serve``: a bundle checked before it is served, and served with the types a
module worker and WebAssembly need. The real bundle in a real Chromium goes through it in
tests/targets/test_web.py (its ``site`` fixture); here a small bundle made by hand."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import ROOT

FILES = {
    "index.html": "<!doctype html><title>t</title>",
    "edge-min.js": "export const x = 1;",
    "worker.js": "self.onmessage = () => {};",
    "page.js": "",
    "page.css": "",
    "examples.js": "",
    "pyodide/pyodide.mjs": "export {};",
    "pyodide/pyodide.asm.mjs": "",
    "pyodide/python_stdlib.zip": "PK",
    "examples/a.yaml": "name: a\n",
}
WASM = b"\0asm\1\0\0\0"
WHEEL = b"PK\3\4 not really a wheel"


def make_bundle(root: Path) -> Path:
    for name, text in FILES.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    (root / "pyodide" / "pyodide.asm.wasm").write_bytes(WASM)
    (root / "wheels").mkdir()
    (root / "wheels" / "w-1.0-py3-none-any.whl").write_bytes(WHEEL)
    bundle = {
        "edge_min": "0.1.0",
        "wheels": [{"file": "w-1.0-py3-none-any.whl", "sha256": hashlib.sha256(WHEEL).hexdigest()}],
        "models": [],
        "examples": {"agents": [{"yaml": "a.yaml", "files": []}], "workflows": []},
    }
    (root / "bundle.json").write_text(json.dumps(bundle))
    return root


def web_serve(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "edge_min", "web", "serve", *args],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[str, subprocess.Popen[str]]]:
    proc = web_serve("--dir", str(make_bundle(tmp_path)), "--port", "0")
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert " at http://127.0.0.1:" in line, (line, proc.stderr.read() if proc.stderr else "")
        yield line.rsplit(" at ", 1)[1].strip(), proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)


def get(url: str) -> tuple[int, dict[str, str], bytes]:
    try:
        with urllib.request.urlopen(url, timeout=10) as resp:
            return resp.status, {k.lower(): v for k, v in resp.headers.items()}, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, {k.lower(): v for k, v in exc.headers.items()}, exc.read()


def test_serves_the_bundle_with_the_types_a_worker_needs_and_stops_on_sigterm(
    served: tuple[str, subprocess.Popen[str]],
) -> None:
    url, proc = served
    status, headers, body = get(url)
    assert status == 200 and body == FILES["index.html"].encode()
    assert headers["cache-control"] == "no-cache"
    for path, kind in (
        ("worker.js", "text/javascript"),
        ("pyodide/pyodide.mjs", "text/javascript"),
        ("pyodide/pyodide.asm.wasm", "application/wasm"),
        ("bundle.json", "application/json"),
    ):
        status, headers, _ = get(url + path)
        assert status == 200 and headers["content-type"].startswith(kind), (path, headers)
    assert get(url + "pyodide/")[0] == 404  # no listings
    outside = get(url + "%2e%2e/%2e%2e/etc/passwd")
    assert outside[0] == 404 and b"root:" not in outside[2]
    request = urllib.request.Request(url + "bundle.json", data=b"{}", method="POST")
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=10)
    assert refused.value.code == 405
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(10) == 0


@pytest.mark.parametrize(
    ("damage", "words"),
    [
        (lambda root: (root / "bundle.json").unlink(), "holds no browser bundle (no bundle.json"),
        (lambda root: (root / "worker.js").unlink(), "has no worker.js"),
        (lambda root: (root / "examples" / "a.yaml").unlink(), "has no examples/a.yaml"),
        (
            lambda root: (root / "wheels" / "w-1.0-py3-none-any.whl").write_bytes(b"changed"),
            "wheels/w-1.0-py3-none-any.whl in",
        ),
        (lambda root: (root / "bundle.json").write_text("{not json"), "not a bundle manifest"),
    ],
)
def test_a_bundle_that_is_not_whole_is_refused_with_the_file_and_the_fix(
    tmp_path: Path, damage: object, words: str
) -> None:
    root = make_bundle(tmp_path)
    damage(root)  # type: ignore[operator]
    proc = web_serve("--dir", str(root), "--port", "0")
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 2, (out, err)
    assert words in err and "make web" in err, err
    assert out == ""


def test_a_taken_port_is_a_clear_error(tmp_path: Path) -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc = web_serve("--dir", str(make_bundle(tmp_path)), "--port", str(port))
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 2 and f"cannot listen on 127.0.0.1:{port}" in err, err
