"""The commented default files ``edge-min init`` writes, shipped in ``edge_min/defaults/``.

They hold the spec's values except two that must work on a fresh machine: ``storage.path``
is null (the database goes in the data directory) and ``sync.central_url`` points at a
local central on http://127.0.0.1:8765. Loading them gives the same ``EdgeConfig`` as
``load_config(None)``.
"""

from __future__ import annotations

from importlib import resources

from edge_min.config.loader import FILE_NAMES


def default_files() -> dict[str, str]:
    """File name -> text of the five default config files, in FILE_NAMES order."""
    folder = resources.files("edge_min").joinpath("defaults")
    return {name: folder.joinpath(name).read_text(encoding="utf-8") for name in FILE_NAMES.values()}
