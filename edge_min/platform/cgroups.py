"""CPU quotas for agent workers: one child cgroup per worker (cgroup v2, else v1's ``cpu``).

``CgroupCpu.probe()`` finds a parent it may write (``<cgroup2 mount>/edge_min``, the v1
``cpu`` hierarchy, or a ``cgroup_parent`` given), enabling the ``cpu`` controller where it
must; ``create(name, max_cpu)`` makes ``w-<agent>-<pid namespace>-<pid>-<serial>`` with
``cpu.max`` (v2) or ``cpu.cfs_quota_us`` (v1) set to ``max_cpu`` cores, which the worker
joins itself before agent code runs; ``remove`` kills whatever is left in it and deletes it.
A sweep at probe time removes cgroups left by dead processes of this pid namespace (their
owner is in the name), never another runtime's. ``edge_min.platform.posix`` uses it.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from itertools import count
from pathlib import Path

CPU_PERIOD_US = 100_000
_serial = count(1)


def _mounts() -> list[tuple[str, str, str]]:
    """(mount point, fstype, super options) for every mount, from /proc/self/mountinfo."""
    found = []
    try:
        with open("/proc/self/mountinfo") as fh:
            for line in fh:
                left, _, right = line.partition(" - ")
                fields, tail = left.split(), right.split()
                if len(fields) >= 5 and len(tail) >= 3:
                    found.append((fields[4], tail[0], tail[2]))
    except OSError:
        pass
    return found


class CgroupCpu:
    """Per-worker child cgroups carrying a CPU quota, under one parent directory."""

    def __init__(self, version: int, parent: str) -> None:
        self.version = version
        self.parent = parent

    @property
    def mode(self) -> str:
        """``cgroup2`` or ``cgroup1``."""
        return f"cgroup{self.version}"

    @classmethod
    def probe(cls, parent: str | None = None) -> CgroupCpu | None:
        """A usable CPU cgroup parent here, or ``None`` (not writable, no cpu controller)."""
        candidates: list[tuple[int, str]] = []
        if parent:
            version = 2 if os.path.exists(os.path.join(parent, "cgroup.controllers")) else 1
            if not os.path.exists(parent):
                up = os.path.dirname(parent.rstrip("/"))
                version = 2 if os.path.exists(os.path.join(up, "cgroup.controllers")) else 1
            candidates.append((version, parent))
        else:
            for mount, fstype, options in _mounts():
                if fstype == "cgroup2":
                    candidates.insert(0, (2, os.path.join(mount, "edge_min")))
                elif fstype == "cgroup" and "cpu" in options.split(","):
                    candidates.append((1, os.path.join(mount, "edge_min")))
        for version, path in candidates:
            cg = cls(version, path)
            try:
                if cg._prepare():
                    cg._sweep()
                    return cg
            except OSError:
                continue
        return None

    def _prepare(self) -> bool:
        os.makedirs(self.parent, exist_ok=True)
        if self.version == 1:
            return os.access(os.path.join(self.parent, "cpu.cfs_quota_us"), os.W_OK)
        controllers = Path(self.parent, "cgroup.controllers").read_text().split()
        if "cpu" not in controllers:
            up = Path(os.path.dirname(self.parent.rstrip("/")), "cgroup.subtree_control")
            if "cpu" not in up.read_text().split():
                up.write_text("+cpu")
        control = Path(self.parent, "cgroup.subtree_control")
        if "cpu" not in control.read_text().split():
            control.write_text("+cpu")
        return "cpu" in control.read_text().split()

    def _sweep(self) -> None:
        # Empty worker cgroups left by a runtime that was killed; busy ones refuse rmdir.
        # Only those whose creating process (the pid in the name) is gone: a live runtime's
        # fresh cgroup is empty for a moment before its worker joins it. A pid means
        # something only in its own pid namespace (a container or chroot test root shares
        # this cgroup tree with the host), so only names from this namespace are judged.
        mine = _pid_namespace()
        for entry in os.scandir(self.parent):
            if not (entry.is_dir() and entry.name.startswith("w-")):
                continue
            namespace, owner = _owner_of(entry.name)
            if namespace != mine:
                continue
            if owner.isdigit() and _alive(int(owner)):
                continue
            # Its runtime is gone: kill any worker it left behind, then remove the cgroup.
            with contextlib.suppress(OSError):
                self.remove(entry.path)

    def create(self, name: str, max_cpu: float) -> str:
        """A new child cgroup limited to ``max_cpu`` cores; returns its directory.

        Named ``w-<agent>-<pid namespace>-<pid>-<serial>``, so a sweep knows whose it is.
        """
        safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in name)[:40]
        path = os.path.join(
            self.parent, f"w-{safe}-{_pid_namespace()}-{os.getpid()}-{next(_serial)}"
        )
        os.mkdir(path)
        quota = max(1000, int(max_cpu * CPU_PERIOD_US))
        try:
            if self.version == 2:
                Path(path, "cpu.max").write_text(f"{quota} {CPU_PERIOD_US}")
            else:
                Path(path, "cpu.cfs_period_us").write_text(str(CPU_PERIOD_US))
                Path(path, "cpu.cfs_quota_us").write_text(str(quota))
        except OSError:
            os.rmdir(path)
            raise
        return path

    def remove(self, path: str) -> None:
        """Kill whatever is still in the cgroup, then delete it."""
        kill_file = Path(path, "cgroup.kill")
        for _ in range(50):
            try:
                if kill_file.exists():
                    kill_file.write_text("1")
                else:
                    for pid in Path(path, "cgroup.procs").read_text().split():
                        _signal_pid(int(pid))
                os.rmdir(path)
                return
            except FileNotFoundError:
                return
            except OSError:
                time.sleep(0.01)


def _pid_namespace() -> str:
    """This process's pid namespace as ``ns<inode>`` (``ns0`` where /proc can't tell)."""
    try:
        return "ns" + str(os.stat("/proc/self/ns/pid").st_ino)
    except OSError:
        return "ns0"


def _owner_of(name: str) -> tuple[str, str]:
    """(pid namespace, pid) from a worker cgroup's name; ("", "") if it is not ours."""
    parts = name.rsplit("-", 3)
    if len(parts) == 4 and parts[1].startswith("ns"):
        return parts[1], parts[2]
    return "", ""


def _alive(pid: int) -> bool:
    """Whether a process with this pid exists."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _signal_pid(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
