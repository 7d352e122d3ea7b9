"""The persistent worker under the onnx executor: framed JSON over pipes, real subprocesses.

A small handler module stands in for the onnx session so that the protocol (init, reply
frames, meta, timeouts, death, stop, CPU budget per request) is tested on its own.
"""

from __future__ import annotations

import dataclasses
import os
import struct
import threading
import time
from pathlib import Path

import pytest

from edge_min.platform import WorkerSpec
from edge_min.platform.inprocess import InProcessPlatform
from edge_min.platform.posix import PosixPlatform
from edge_min.platform.worker import read_frame, write_frame

HANDLER = """
import os, time

LOADS = 0


class Handler:
    def __init__(self, init):
        global LOADS
        LOADS += 1
        self.info = {"init": init, "loads": LOADS}

    def meta(self):
        return {"loads": LOADS}

    def __call__(self, value, context):
        op = value.get("op") if isinstance(value, dict) else None
        if op == "sleep":
            time.sleep(value["seconds"])
        elif op == "spin":
            end = time.time() + value["seconds"]
            while time.time() < end:
                pass
        elif op == "die":
            os._exit(3)
        elif op == "fail":
            raise ValueError("asked to fail")
        elif op == "print":
            print("noise on stdout goes to stderr")
        return {"echo": value, "key": context.get("idempotency_key"), "pid": os.getpid()}


def make(init, context):
    if init == "refuse":
        raise RuntimeError("cannot load")
    return Handler(init)
"""


@pytest.fixture
def spec(tmp_path: Path) -> WorkerSpec:
    (tmp_path / "mods").mkdir()
    (tmp_path / "mods" / "svc_handler.py").write_text(HANDLER)
    return WorkerSpec(
        name="svc",
        work_dir=str(tmp_path / "work"),
        entry="svc_handler:make",
        sys_path=(str(tmp_path / "mods"),),
        env={"PATH": os.environ.get("PATH", "/usr/bin:/bin")},
        max_memory=64 * 1024 * 1024,
        max_cpu=1.0,
        max_storage=1024 * 1024,
        needs_network=False,
    )


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie still answers kill(0); its state says it is gone.
    with open(f"/proc/{pid}/stat") as fh:
        return fh.read().split(") ")[1][0] != "Z"


def test_frames_round_trip_through_a_pipe() -> None:
    r, w = os.pipe()
    write_frame(w, {"a": "x" * 30_000})
    os.close(w)
    assert read_frame(r) == b'{"a": "' + b"x" * 30_000 + b'"}'
    assert read_frame(r) is None
    os.close(r)
    r, w = os.pipe()
    os.write(w, struct.pack("!I", 10) + b"short")
    os.close(w)
    with pytest.raises(EOFError):
        read_frame(r)
    os.close(r)


def test_one_worker_serves_many_requests(spec: WorkerSpec) -> None:
    service = PosixPlatform().start_service(spec)
    try:
        ready = service.request({"model": "m"}, 20)
        assert ready.frame is not None and ready.frame["ok"]
        assert ready.frame["output"] == {"init": {"model": "m"}, "loads": 1}
        pid = service.pid
        assert pid is not None and ready.frame["meta"]["pid"] == pid
        for n in range(1, 4):
            reply = service.request({"input": {"n": n}, "context": {"idempotency_key": f"k{n}"}}, 5)
            assert reply.frame is not None
            assert reply.frame["output"] == {"echo": {"n": n}, "key": f"k{n}", "pid": pid}
            assert reply.frame["meta"] == {"pid": pid, "served": n, "loads": 1}
        big = service.request({"input": {"blob": "y" * 300_000}}, 5)
        assert big.frame is not None and len(big.frame["output"]["echo"]["blob"]) == 300_000
        noisy = service.request({"input": {"op": "print"}}, 5)
        assert noisy.frame is not None and noisy.frame["ok"]
        assert b"noise on stdout goes to stderr" in noisy.stderr
        failed = service.request({"input": {"op": "fail"}}, 5)
        assert failed.frame is not None and failed.frame["kind"] == "error"
        assert failed.frame["message"] == "asked to fail" and service.alive
        applied = service.applied
        assert applied["address_space"] > 64 * 1024 * 1024 and applied["die_with_parent"]
    finally:
        service.stop()
    assert not service.alive and not alive(pid)


