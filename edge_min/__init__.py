"""edge_min: a durable, offline-first edge runtime for AI agent workflows.

The facade loads its parts lazily (PEP 562), so ``import edge_min`` stays cheap and opens
nothing; ``edge_min.load_config`` and friends import their module on first use.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "EdgeError": "edge_min.errors",
    "ConfigError": "edge_min.errors",
    "load_config": "edge_min.config",
    "load_agent_config": "edge_min.config",
    "EdgeConfig": "edge_min.config",
    "open_store": "edge_min.store",
    "parse_definition": "edge_min.workflows.definition",
    "Engine": "edge_min.workflows.engine",
    "Runtime": "edge_min.runtime",
    "Paths": "edge_min.runtime",
    "SystemClock": "edge_min.clock",
    "VirtualClock": "edge_min.clock",
}

__all__ = ["__version__", *sorted(_EXPORTS)]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'edge_min' has no attribute {name!r}")
    return getattr(import_module(module), name)
