"""Agents: their registry, the executors that run them, and the isolation policy.

Import-light on purpose: import ``edge_min.agents.executors``, ``.isolation`` or
``.registry`` for what you need; nothing here runs at import time.
"""

from __future__ import annotations