def test_a_refusing_factory_reports_a_load_failure(spec: WorkerSpec) -> None:
    service = PosixPlatform().start_service(spec)
    reply = service.request("refuse", 20)
    assert reply.frame is not None and reply.frame["kind"] == "load"
    assert reply.frame["message"] == "cannot load"
    service.stop()


def test_timeout_kills_the_worker(spec: WorkerSpec) -> None:
    service = PosixPlatform().start_service(spec)
    service.request(None, 20)
    pid = service.pid
    assert pid is not None
    started = time.monotonic()
    reply = service.request({"input": {"op": "sleep", "seconds": 30}}, 0.5)
    assert time.monotonic() - started < 5
    assert reply.frame is None and reply.ended is not None
    assert reply.ended.killed_for == "timeout" and reply.ended.signal == "SIGKILL"
    assert not service.alive and not alive(pid)
    again = service.request({"input": 1}, 1)
    assert again.ended is reply.ended


def test_a_dying_worker_reports_its_exit(spec: WorkerSpec) -> None:
    service = PosixPlatform().start_service(spec)
    service.request(None, 20)
    reply = service.request({"input": {"op": "die"}}, 5)
    assert reply.ended is not None and reply.ended.returncode == 3
    assert reply.ended.killed_for is None and not service.alive


@pytest.mark.slow
def test_rlimit_mode_gives_each_request_its_own_cpu_budget(spec: WorkerSpec) -> None:
    platform = PosixPlatform(cpu_limit="rlimit")
    # Budget per request: max_cpu 0.25 x timeout 4 s = 1 CPU second.
    service = platform.start_service(dataclasses.replace(spec, max_cpu=0.25))
    service.request(None, 20)
    try:
        # Four requests of 0.7 CPU seconds pass a whole-life RLIMIT_CPU of 2 s; each
        # request moves the limit on, so all of them succeed.
        for _ in range(4):
            reply = service.request({"input": {"op": "spin", "seconds": 0.7}}, 4)
            assert reply.frame is not None and reply.frame["ok"], reply
        over = service.request({"input": {"op": "spin", "seconds": 10}}, 4)
        assert over.ended is not None and over.ended.killed_for is None
        assert over.ended.signal in ("SIGXCPU", "SIGKILL")
        assert over.ended.applied.get("cpu_seconds") is None  # no whole-life limit
    finally:
        service.stop()


def test_worker_outlives_the_thread_that_started_it(spec: WorkerSpec) -> None:
    # PR_SET_PDEATHSIG fires when the forking *thread* exits; workers are forked from the
    # long-lived spawner thread, so a short-lived request thread may start one.
    platform = PosixPlatform()
    box: dict[str, object] = {}

    def start() -> None:
        svc = platform.start_service(spec)
        svc.request(None, 20)
        box["service"] = svc

    thread = threading.Thread(target=start)
    thread.start()
    thread.join()
    service = box["service"]
    time.sleep(0.3)
    reply = service.request({"input": "still here"}, 5)  # type: ignore[attr-defined]
    assert reply.frame is not None and reply.frame["output"]["echo"] == "still here"
    service.stop()  # type: ignore[attr-defined]


def test_storage_quota_is_checked_per_request(spec: WorkerSpec, tmp_path: Path) -> None:
    service = PosixPlatform().start_service(spec)
    service.request(None, 20)
    Path(spec.work_dir, "fill.bin").write_bytes(b"x" * (1024 * 1024))
    reply = service.request({"input": 1}, 5)
    assert reply.ended is not None and reply.ended.killed_for == "storage"
    refused = PosixPlatform().start_service(spec)
    assert not refused.alive and refused.request(None, 5).ended.killed_for == "storage"  # type: ignore[union-attr]


def test_the_in_process_service_speaks_the_same_frames(spec: WorkerSpec) -> None:
    service = InProcessPlatform().start_service(spec)
    ready = service.request({"m": 1}, None)
    assert ready.frame is not None and ready.frame["output"]["init"] == {"m": 1}
    reply = service.request({"input": {"n": 1}, "context": {"idempotency_key": "k"}}, None)
    assert reply.frame is not None and reply.frame["output"]["key"] == "k"
    assert reply.frame["meta"]["served"] == 1 and reply.frame["meta"]["pid"] is None
    service.stop()
    assert not service.alive and service.request({}, None).ended is not None
