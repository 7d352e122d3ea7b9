"""Linux readers on fake /proc and /sys trees, and once on the real ones."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from edge_min.platform.procfs import (
    CpuSample,
    ProcfsResources,
    cpu_percent,
    disk_metrics,
    parse_meminfo,
    parse_net_dev,
    parse_proc_stat,
    read_battery,
)
from tests.fixtures.resources import MEMINFO, NET_DEV, add_supply, fake_proc, stat_text


def test_cpu_usage_is_the_busy_share_between_two_samples() -> None:
    a = parse_proc_stat(stat_text(100, 50, 800, 50))
    assert a == CpuSample(busy=150, total=1000)  # iowait counts as idle
    b = parse_proc_stat(stat_text(400, 150, 1400, 50))
    assert cpu_percent(a, b) == 40.0  # 400 busy jiffies of 1000
    assert cpu_percent(b, b) is None
    with pytest.raises(ValueError, match="cpu"):
        parse_proc_stat("intr 1 2\n")


def test_meminfo_is_read_in_bytes() -> None:
    info = parse_meminfo(MEMINFO)
    assert info["MemTotal"] == 8_000_000 * 1024
    assert info["HugePages_Total"] == 0  # no unit: a count, not KiB


def test_network_counters_skip_loopback() -> None:
    assert parse_net_dev(NET_DEV.format(lo=999, rx=1000, tx=2000)) == (1500, 2100)


def test_a_fake_proc_tree_gives_rates_from_the_second_sample(tmp_path: Path) -> None:
    proc = fake_proc(tmp_path / "proc", cpu=stat_text(100, 0, 900), rx=10_000, tx=1_000)
    res = ProcfsResources(tmp_path, proc_root=proc, sys_root=tmp_path / "sys")
    first = res.read(now=100.0)
    assert "cpu_usage" not in first and "network_rx_bytes_per_second" not in first
    assert first["memory_total"] == 8_000_000 * 1024
    assert first["memory_available"] == 6_000_000 * 1024
    assert first["memory_used"] == 2_000_000 * 1024 and first["memory_usage"] == 25.0
    assert first["free_storage"] > 0 and first["storage_total"] >= first["free_storage"]
    fake_proc(proc, cpu=stat_text(350, 50, 1600), rx=70_000, tx=13_000)
    second = res.read(now=160.0)
    assert second["cpu_usage"] == 30.0  # 300 busy of 1000
    assert (
        second["network_rx_bytes_per_second"] == 1000.0
    )  # (70,000 - 10,000) / 60 s; wlan0 unchanged
    assert second["network_tx_bytes_per_second"] == 200.0
    # A counter reset (interface restarted) gives no rate rather than a negative one.
    fake_proc(proc, cpu=stat_text(360, 50, 1700), rx=5, tx=5)
    assert "network_rx_bytes_per_second" not in res.read(now=220.0)


def test_battery_is_absent_without_one_not_zero(tmp_path: Path) -> None:
    sys_root = tmp_path / "sys"
    assert read_battery(sys_root) is None  # no power_supply directory at all
    add_supply(sys_root, "AC", "Mains", online="1")
    assert read_battery(sys_root) is None  # mains only
    proc = fake_proc(tmp_path / "proc", cpu=stat_text(1, 1, 1))
    sample = ProcfsResources(tmp_path, proc_root=proc, sys_root=sys_root).read(0.0)
    assert "battery_level" not in sample and "battery_charging" not in sample


def test_battery_level_and_charging(tmp_path: Path) -> None:
    sys_root = tmp_path / "sys"
    add_supply(sys_root, "AC", "Mains", online="1")
    add_supply(sys_root, "BAT0", "Battery", capacity="80", status="Discharging")
    assert read_battery(sys_root) == (80.0, False)
    add_supply(sys_root, "BAT1", "Battery", capacity="61", status="Charging")
    assert read_battery(sys_root) == (70.5, True)
    proc = fake_proc(tmp_path / "proc", cpu=stat_text(1, 1, 1))
    sample = ProcfsResources(tmp_path, proc_root=proc, sys_root=sys_root).read(0.0)
    assert (sample["battery_level"], sample["battery_charging"]) == (70.5, 1.0)


def test_disk_metrics_match_statvfs(tmp_path: Path) -> None:
    st = os.statvfs(tmp_path)
    d = disk_metrics(str(tmp_path))
    assert d["storage_total"] == st.f_blocks * st.f_frsize
    assert 0.0 <= d["storage_usage"] <= 100.0
    assert d["storage_used"] + d["free_storage"] <= d["storage_total"]


def test_unreadable_sources_are_left_out(tmp_path: Path) -> None:
    res = ProcfsResources(tmp_path / "missing", proc_root=tmp_path / "none", sys_root=tmp_path)
    assert res.read(0.0) == {}
    assert not ProcfsResources.available(tmp_path / "none")


@pytest.mark.skipif(not ProcfsResources.available(), reason="needs Linux /proc")
def test_the_real_proc(tmp_path: Path) -> None:
    res = ProcfsResources(tmp_path)
    first = res.read(now=0.0)
    # /proc/stat counts in clock ticks (10 ms at USER_HZ=100): burn CPU until the
    # counters move, since on a fast host one fixed burst can fall inside one tick.
    # No second sample may be taken in between: it would become the new baseline.
    deadline = time.monotonic() + 10.0
    start = parse_proc_stat(Path("/proc/stat").read_text())
    while time.monotonic() < deadline:
        sum(i * i for i in range(50_000))
        if parse_proc_stat(Path("/proc/stat").read_text()).total > start.total:
            break
    second = res.read(now=1.0)
    assert 0.0 <= second["cpu_usage"] <= 100.0
    assert 0 < first["memory_available"] <= first["memory_total"]
    assert second["network_rx_bytes_per_second"] >= 0.0
    assert first["free_storage"] > 0
