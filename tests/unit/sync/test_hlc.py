"""The hybrid logical clock: text order is causal order, skew-proof, and it never goes back."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edge_min.clock import VirtualClock
from edge_min.store import open_store
from edge_min.sync.hlc import HlcError, HybridClock, format_hlc, hlc_int, parse_hlc
from edge_min.sync.tracker import ChangeTracker

T0 = 1_767_225_600.0
HOURS3 = 3 * 3600.0


def test_format_and_parse_round_trip() -> None:
    text = format_hlc(1_767_225_600_123, 42, "edge-1")
    assert text == "1767225600123.00042.edge-1"
    assert parse_hlc(text) == (1_767_225_600_123, 42, "edge-1")
    assert hlc_int(text) == 1_767_225_600_123 * 100_000 + 42


@pytest.mark.parametrize("bad", ["", "1.2.x", "176722560012.00042.a", "x" * 30, None])
def test_malformed_hlc_names_the_value(bad: object) -> None:
    with pytest.raises(HlcError) as err:
        parse_hlc(bad)  # type: ignore[arg-type]
    assert repr(bad) in str(err.value)


def test_now_is_strictly_increasing_while_the_wall_clock_stands_still() -> None:
    hlc = HybridClock(VirtualClock(T0), "a")
    stamps = [hlc.now() for _ in range(1000)]
    assert stamps == sorted(stamps) and len(set(stamps)) == 1000
    assert parse_hlc(stamps[-1])[:2] == (int(T0 * 1000), 999)


def test_counter_overflow_moves_logical_time_one_ms_ahead() -> None:
    hlc = HybridClock(VirtualClock(T0), "a", last=format_hlc(int(T0 * 1000), 99_999, "a"))
    assert parse_hlc(hlc.now())[:2] == (int(T0 * 1000) + 1, 0)


def test_wall_clock_stepping_back_does_not_move_the_hlc_back() -> None:
    clock = VirtualClock(T0)
    hlc = HybridClock(clock, "a")
    before = hlc.now()
    clock.set_wall(T0 - HOURS3)  # an NTP step of three hours back
    after = hlc.now()
    assert after > before
    clock.set_wall(T0 + 10)
    assert hlc.now().startswith(str(int((T0 + 10) * 1000)))


def test_a_stamp_after_observing_a_remote_is_greater_even_3h_behind() -> None:
    ahead = HybridClock(VirtualClock(T0 + HOURS3), "z-ahead")
    behind = HybridClock(VirtualClock(T0), "a-behind")
    remote = ahead.now()
    assert behind.now() < remote  # without observing, the skewed clock loses
    behind.observe(remote)
    assert behind.now() > remote


@given(
    skews=st.lists(st.floats(-HOURS3, HOURS3), min_size=2, max_size=4),
    steps=st.lists(st.tuples(st.integers(0, 3), st.integers(0, 3), st.booleans()), max_size=60),
)
def test_causal_chains_are_ordered_under_skew(
    skews: list[float], steps: list[tuple[int, int, bool]]
) -> None:
    """Every message's receive-then-stamp is greater than the sent stamp, whatever the skews."""
    clocks = [VirtualClock(T0 + s) for s in skews]
    nodes = [HybridClock(c, f"n{i}") for i, c in enumerate(clocks)]
    for src, dst, tick in steps:
        src, dst = src % len(nodes), dst % len(nodes)
        sent = nodes[src].now()
        nodes[dst].observe(sent)
        assert nodes[dst].now() > sent
        if tick:
            clocks[src].advance(0.001)


def test_persisted_clock_survives_a_restart_and_a_clock_step_back(tmp_path: Path) -> None:
    clock = VirtualClock(T0)
    store = open_store(tmp_path / "edge.db", clock=clock, changes=ChangeTracker)
    store.workflows.create("w", {"steps": []}, "1", id="w1")
    last = store.backend.select("sync_changes", order_by=("-seq",), limit=1)[0]["hlc"]
    assert store.meta.get("sync.hlc") == last
    store.close()
    clock.set_wall(T0 - HOURS3)  # the device reboots with its clock three hours back
    store = open_store(tmp_path / "edge.db", clock=clock, changes=ChangeTracker)
    store.workflows.update("w1", name="again")
    changes = store.backend.select("sync_changes", order_by=("seq",))
    assert [c["hlc"] > last for c in changes] == [False, True]
    assert changes[1]["seq"] > changes[0]["seq"]
    store.close()
