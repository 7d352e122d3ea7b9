"""The platform port: selection, the worker spec, resource readers, posix helpers."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from edge_min import platform as port
from edge_min.platform import WorkerSpec, get_platform, set_platform
from edge_min.platform.posix import CgroupCpu, PosixPlatform, directory_size
from edge_min.platform.procfs import parse_proc_stat
from edge_min.platform.worker import CallContext, run_entry


def test_get_platform_is_posix_here_and_cached() -> None:
    set_platform(None)
    try:
        first = get_platform()
        assert first.name == "posix" and get_platform() is first
        assert first.cpu_limit_mode in ("cgroup2", "cgroup1", "rlimit")
    finally:
        set_platform(None)


def test_importing_the_port_starts_nothing() -> None:
    assert port._current is None or port._current.name in ("posix", "inprocess")


def test_a_spec_needs_exactly_one_of_argv_or_entry() -> None:
    with pytest.raises(ValueError, match="exactly one"):
        WorkerSpec(name="a", work_dir="/w")
    with pytest.raises(ValueError, match="exactly one"):
        WorkerSpec(name="a", work_dir="/w", argv=("x",), entry="m:f")


def test_resource_readers_report_the_host(tmp_path: Path) -> None:
    # The platform's one reader of /proc (procfs); its CPU counters: busy (user, system...)
    # and idle time have both been spent since boot.
    cpu = parse_proc_stat(Path("/proc/stat").read_text())
    assert cpu.busy > 0 and cpu.total - cpu.busy > 0
    sample = PosixPlatform().resources(str(tmp_path)).read(0.0)
    assert 0 < sample["memory_available"] <= sample["memory_total"]
    assert sample["storage_total"] >= sample["storage_used"] > 0


def test_directory_size_counts_nested_files_not_symlinks(tmp_path: Path) -> None:
    (tmp_path / "a").write_bytes(b"x" * 1000)
    (tmp_path / "sub" / "deeper").mkdir(parents=True)
    (tmp_path / "sub" / "deeper" / "b").write_bytes(b"y" * 2345)
    (tmp_path / "link").symlink_to(tmp_path / "a")
    assert directory_size(str(tmp_path)) == 3345
    assert directory_size(str(tmp_path / "missing")) == 0


def test_an_unknown_cpu_limit_mode_is_refused() -> None:
    with pytest.raises(ValueError, match="cpu_limit"):
        PosixPlatform(cpu_limit="cgroup3")


def test_forced_rlimit_mode_skips_cgroups() -> None:
    assert PosixPlatform(cpu_limit="rlimit").cpu_limit_mode == "rlimit"


def test_an_unwritable_cgroup_parent_gives_no_cgroup(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    assert CgroupCpu.probe(str(blocker / "edge_min")) is None


def test_run_entry_reports_frames(tmp_path: Path) -> None:
    (tmp_path / "mod_x.py").write_text(
        "def f(v, c):\n    return {'v': v, 'key': c.idempotency_key}\n"
        "def boom(v, c):\n    raise MemoryError\n"
    )
    ctx = {"idempotency_key": "k"}
    ok = run_entry("mod_x:f", b"[1]", ctx, [str(tmp_path)])
    assert ok == {"ok": True, "output": {"v": [1], "key": "k"}}
    assert run_entry("mod_x:boom", b"1", ctx, [str(tmp_path)])["kind"] == "memory"
    assert run_entry("mod_x:f", b"{bad", ctx, [str(tmp_path)])["kind"] == "input"
    assert run_entry("mod_x:nope", b"1", ctx, [str(tmp_path)])["kind"] == "import"


def test_call_context_is_a_dict_with_attributes() -> None:
    c = CallContext({"agent": "a"})
    assert c.agent == "a" and c["agent"] == "a"
    with pytest.raises(AttributeError):
        _ = c.missing


def test_posix_worker_runs_with_no_limits(tmp_path: Path) -> None:
    spec = WorkerSpec(
        name="plain", work_dir=str(tmp_path), argv=("sh", "-c", "cat; pwd >&2"),
        env={"PATH": os.environ["PATH"]}, stdin=b'"hi"',
    )  # fmt: skip
    result = PosixPlatform().spawn_worker(spec).wait()
    assert result.returncode == 0 and result.stdout == b'"hi"'
    assert result.stderr.decode().strip() == os.path.realpath(tmp_path)
    assert result.cpu_limit_mode == "none" and result.killed_for is None


def test_the_in_process_platform_starts_no_process_to_name_its_machine(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A browser tab has no processes: platform.platform() would ask `uname -p` for one.
    import subprocess

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError(f"hardware_facts started a process: {args}")

    monkeypatch.setattr(subprocess, "Popen", refuse)
    from edge_min.platform.inprocess import InProcessPlatform

    facts = InProcessPlatform().hardware_facts()
    assert facts == {"system": os.uname().sysname, "machine": os.uname().machine}
    assert InProcessPlatform.runs_commands is False and PosixPlatform.runs_commands is True
