"""Linux host readings for the monitor, from ``/proc``, ``/sys`` and ``statvfs``.

The one parser of each of these sources in edge_min: ``PosixPlatform.resources()`` gives a
``ProcfsResources`` (the platform port's ``ResourceReader``), and the monitor reads the host
only through that. Every reader takes its root (``proc_root``, ``sys_root``) as a parameter
so tests can point it at a fake tree; the parsers take text. ``ProcfsResources.read(now)``
gives one sample of the monitor's host metrics; rates (CPU busy %, network bytes per
second) come from the difference with the previous sample, so the first sample has none.
Battery metrics are absent (not 0) when ``/sys/class/power_supply`` has no battery. A
metric whose source is unreadable is left out of the sample rather than reported as 0.

``read_hardware_facts`` gives the tamper check's hardware fingerprint sources: machine-id,
DMI product name and serial (the serial is root-only on most hosts: absent when
unreadable), the CPU model and each network interface's MAC address but loopback's.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from pathlib import Path

# /proc/stat cpu line: user nice system idle iowait irq softirq steal guest guest_nice.
# guest time is already counted in user, so only the first eight fields make the total.
_STAT_FIELDS = 8


@dataclass(frozen=True)
class CpuSample:
    """Cumulative CPU jiffies since boot: busy and total, over all CPUs."""

    busy: int
    total: int


def parse_proc_stat(text: str) -> CpuSample:
    """The aggregate ``cpu`` line of /proc/stat; ValueError if there is none."""
    for line in text.splitlines():
        if line.startswith("cpu "):
            values = [int(v) for v in line.split()[1 : 1 + _STAT_FIELDS]]
            values += [0] * (_STAT_FIELDS - len(values))
            idle = values[3] + values[4]  # idle + iowait
            total = sum(values)
            return CpuSample(busy=total - idle, total=total)
    raise ValueError("no aggregate 'cpu' line in /proc/stat")


def cpu_percent(before: CpuSample, after: CpuSample) -> float | None:
    """Busy % of all CPUs between two samples; None if no time passed (or counters reset)."""
    total = after.total - before.total
    busy = after.busy - before.busy
    if total <= 0 or busy < 0:
        return None
    return round(100.0 * busy / total, 2)


def parse_meminfo(text: str) -> dict[str, int]:
    """/proc/meminfo as bytes per key (the file says kB, meaning KiB)."""
    values: dict[str, int] = {}
    for line in text.splitlines():
        key, sep, rest = line.partition(":")
        parts = rest.split()
        if not sep or not parts:
            continue
        try:
            n = int(parts[0])
        except ValueError:
            continue
        values[key.strip()] = n * 1024 if len(parts) > 1 and parts[1] == "kB" else n
    return values


def memory_metrics(info: dict[str, int]) -> dict[str, float]:
    """Total, available and used memory (bytes) and used % from parsed meminfo."""
    total = info.get("MemTotal")
    if not total:
        return {}
    available = info.get("MemAvailable")
    if available is None:  # kernels before 3.14 lack MemAvailable: estimate it
        available = info.get("MemFree", 0) + info.get("Buffers", 0) + info.get("Cached", 0)
    used = max(0, total - available)
    return {
        "memory_total": float(total),
        "memory_available": float(available),
        "memory_used": float(used),
        "memory_usage": round(100.0 * used / total, 2),
    }


def parse_net_dev(text: str, skip: tuple[str, ...] = ("lo",)) -> tuple[int, int]:
    """Bytes received and sent, summed over interfaces not in ``skip``, from /proc/net/dev."""
    rx = tx = 0
    for line in text.splitlines():
        name, sep, rest = line.partition(":")
        if not sep or "|" in line:
            continue
        if name.strip() in skip:
            continue
        fields = rest.split()
        if len(fields) >= 9:
            rx += int(fields[0])
            tx += int(fields[8])
    return rx, tx


def disk_metrics(path: str) -> dict[str, float]:
    """Total, used and free (for unprivileged users) bytes and used % of ``path``'s filesystem."""
    st = os.statvfs(path)
    total = st.f_blocks * st.f_frsize
    free = st.f_bavail * st.f_frsize
    used = (st.f_blocks - st.f_bfree) * st.f_frsize
    out = {"storage_total": float(total), "storage_used": float(used), "free_storage": float(free)}
    # Root's reserved blocks are neither used nor free to us: percent of what we could use.
    usable = used + free
    out["storage_usage"] = round(100.0 * used / usable, 2) if usable else 0.0
    return out


