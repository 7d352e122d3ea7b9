"""Every ``attestation.*`` key of edge-security.yaml is acted on: enabled, method, interval,
server. The device talks to an in-process central (``RouterTransport``) on a virtual clock."""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from edge_min.central.app import CentralApp
from edge_min.central.store import CentralStore, open_central_store
from edge_min.clock import VirtualClock
from edge_min.config import load_config
from edge_min.runtime import Paths, Runtime
from edge_min.security.attestation import Attestation
from edge_min.security.tamper import Tamper
from edge_min.subsystem import Subsystem
from edge_min.subsystems import SUBSYSTEMS
from edge_min.sync.commands import load_sync_key
from edge_min.sync.transport import RouterTransport
from tests.conftest import run_cli

SHA_A = "a" * 64
SHA_B = "b" * 64


class Measures(Subsystem):
    """A measurement provider (the tamper subsystem's interface) the test can change."""

    name = "measures"
    values: dict[str, dict[str, str]] = {}

    def measurements(self, fresh: bool = False) -> Mapping[str, Mapping[str, str]]:
        return self.values


class World:
    """A runtime, its central and what the transport factory was asked for."""

    def __init__(self, tmp_path: Path, attestation: str, edge_security: str = "") -> None:
        conf = tmp_path / "conf"
        conf.mkdir()
        (conf / "edge-config.yaml").write_text(
            "runtime: {offline_mode: never}\nsync: {central_url: 'http://192.0.2.1:1'}\n"
            + (f"security: {edge_security}\n" if edge_security else "")
        )
        (conf / "edge-security.yaml").write_text(
            f"attestation: {attestation}\n" if attestation else "{}\n"
        )
        self.config = load_config(conf)
        self.paths = Paths.resolve(self.config, tmp_path / "edge")
        self.central: CentralStore = open_central_store(f"sqlite:///{tmp_path / 'c.db'}")
        self.app = CentralApp(self.central, shared_key=load_sync_key(self.paths.root))
        self.urls: list[str] = []
        self.paths_asked: list[str] = []
        self.clock = VirtualClock()
        Measures.values = {"fs": {"model.onnx": SHA_A}}
        i = SUBSYSTEMS.index(Tamper)  # before it: Measures is the provider Attestation finds
        self.rt = Runtime(
            self.config,
            self.paths,
            clock=self.clock,
            transport=self.transport,
            subsystems=(*SUBSYSTEMS[:i], Measures, *SUBSYSTEMS[i:]),
        ).open()

    def transport(self, cfg: Any, node: str) -> Any:
        self.urls.append(cfg.sync.central_url)
        inner = RouterTransport(self.app.router(), node)
        asked = self.paths_asked

        class Counting:
            def request(self, method: str, path: str, *rest: Any) -> Any:
                asked.append(path)
                return inner.request(method, path, *rest)

            def close(self) -> None:
                inner.close()

        return Counting()

    def run(self, seconds: float, step: float = 1.0) -> None:
        t = 0.0
        while t < seconds:
            self.rt.tick()
            self.clock.advance(step)
            t += step

    @property
    def attestation(self) -> Attestation:
        return self.rt.get(Attestation)

    def close(self) -> None:
        self.rt.close()
        self.central.close()


@pytest.fixture
def world(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[World]:
    param = request.param
    w = World(tmp_path, *param) if isinstance(param, tuple) else World(tmp_path, param)
    yield w
    w.close()


def attestation_jobs(w: World) -> dict[str, float | None]:
    return {
        name: w.rt.scheduler.get(name).every  # type: ignore[union-attr]
        for name in ("attestation.attest", "attestation.poll", "attestation.local")
        if w.rt.scheduler.get(name) is not None
    }


@pytest.mark.parametrize(
    "world",
    ["{enabled: false}", ("", "{attestation_enabled: false}")],  # edge-security or edge-config
    indirect=True,
)
def test_enabled_false_attests_nothing(world: World) -> None:
    world.run(10)
    assert attestation_jobs(world) == {}
    assert not (world.paths.root / "keys" / "attestation.key").exists()
    assert not [p for p in world.paths_asked if "attestation" in p]
    assert world.rt.status()["attestation"]["enabled"] is False


@pytest.mark.parametrize("world", ["{method: remote, interval: 2h}"], indirect=True)
def test_remote_quotes_at_start_and_every_interval(world: World) -> None:
    assert attestation_jobs(world) == {"attestation.attest": 7200.0, "attestation.poll": 300.0}
    world.run(2)
    assert world.attestation.state["result"] == "pass"
    assert (world.paths.root / "keys" / "attestation.key").exists()
    quotes = lambda: world.paths_asked.count("/api/attestation/quote")  # noqa: E731
    assert quotes() == 1
    world.run(3600, step=60)
    assert quotes() == 1  # the poll runs, but central asks nothing
    assert world.paths_asked.count("/api/attestation/pending") >= 10
    world.run(3700, step=60)
    assert quotes() == 2


@pytest.mark.parametrize("world", ["{method: remote, server: null}"], indirect=True)
def test_server_null_is_the_sync_central(world: World) -> None:
    world.run(2)
    assert set(world.urls) == {"http://192.0.2.1:1"}
    assert world.attestation.state["server"] == "http://192.0.2.1:1"


@pytest.mark.parametrize(
    "world", ["{method: remote, server: 'https://attest.example.com/'}"], indirect=True
)
def test_a_server_of_its_own(world: World) -> None:
    world.run(2)
    # Sync's transport goes to the sync central, attestation's to its server.
    assert sorted(world.urls) == ["http://192.0.2.1:1", "https://attest.example.com/"]
    assert world.attestation.state["server"] == "https://attest.example.com/"


@pytest.mark.parametrize("world", ["{method: local, interval: 10m}"], indirect=True)
def test_local_compares_on_the_device(world: World, tmp_path: Path) -> None:
    assert attestation_jobs(world) == {"attestation.local": 600.0}
    world.run(2)
    state = world.attestation.state
    assert state["result"] == "pass" and "first check" in state["policy"]
    assert not [p for p in world.paths_asked if "attestation" in p]  # no server involved
    assert not (world.paths.root / "keys" / "attestation.key").exists()
    check = world.attestation.health_checks()["attestation"]
    assert check()[0] is True
    Measures.values = {"fs": {"model.onnx": SHA_B}}
    world.run(601, step=10)
    assert state["result"] == "fail" and state["reason"] == "fs: changed model.onnx"
    assert check() == (False, "attestation: fs: changed model.onnx")
    # edge-min status shows it, from the store.
    world.rt.close()
    res = run_cli("--data-dir", str(world.paths.root), "status")
    assert res.returncode == 0, res.stderr
    shown = json.loads(res.stdout)["attestation"]
    assert shown["result"] == "fail" and shown["method"] == "local"
    world.rt = Runtime(world.config, world.paths, clock=world.clock, transport=world.transport)
    world.rt.open()
