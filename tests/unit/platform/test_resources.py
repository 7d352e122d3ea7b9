"""The platform port's ``ResourceReader`` contract, once, run against every reader.

The readers: procfs on a fake /proc and /sys (a battery in it), the POSIX platform's reader of
this host, the POSIX platform on a host without /proc, the in-process (Pyodide) platform's,
and the fake the monitor's tests use. What only procfs promises (no rate before the second
read, the exact parsing) is in test_procfs.py.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest

from edge_min.clock import VirtualClock
from edge_min.config import parse_config
from edge_min.monitor.metrics import BYTES, FLAG, METRICS, PERCENT, RATE
from edge_min.platform import RESOURCE_METRICS, NoResources, ResourceReader
from edge_min.platform.inprocess import InProcessPlatform
from edge_min.platform.posix import PosixPlatform
from edge_min.platform.procfs import ProcfsResources
from edge_min.runtime import Paths, Runtime
from tests.fixtures.resources import FakeResources, add_supply, fake_proc, stat_text

MB = 1024 * 1024
PERCENTS = ("cpu_usage", "memory_usage", "storage_usage", "battery_level")
RATES = ("network_rx_bytes_per_second", "network_tx_bytes_per_second")


@dataclass
class Case:
    """A reader, how its host moves on between two reads, and whether it has a battery.

    ``battery`` is ``None`` where the test cannot know (this host).
    """

    reader: ResourceReader
    advance: Callable[[], None] = lambda: None
    battery: bool | None = False


def _fake_tree(tmp_path: Path, battery: bool) -> Case:
    proc, sys_root = tmp_path / "proc", tmp_path / "sys"
    fake_proc(proc, cpu=stat_text(100, 50, 800), rx=10_000, tx=1_000)
    add_supply(sys_root, "AC", "Mains", online="1")
    if battery:
        add_supply(sys_root, "BAT0", "Battery", capacity="64", status="Charging")
    turn = iter(range(1, 1000))

    def advance() -> None:
        n = next(turn)
        cpu = stat_text(100 + 30 * n, 50 + 10 * n, 800 + 60 * n)
        fake_proc(proc, cpu=cpu, rx=10_000 + 600 * n, tx=1_000 + 60 * n)

    return Case(ProcfsResources(tmp_path, proc_root=proc, sys_root=sys_root), advance, battery)


def _fake(tmp_path: Path) -> Case:
    fake = FakeResources({"cpu_usage": 10.0, "free_storage": 500.0 * MB})

    def advance() -> None:
        fake.values["cpu_usage"] += 5.0

    return Case(fake, advance)


READERS: dict[str, Callable[[Path], Case]] = {
    "procfs-fake-tree": lambda p: _fake_tree(p, battery=True),
    "procfs-fake-tree-mains-only": lambda p: _fake_tree(p, battery=False),
    "posix-this-host": lambda p: Case(PosixPlatform().resources(str(p)), battery=None),
    "posix-without-proc": lambda p: Case(
        PosixPlatform(proc_root=p / "none", sys_root=p / "none").resources(str(p))
    ),
    "inprocess": lambda p: Case(InProcessPlatform().resources(str(p))),
    "fake": _fake,
}


@pytest.fixture(params=sorted(READERS))
def case(request: pytest.FixtureRequest, tmp_path: Path) -> Case:
    """Each resource reader, on its own host."""
    return READERS[request.param](tmp_path)


def samples(case: Case, now: float = 100.0, count: int = 3) -> Iterator[Mapping[str, float]]:
    """``count`` reads a minute apart, the host moving on in between."""
    for i in range(count):
        if i:
            case.advance()
        yield case.reader.read(now + 60.0 * i)


def test_a_sample_names_only_port_metrics_with_finite_float_values(case: Case) -> None:
    for sample in samples(case):
        assert set(sample) <= set(RESOURCE_METRICS), set(sample) - set(RESOURCE_METRICS)
        for name, value in sample.items():
            assert type(value) is float and math.isfinite(value), (name, value)


def test_percentages_stay_within_0_and_100_and_rates_are_never_negative(case: Case) -> None:
    for sample in samples(case):
        for name in PERCENTS:
            if name in sample:
                assert 0.0 <= sample[name] <= 100.0, (name, sample[name])
        for name in RATES:
            if name in sample:
                assert sample[name] >= 0.0, (name, sample[name])


def test_memory_and_storage_add_up(case: Case) -> None:
    for sample in samples(case):
        if "memory_total" in sample:
            total, available = sample["memory_total"], sample["memory_available"]
            assert 0.0 <= available <= total
            assert sample["memory_used"] == total - available
            assert abs(sample["memory_usage"] - 100.0 * sample["memory_used"] / total) <= 0.0051
        if "storage_total" in sample:
            used, free = sample["storage_used"], sample["free_storage"]
            assert used + free <= sample["storage_total"]
            usable = used + free
            assert abs(sample["storage_usage"] - (100.0 * used / usable if usable else 0)) <= 0.0051


def test_a_battery_is_both_metrics_or_neither_and_absent_not_0_without_one(case: Case) -> None:
    for sample in samples(case):
        assert ("battery_level" in sample) == ("battery_charging" in sample), sample
        if case.battery is not None:
            assert ("battery_level" in sample) is case.battery, sample
        if "battery_charging" in sample:
            assert sample["battery_charging"] in (0.0, 1.0)


def test_a_second_read_at_the_same_instant_is_safe(case: Case) -> None:
    case.reader.read(50.0)
    case.advance()
    again = case.reader.read(50.0)  # no time passed: no rate per second, and no ZeroDivision
    assert set(again) <= set(RESOURCE_METRICS)
    assert not [name for name in RATES if name in again]


def test_the_monitor_catalogue_knows_every_port_metric_with_its_unit() -> None:
    # The unit decides the /metrics suffix: these are the names and units the monitor exposes.
    units = {
        **dict.fromkeys(PERCENTS, PERCENT),
        **dict.fromkeys(RATES, RATE),
        "battery_charging": FLAG,
    }
    assert len(set(RESOURCE_METRICS)) == len(RESOURCE_METRICS) == 13
    for name in RESOURCE_METRICS:
        assert METRICS[name].unit == units.get(name, BYTES), name


def test_each_platform_picks_its_reader(tmp_path: Path) -> None:
    if ProcfsResources.available():
        assert isinstance(PosixPlatform().resources(str(tmp_path)), ProcfsResources)
    without = PosixPlatform(proc_root=tmp_path / "none").resources(str(tmp_path))
    assert isinstance(without, NoResources)
    assert isinstance(InProcessPlatform().resources(str(tmp_path)), NoResources)


class ShowingPlatform:
    """A platform double: no workers asked for here, a link that is up, a host it shows."""

    name = "test-host"
    cpu_limit_mode = "none"

    def __init__(self, reader: ResourceReader) -> None:
        self.reader = reader
        self.asked: list[str] = []

    def resources(self, data_path: str) -> ResourceReader:
        self.asked.append(data_path)
        return self.reader

    def can_reach(self, host: str, port: int, timeout: float) -> bool:
        return True

    def hardware_facts(self) -> dict[str, str]:
        return {"machine_id": "test-host"}


def test_the_runtime_monitor_reads_the_platform_it_was_given(tmp_path: Path) -> None:
    host = FakeResources({"battery_level": 42.0, "battery_charging": 0.0})
    platform = ShowingPlatform(host)
    config = parse_config({"runtime": {"offline_mode": "never"}}, source="t")
    rt = Runtime(
        config,
        Paths.resolve(config, tmp_path / "data"),
        clock=VirtualClock(),
        platform=platform,
        without=("sync",),
    ).open()
    try:
        assert platform.asked == [str(rt.paths.root)]
        assert rt.monitor.resources is host
        sample = rt.monitor.collect()
        assert (sample["battery_level"], sample["battery_charging"]) == (42.0, 0.0)
    finally:
        rt.close()