def read_battery(sys_root: str | Path = "/sys") -> tuple[float, bool] | None:
    """(capacity %, charging) averaged over batteries in class/power_supply; None if none."""
    base = Path(sys_root) / "class" / "power_supply"
    try:
        supplies = sorted(base.iterdir())
    except OSError:
        return None
    levels: list[float] = []
    charging = False
    for supply in supplies:
        kind = _read_text(supply / "type")
        if kind != "Battery":
            continue
        capacity = _read_text(supply / "capacity")
        if capacity is None:
            continue
        try:
            levels.append(float(capacity))
        except ValueError:
            continue
        charging = charging or _read_text(supply / "status") == "Charging"
    if not levels:
        return None
    return round(sum(levels) / len(levels), 1), charging


def _read_text(path: Path) -> str | None:
    try:
        return path.read_text(encoding="ascii", errors="replace").strip()
    except OSError:
        return None


class ProcfsResources:
    """The monitor's host metrics on Linux: ``read(now)`` gives one sample (metric -> value).

    ``now`` is a monotonic time in seconds, used for network rates.
    """

    def __init__(
        self,
        data_path: str | Path = ".",
        *,
        proc_root: str | Path = "/proc",
        sys_root: str | Path = "/sys",
    ) -> None:
        self.data_path = str(data_path)
        self.proc = Path(proc_root)
        self.sys_root = Path(sys_root)
        self._cpu: CpuSample | None = None
        self._net: tuple[float, int, int] | None = None

    @staticmethod
    def available(proc_root: str | Path = "/proc") -> bool:
        """Whether this host has the /proc files the reader needs."""
        return (Path(proc_root) / "stat").is_file() and (Path(proc_root) / "meminfo").is_file()

    def read(self, now: float) -> dict[str, float]:
        """One sample of host metrics; unreadable sources are left out."""
        out: dict[str, float] = {}
        cpu = self._read_cpu()
        if cpu is not None:
            out["cpu_usage"] = cpu
        meminfo = _read_text(self.proc / "meminfo")
        if meminfo is not None:
            out.update(memory_metrics(parse_meminfo(meminfo)))
        with contextlib.suppress(OSError):  # the data volume may not exist yet
            out.update(disk_metrics(self.data_path))
        out.update(self._read_net(now))
        battery = read_battery(self.sys_root)
        if battery is not None:
            out["battery_level"] = battery[0]
            out["battery_charging"] = 1.0 if battery[1] else 0.0
        return out

    def _read_cpu(self) -> float | None:
        text = _read_text(self.proc / "stat")
        if text is None:
            return None
        try:
            sample = parse_proc_stat(text)
        except ValueError:
            return None
        before, self._cpu = self._cpu, sample
        return None if before is None else cpu_percent(before, sample)

    def _read_net(self, now: float) -> dict[str, float]:
        text = _read_text(self.proc / "net" / "dev")
        if text is None:
            return {}
        try:
            rx, tx = parse_net_dev(text)
        except ValueError:
            return {}
        before, self._net = self._net, (now, rx, tx)
        if before is None or now <= before[0]:
            return {}
        dt = now - before[0]
        # A counter that went down (interface reset, wrap) gives no rate this time.
        if rx < before[1] or tx < before[2]:
            return {}
        return {
            "network_rx_bytes_per_second": round((rx - before[1]) / dt, 2),
            "network_tx_bytes_per_second": round((tx - before[2]) / dt, 2),
        }


def read_hardware_facts(
    proc_root: str | Path = "/proc", sys_root: str | Path = "/sys", etc_root: str | Path = "/etc"
) -> dict[str, str]:
    """The machine's identifying facts by name; a fact that cannot be read is left out."""
    facts: dict[str, str] = {}

    def put(name: str, path: Path) -> None:
        with contextlib.suppress(OSError, UnicodeDecodeError):
            value = path.read_text().strip()
            if value:
                facts[name] = value

    put("machine_id", Path(etc_root) / "machine-id")
    dmi = Path(sys_root) / "class" / "dmi" / "id"
    put("dmi_product_name", dmi / "product_name")
    put("dmi_product_serial", dmi / "product_serial")
    with contextlib.suppress(OSError, UnicodeDecodeError):
        model = parse_cpu_model((Path(proc_root) / "cpuinfo").read_text())
        if model:
            facts["cpu_model"] = model
    net = Path(sys_root) / "class" / "net"
    with contextlib.suppress(OSError):
        for iface in sorted(os.listdir(net)):
            if iface != "lo":
                put(f"mac:{iface}", net / iface / "address")
    return facts


def parse_cpu_model(text: str) -> str | None:
    """The first ``model name`` (x86) or ``Model``/``Hardware`` (ARM) of /proc/cpuinfo."""
    found: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        key = key.strip().lower()
        if sep and key in ("model name", "model", "hardware", "cpu model") and key not in found:
            found[key] = value.strip()
    for key in ("model name", "cpu model", "model", "hardware"):
        if found.get(key):
            return found[key]
    return None
