"""The benchmark modules import (a renamed helper must not break `make bench` unnoticed)."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"
MODULES = sorted(p.stem for p in BENCH.glob("bench_*.py"))


@pytest.mark.parametrize("name", MODULES)
def test_bench_module_imports_and_has_run(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(BENCH))
    module = importlib.import_module(name)
    assert callable(getattr(module, "run", None)), f"bench/{name}.py has no run()"
    sys.modules.pop(name, None)


def test_the_bench_driver_lists_every_area(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(BENCH))
    driver = importlib.import_module("run")
    # Every area module is imported by the driver, and every area runs something callable.
    missing = [m for m in MODULES if not hasattr(driver, m)]
    assert not missing, f"bench/run.py does not gather {missing}"
    assert all(callable(fn) for _, fn in driver.AREAS)
    assert len(driver.AREAS) == len(MODULES)
    sys.modules.pop("run", None)
