"""A regular (non-editable) install carries every package of the source tree."""

from __future__ import annotations

from pathlib import Path

import setuptools

PKG = Path(__file__).resolve().parents[2] / "edge_min"


def test_every_folder_with_modules_is_a_package_setuptools_finds() -> None:
    folders = {
        ".".join(p.parent.relative_to(PKG.parent).parts)
        for p in PKG.rglob("*.py")
        if "__pycache__" not in p.parts
    }
    found = set(setuptools.find_packages(str(PKG.parent), include=["edge_min*"]))
    assert folders - found == set(), "add an __init__.py, or a wheel leaves these out"
