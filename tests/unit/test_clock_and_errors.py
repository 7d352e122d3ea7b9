from __future__ import annotations

import pytest

from edge_min import errors
from edge_min.clock import SystemClock, VirtualClock, from_iso, iso


def test_virtual_clock_moves_only_when_told() -> None:
    c = VirtualClock(start=1000.0)
    assert (c.time(), c.monotonic()) == (1000.0, 0.0)
    c.advance(5)
    assert (c.time(), c.monotonic()) == (1005.0, 5.0)
    c.set_wall(10.0)  # an NTP step backwards moves wall time only
    assert (c.time(), c.monotonic()) == (10.0, 5.0)
    with pytest.raises(ValueError):
        c.advance(-1)


def test_iso_round_trip_and_sorts_as_text() -> None:
    a, b = 1_767_225_600.123456, 1_767_225_601.5
    assert from_iso(iso(a)) == pytest.approx(a, abs=1e-6)
    assert iso(a) < iso(b)
    assert iso(a).endswith("Z")


def test_system_clock_is_monotonic() -> None:
    c = SystemClock()
    t1 = c.monotonic()
    assert c.monotonic() >= t1


def test_missing_dependency_prints_the_install_command() -> None:
    err = errors.MissingDependency("onnxruntime", "onnx", "the onnxruntime executor")
    assert "pip install 'edge-min[onnx]'" in str(err)


def test_config_error_names_file_and_path() -> None:
    err = errors.ConfigError(
        "must be at least 1", file="edge-config.yaml", path="runtime.x", value=0
    )
    assert str(err) == "edge-config.yaml: runtime.x: must be at least 1"
    both = errors.ConfigError.collect([err, errors.ConfigError("bad", file="f.yaml")])
    assert str(both).splitlines() == [
        "edge-config.yaml: runtime.x: must be at least 1",
        "f.yaml: bad",
    ]
