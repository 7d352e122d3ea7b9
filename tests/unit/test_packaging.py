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


def test_every_data_file_of_the_source_tree_is_package_data() -> None:
    """Files read through importlib.resources (schema, defaults, the fleet page) are in the
    wheel only when [tool.setuptools.package-data] matches them."""
    import fnmatch
    import tomllib

    pyproject = tomllib.loads((PKG.parent / "pyproject.toml").read_text())
    patterns = pyproject["tool"]["setuptools"]["package-data"]["edge_min"]
    data = [
        p.relative_to(PKG).as_posix()
        for p in PKG.rglob("*")
        if p.is_file() and p.suffix not in (".py", ".pyc") and "__pycache__" not in p.parts
    ]
    assert "central/fleet_static/fleet.html" in data
    unmatched = [f for f in data if not any(fnmatch.fnmatch(f, pat) for pat in patterns)]
    assert unmatched == [], "add these to [tool.setuptools.package-data] in pyproject.toml"
