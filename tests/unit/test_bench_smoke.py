"""The benchmark modules import (a renamed helper must not break `make bench` unnoticed)."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"
#: The areas of `make bench`; bench_binary.py (`make bench-binary`) and bench_web.py (`make
#: bench-web`, in Chromium) are commands of their own.
#: bench_firmware.py (`make bench-firmware`, QEMU) and bench_mcu.py (`make bench-mcu`,
#: MicroPython) too.
OWN_COMMANDS = {"bench_binary", "bench_web", "bench_firmware", "bench_mcu"}
MODULES = sorted(p.stem for p in BENCH.glob("bench_*.py") if p.stem not in OWN_COMMANDS)


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


def test_bench_binary_without_a_binary_says_how_to_build_one(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.syspath_prepend(str(BENCH))
    module = importlib.import_module("bench_binary")
    assert module.main(["--binary", str(tmp_path / "none"), "--no-write"]) == 2
    assert "make binary" in capsys.readouterr().err
    sys.modules.pop("bench_binary", None)


def test_bench_web_without_a_bundle_says_how_to_build_one(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.syspath_prepend(str(BENCH))
    module = importlib.import_module("bench_web")
    assert callable(module.run)
    assert module.main(["--bundle", str(tmp_path / "none"), "--no-write"]) == 2
    assert "make web" in capsys.readouterr().err
    sys.modules.pop("bench_web", None)


def test_bench_firmware_without_images_says_how_to_build_them(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.syspath_prepend(str(BENCH))
    module = importlib.import_module("bench_firmware")
    assert module.main(["--images", str(tmp_path), "--no-write"]) == 2
    assert "make firmware" in capsys.readouterr().err
    sys.modules.pop("bench_firmware", None)


def test_sections_of_other_commands_survive_a_rewrite(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # make bench rewrites docs/benchmarks.md; make bench-binary's section must stay.
    monkeypatch.syspath_prepend(str(BENCH))
    common = importlib.import_module("common")
    doc = tmp_path / "benchmarks.md"
    doc.write_text("# Benchmarks\n\nold table\n")
    common.write_section(doc, "gateway-binary", "## Gateway\n\nfirst")
    common.write_section(doc, "gateway-binary", "## Gateway\n\nsecond")
    text = doc.read_text()
    assert text.count("## Gateway") == 1 and "second" in text and "old table" in text
    kept = common.preserved_sections(doc)
    assert "second" in kept and "old table" not in kept
    doc.write_text("# Benchmarks\n\nnew table\n" + kept)
    assert "second" in doc.read_text()


def test_bench_mcu_without_micropython_says_how_to_install_it(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.syspath_prepend(str(BENCH))
    module = importlib.import_module("bench_mcu")
    assert callable(module.run)
    monkeypatch.setattr(module, "MICROPYTHON", tmp_path / "none")
    assert module.main(["--no-write"]) == 2
    assert "make .venv/.installed-stamp" in capsys.readouterr().err
    sys.modules.pop("bench_mcu", None)
