"""Agent limits with real worker subprocesses: memory, timeout, storage, CPU, network.

Each agent here really allocates, spins or writes; the tests check that the call fails with
the limit named, in bounded time, and leaves nothing running.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import pytest

from edge_min.agents.executors import InvocationContext, make_executor
from edge_min.errors import AgentLimitExceeded
from edge_min.platform.posix import PosixPlatform
from tests.fixtures.agents import MB, make_agent, script


@pytest.fixture(scope="module")
def platform() -> PosixPlatform:
    return PosixPlatform()


def ctx(timeout: float = 10.0) -> InvocationContext:
    return InvocationContext(idempotency_key="wf-1:step", timeout=timeout)


def run(
    agent: Any, platform: PosixPlatform, tmp_path: Path, value: Any, timeout: float = 10.0
) -> Any:
    return make_executor(agent, platform, tmp_path).invoke(value, ctx(timeout))


# -- memory ----------------------------------------------------------------------------------


def test_python_agent_allocating_twice_its_memory_fails(
    platform: PosixPlatform, tmp_path: Path
) -> None:
    agent = make_agent("hog", entry="py_agents:allocate", max_memory="128MB")
    with pytest.raises(AgentLimitExceeded, match="memory limit 128MB exceeded") as info:
        run(agent, platform, tmp_path, {"mb": 256})
    assert info.value.limit == "memory"


def test_python_agent_within_its_memory_succeeds(platform: PosixPlatform, tmp_path: Path) -> None:
    # The limit is max_memory on top of the bare interpreter: 100MB fits in 128MB.
    agent = make_agent("fits", entry="py_agents:allocate", max_memory="128MB")
    ex = make_executor(agent, platform, tmp_path)
    assert ex.invoke({"mb": 100}, ctx()) == 100 * MB
    applied = ex.last_result.applied  # type: ignore[attr-defined]
    assert 128 * MB < applied["address_space"] < 128 * MB + 64 * MB


def test_many_small_objects_past_the_limit_fail_too(
    platform: PosixPlatform, tmp_path: Path
) -> None:
    agent = make_agent("smalls", entry="py_agents:allocate_small_objects", max_memory="64MB")
    with pytest.raises(AgentLimitExceeded, match="memory limit 64MB exceeded"):
        run(agent, platform, tmp_path, {"mb": 256})


def test_command_agent_allocating_twice_its_memory_fails(
    platform: PosixPlatform, tmp_path: Path
) -> None:
    agent = make_agent("cmd-hog", executor="command", command=[*script("hog.py"), "256"])
    with pytest.raises(AgentLimitExceeded, match="memory limit 128MB exceeded"):
        run(agent, platform, tmp_path, None)


# -- timeout ---------------------------------------------------------------------------------


@pytest.mark.parametrize("executor", ["python", "command"])
def test_a_spinning_agent_is_killed_at_its_timeout(
    platform: PosixPlatform, tmp_path: Path, executor: str
) -> None:
    if executor == "python":
        agent = make_agent("spin", entry="py_agents:spin")
    else:
        agent = make_agent("spin", executor="command", command=["sh", "-c", "while :; do :; done"])
    start = time.monotonic()
    with pytest.raises(AgentLimitExceeded, match="timed out after 1s") as info:
        run(agent, platform, tmp_path, None, timeout=1.0)
    assert info.value.limit == "timeout"
    assert time.monotonic() - start < 1.0 + 2.0


def test_a_timed_out_agent_leaves_no_process(platform: PosixPlatform, tmp_path: Path) -> None:
    agent = make_agent(
        "sleeper", executor="command", command=["sh", "-c", "sleep 60 & echo $! > pid; wait"]
    )
    with pytest.raises(AgentLimitExceeded, match="timed out"):
        run(agent, platform, tmp_path, None, timeout=0.5)
    pid = int((tmp_path / "sleeper" / "pid").read_text())
    deadline = time.monotonic() + 1
    while time.monotonic() < deadline:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except FileNotFoundError:
            return
        if state == "Z":
            return
        time.sleep(0.02)
    pytest.fail(f"background process {pid} survived its agent's timeout")


# -- storage ---------------------------------------------------------------------------------


def test_filling_the_disk_quota_with_many_files_fails(
    platform: PosixPlatform, tmp_path: Path
) -> None:
    agent = make_agent("filler", entry="py_agents:fill_disk", max_storage="10MB")
    start = time.monotonic()
    with pytest.raises(AgentLimitExceeded, match="storage limit 10MB exceeded") as info:
        run(agent, platform, tmp_path, {"mb": 30, "sleep": 30})
    assert info.value.limit == "storage"
    assert time.monotonic() - start < 3  # the watchdog, not the 10s timeout, ended it


def test_one_file_past_the_quota_fails(platform: PosixPlatform, tmp_path: Path) -> None:
    agent = make_agent("bigfile", entry="py_agents:one_big_file", max_storage="10MB")
    with pytest.raises(AgentLimitExceeded, match="storage limit 10MB exceeded"):
        run(agent, platform, tmp_path, {"mb": 20})
    assert os.path.getsize(tmp_path / "bigfile" / "big.bin") <= 10 * MB


def test_command_agent_filling_its_quota_fails(platform: PosixPlatform, tmp_path: Path) -> None:
    agent = make_agent(
        "dd",
        executor="command",
        command=["sh", "-c", "dd if=/dev/zero of=out bs=1M count=50 2>/dev/null; echo 1"],
        max_storage="10MB",
    )
    with pytest.raises(AgentLimitExceeded, match="storage limit 10MB exceeded"):
        run(agent, platform, tmp_path, None)


def test_a_work_dir_already_over_quota_is_refused(platform: PosixPlatform, tmp_path: Path) -> None:
    work = tmp_path / "full"
    work.mkdir()
    (work / "old.bin").write_bytes(b"z" * (2 * MB))
    agent = make_agent("full", entry="py_agents:echo", max_storage="1MB")
    with pytest.raises(AgentLimitExceeded, match=r"storage limit 1MB exceeded.*holds 2MB"):
        run(agent, platform, tmp_path, None)


# -- cpu -------------------------------------------------------------------------------------


def test_the_cpu_quota_mode_is_reported_and_applied(
    platform: PosixPlatform, tmp_path: Path
) -> None:
    agent = make_agent("quota", entry="py_agents:cpu_quota", max_cpu=0.5)
    ex = make_executor(agent, platform, tmp_path)
    seen = ex.invoke(None, ctx(timeout=4))
    mode = ex.last_result.cpu_limit_mode  # type: ignore[attr-defined]
    assert mode == platform.cpu_limit_mode
    if mode == "cgroup2":
        assert seen["cpu.max"] == ["50000", "100000"]
    elif mode == "cgroup1":
        assert (seen["cfs_quota_us"], seen["cfs_period_us"]) == (50000, 100000)
    else:
        assert seen["rlimit_cpu"][0] == 2  # 0.5 cores x 4s
    assert not any(e.startswith("w-quota") for e in _cgroup_children(platform))


def _cgroup_children(platform: PosixPlatform) -> list[str]:
    cg = platform._cgroup_cpu()
    return os.listdir(cg.parent) if cg else []


@pytest.mark.skipif(PosixPlatform().cpu_limit_mode == "rlimit", reason="no writable cpu cgroup")
def test_the_sweep_removes_only_this_pid_namespaces_dead_runtimes(
    platform: PosixPlatform,
) -> None:
    """A pid in another namespace (a container, a chroot test root) says nothing here."""
    from edge_min.platform.cgroups import CgroupCpu, _pid_namespace

    cg = platform._cgroup_cpu()
    assert cg is not None
    dead = 2**22 + 17  # above pid_max's default: no such process
    mine = Path(cg.parent, f"w-swept-{_pid_namespace()}-{dead}-1")
    other = Path(cg.parent, f"w-kept-ns1-{dead}-1")
    live = Path(cg.parent, f"w-live-{_pid_namespace()}-{os.getpid()}-1")
    for path in (mine, other, live):
        path.mkdir()
    try:
        CgroupCpu(cg.version, cg.parent)._sweep()
        assert not mine.exists()
        assert other.exists() and live.exists()
    finally:
        for path in (mine, other, live):
            if path.exists():
                path.rmdir()


@pytest.mark.skipif(PosixPlatform().cpu_limit_mode == "rlimit", reason="no writable cpu cgroup")
def test_a_cgroup_quota_throttles_a_busy_agent(platform: PosixPlatform, tmp_path: Path) -> None:
    agent = make_agent("busy", entry="py_agents:burn", max_cpu=0.2)
    used = run(agent, platform, tmp_path, {"seconds": 1.0})
    assert used["cpu"] < 0.5 * used["wall"]  # 0.2 cores, with slack for scheduling


def test_rlimit_mode_stops_an_agent_past_its_cpu_seconds(tmp_path: Path) -> None:
    fallback = PosixPlatform(cpu_limit="rlimit")
    agent = make_agent("greedy", entry="py_agents:spin", max_cpu=0.25)
    ex = make_executor(agent, fallback, tmp_path)
    with pytest.raises(AgentLimitExceeded, match="cpu limit exceeded") as info:
        ex.invoke(None, ctx(timeout=4))  # RLIMIT_CPU = 0.25 x 4 = 1 CPU second
    # The CPU limit stopped it, not the 4 s step timeout (that is another limit and message).
    # No wall-clock bound here: on a loaded machine 1 CPU second takes longer than 1 s.
    assert info.value.limit == "cpu"
    assert ex.last_result.cpu_limit_mode == "rlimit"  # type: ignore[attr-defined]


# -- network ---------------------------------------------------------------------------------


def test_an_agent_without_needs_network_gets_no_network(
    platform: PosixPlatform, tmp_path: Path
) -> None:
    agent = make_agent("offline", entry="py_agents:try_network", needs_network=False)
    ex = make_executor(agent, platform, tmp_path)
    said = ex.invoke(None, ctx())
    network = ex.last_result.applied.get("network")  # type: ignore[attr-defined]
    assert network in ("netns", "userns", "shared")
    if network != "shared":
        assert "unreachable" in said.lower()
    online = make_executor(
        make_agent("online", entry="py_agents:try_network", needs_network=True), platform, tmp_path
    )
    said_online = online.invoke(None, ctx())
    assert "network" not in online.last_result.applied  # type: ignore[attr-defined]
    assert "refused" in said_online.lower(), said_online


def test_a_worker_dies_with_the_runtime_that_started_it(tmp_path: Path) -> None:
    """kill -9 of the runtime must not leave its agent running (and producing side effects)."""
    import os
    import signal
    import subprocess
    import sys
    import time

    marker = tmp_path / "alive.txt"
    script = tmp_path / "parent.py"
    script.write_text(
        "import sys\n"
        "from edge_min.platform.posix import PosixPlatform\n"
        "from edge_min.platform import WorkerSpec\n"
        f"spec = WorkerSpec(name='orphan', work_dir={str(tmp_path / 'w')!r},\n"
        f"    argv=('/bin/sh', '-c', 'while true; do date +%s.%N >> {marker}; sleep 0.05; done'),\n"
        "    timeout=60)\n"
        "h = PosixPlatform().spawn_worker(spec)\n"
        "print(h.pid, flush=True)\n"
        "h.wait()\n"
    )
    parent = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
    assert parent.stdout is not None
    worker_pid = int(parent.stdout.readline())
    deadline = time.monotonic() + 10
    while not marker.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert marker.exists(), "the worker never started"
    parent.send_signal(signal.SIGKILL)
    parent.wait(10)
    time.sleep(0.5)
    size = marker.stat().st_size
    time.sleep(0.5)
    assert marker.stat().st_size == size, "the orphaned worker kept writing"
    try:
        os.kill(worker_pid, 0)
        gone = False
    except ProcessLookupError:
        gone = True
    assert gone or Path(f"/proc/{worker_pid}/stat").read_text().split()[2] == "Z"
