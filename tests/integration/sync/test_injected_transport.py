"""The sync transport is injected: a runtime syncs through whatever ``Transport`` it is given.

Here the transport hands every request to a real central's router in-process
(``RouterTransport``), so the runtime's sync subsystem, the frames, the encryption and the
central store are all real and no socket is opened: the shape a browser's fetch transport or
an MCU's socket transport plugs into.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from edge_min.central.app import CentralApp
from edge_min.central.store import open_central_store
from edge_min.clock import VirtualClock
from edge_min.config import parse_config
from edge_min.runtime import Paths, Runtime
from edge_min.sync.commands import load_sync_key
from edge_min.sync.transport import RouterTransport

WORKFLOW = "name: injected\nversion: '1'\nsteps: [{id: s, agent: noop}]\n"


def test_a_runtime_syncs_through_the_transport_it_is_given(tmp_path: Path) -> None:
    config = parse_config(
        {"runtime": {"offline_mode": "never"}, "sync": {"central_url": "http://192.0.2.1:1"}},
        source="test",
    )
    paths = Paths.resolve(config, tmp_path / "edge")
    central = open_central_store(f"sqlite:///{tmp_path / 'central.db'}")
    app = CentralApp(central, shared_key=load_sync_key(paths.root))
    asked: list[str] = []

    def transport(cfg: Any, node: str) -> RouterTransport:
        asked.append(node)
        return RouterTransport(app.router(), node)

    clock = VirtualClock()
    rt = Runtime(config, paths, clock=clock, transport=transport).open()
    try:
        rt.engine.add_workflow(WORKFLOW)
        assert rt.sync is not None
        rt.sync.restart()
        for _ in range(5):
            rt.tick()
            clock.advance(1.0)
        assert rt.sync.status()["status"] == "success", rt.sync.status()
        node = rt.store.meta.get("device.id")
        # The factory made sync's transport and attestation's, both for this device.
        assert asked == [node, node]
        records = central.pull("workflows", 0, 10)
        assert [r["row"]["name"] for r in records] == ["injected"]
    finally:
        rt.close()
        central.close()
