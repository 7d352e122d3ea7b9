"""Remote attestation end to end: a real runtime quotes to a real central over mutual TLS.

The device's measurements are the tamper subsystem's (``filesystem_integrity``: the config
files, and the model file of the registered agent ``classifier``), measured again for each
quote; its response is ``log`` here, so a changed model is for central to judge.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import ssl
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from edge_min.central.server import CentralServer
from edge_min.central.store import open_central_store
from edge_min.clock import VirtualClock
from edge_min.config import load_config
from edge_min.config.agent import load_agent_config
from edge_min.runtime import Paths, Runtime
from edge_min.security.attestation import Attestation, stored_status
from edge_min.security.certs import init_certs
from edge_min.security.quote import QUOTE_CONTENT_TYPE, build_quote, load_attestation_key
from edge_min.security.tls import client_context, server_context
from edge_min.subsystem import remeasured
from edge_min.sync.commands import load_sync_key

DEVICE = "gw-1"
WORKFLOW = "name: w\nversion: '1'\nsteps: [{id: s, agent: noop}]\n"


@dataclass
class Setup:
    root: Path
    certs: dict[str, Path]
    central: CentralServer
    central_clock: VirtualClock
    clock: VirtualClock
    runtime: Runtime

    @property
    def data(self) -> Path:
        return self.runtime.paths.root

    @property
    def model(self) -> Path:
        return self.data / "models" / "classifier.onnx"

    def tick(self, seconds: float = 6.0, step: float = 1.0) -> None:
        t = 0.0
        while t <= seconds:
            self.runtime.tick()
            self.clock.advance(step)
            t += step

    def attest(self) -> dict[str, Any]:
        self.runtime.get(Attestation).request_attestation()
        self.tick(1.0)
        return dict(self.runtime.get(Attestation).state)

    def operator(self, method: str, path: str, body: bytes | None = None) -> tuple[int, Any]:
        """A request to central over mutual TLS (the device's certificate)."""
        return https(self.central, self.certs, method, path, body)


def https(
    central: CentralServer,
    certs: dict[str, Path],
    method: str,
    path: str,
    body: bytes | None = None,
    ctype: str = "application/json",
) -> tuple[int, Any]:
    ctx = client_context(certs["device_cert"], certs["device_key"], certs["ca_cert"])
    host, port = central.address
    conn = http.client.HTTPSConnection(host, port, context=ctx, timeout=10)
    try:
        conn.request(method, path, body=body, headers={"Content-Type": ctype})
        resp = conn.getresponse()
        return resp.status, json.loads(resp.read() or b"null")
    finally:
        conn.close()


def start(root: Path, certs: dict[str, Path], **central_options: Any) -> CentralServer:
    clock = central_options.pop("clock")
    ctx: ssl.SSLContext = server_context(
        certs["central_cert"], certs["central_key"], certs["ca_cert"]
    )
    store = open_central_store(f"sqlite:///{root / 'central.db'}", clock=clock)
    paths_root = root / "edge"
    return CentralServer(
        store,
        "127.0.0.1",
        0,
        ssl_context=ctx,
        shared_key=load_sync_key(paths_root),
        **central_options,
    ).start()


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return init_certs(tmp_path_factory.mktemp("certs"), device_id=DEVICE)


def make_setup(tmp_path: Path, certs: dict[str, Path], **central_options: Any) -> Setup:
    central_clock = VirtualClock()
    central = start(tmp_path, certs, clock=central_clock, **central_options)
    conf = tmp_path / "conf"
    conf.mkdir()
    (conf / "edge-config.yaml").write_text(
        f"runtime: {{offline_mode: never}}\nsync: {{central_url: '{central.url}'}}\n"
    )
    (conf / "edge-security.yaml").write_text(
        "encryption:\n  communication:\n"
        f"    certificate_path: {certs['device_cert']}\n"
        f"    key_path: {certs['device_key']}\n"
        f"    ca_path: {certs['ca_cert']}\n"
        "attestation: {enabled: true, method: remote, interval: 1h, server: null}\n"
        "tamper_detection: {checks: [filesystem_integrity], response: log, interval: 1h}\n"
    )
    config = load_config(conf)
    model = tmp_path / "edge" / "models" / "classifier.onnx"
    model.parent.mkdir(parents=True, exist_ok=True)
    model.write_bytes(b"model v1")
    agent = conf / "classifier.yaml"
    agent.write_text(
        f"name: classifier\nversion: 1.0.0\nmodel: {{path: '{model}'}}\n"
        "runtime: {executor: command, command: cat}\n"
        "input: {format: json}\noutput: {format: json}\n"
    )
    clock = VirtualClock()
    rt = Runtime(config, Paths.resolve(config, tmp_path / "edge"), clock=clock).open()
    rt.agents.add(load_agent_config(agent))
    remeasured(rt, "filesystem_integrity", "test")  # as `agent add` does
    return Setup(tmp_path, certs, central, central_clock, clock, rt)


@pytest.fixture
def setup(tmp_path: Path, certs: dict[str, Path]) -> Iterator[Setup]:
    s = make_setup(tmp_path, certs, attestation_max_age=3600.0)
    yield s
    s.runtime.close()
    s.central.stop()


def test_first_contact_registers_the_key_and_passes(setup: Setup) -> None:
    setup.tick(1.0)  # attestation.attest is due at start
    state = setup.runtime.get(Attestation).state
    assert state["result"] == "pass" and state["trust"] == "trusted", state
    assert state["measured_by"] == "tamper"
    status, doc = setup.operator("GET", f"/api/devices/{DEVICE}/attestation")
    assert status == 200, doc
    assert doc["trust"] == "trusted"
    assert doc["key"]["source"] == "first_quote"
    assert doc["key"]["fingerprint"] == state["key"]
    assert doc["policy"]["source"] == "first_quote"
    digest = hashlib.sha256(b"model v1").hexdigest()
    measured = doc["policy"]["values"]["measurements"]
    assert list(measured) == ["filesystem_integrity"]
    assert measured["filesystem_integrity"][str(setup.model)] == digest
    assert str(setup.root / "conf" / "edge-security.yaml") in measured["filesystem_integrity"]
    assert doc["results"][0]["outcome"] == "pass"
    # The device's registry entry shows its trust.
    assert setup.operator("GET", f"/api/devices/{DEVICE}")[1]["attestation"]["trust"] == "trusted"


def test_a_changed_model_file_fails_and_its_pushes_are_refused_until_it_passes(
    setup: Setup,
) -> None:
    setup.tick(1.0)
    model = setup.model
    model.write_bytes(b"model v2, tampered")
    state = setup.attest()  # measured again for the quote: no wait for the timed check
    assert state["result"] == "fail", state
    assert f"filesystem_integrity: changed {model}" in state["reason"]
    assert state["trust"] == "untrusted"
    doc = setup.operator("GET", f"/api/devices/{DEVICE}/attestation")[1]
    assert doc["trust"] == "untrusted" and f"changed {model}" in doc["trust_reason"]
    assert [r["outcome"] for r in doc["results"]] == ["fail", "pass"]
    # Sync pushes are refused (by default), and the device says so.
    setup.runtime.engine.add_workflow(WORKFLOW)
    sync = setup.runtime.sync
    assert sync is not None
    sync.restart()
    setup.tick(6.0)
    sync_status = sync.status()
    assert sync_status["refused"]["code"] == "device_untrusted", sync_status
    assert "untrusted" in sync_status["refused"]["message"]
    assert setup.runtime.status()["attestation"]["sync_refused"] == "device_untrusted"
    assert stored_status(setup.runtime.store)["trust"] == "untrusted"  # edge-min status
    health = setup.runtime.get(Attestation).health_checks()["attestation"]()
    assert health[0] is False
    # Putting the model back passes again, and the refused pushes go through at once.
    model.write_bytes(b"model v1")
    assert setup.attest()["trust"] == "trusted"
    setup.tick(6.0)
    assert sync.status()["refused"] is None, sync.status()
    assert sync.status()["status"] == "success", sync.status()


def test_a_replayed_quote_is_refused(setup: Setup) -> None:
    setup.tick(1.0)
    key = load_attestation_key(setup.data)
    status, challenge = setup.operator("POST", "/api/attestation/challenge", b"{}")
    assert status == 200, challenge
    quote = build_quote(
        key,
        device_id=DEVICE,
        nonce=challenge["nonce"],
        measurements=setup.runtime.get(Attestation).measure(),
        boot=setup.runtime.get(Attestation).boot_facts(),
        time=setup.clock.time(),
    )
    post = lambda: https(  # noqa: E731
        setup.central, setup.certs, "POST", "/api/attestation/quote", quote, QUOTE_CONTENT_TYPE
    )
    status, first = post()
    assert status == 200 and first["result"] == "pass", first
    status, again = post()
    assert status == 409, again
    assert again["error"]["code"] == "attestation_nonce"
    assert "replayed quote" in again["error"]["message"]
    # A refusal is recorded but leaves the trust as it was.
    doc = setup.operator("GET", f"/api/devices/{DEVICE}/attestation")[1]
    assert doc["results"][0]["outcome"] == "refused" and doc["trust"] == "trusted"


def test_an_overdue_device_is_untrusted_asked_and_trusted_again(setup: Setup) -> None:
    setup.tick(1.0)
    setup.central_clock.advance(3601.0)  # past attestation_max_age
    doc = setup.operator("GET", f"/api/devices/{DEVICE}")[1]
    assert doc["attestation"]["trust"] == "untrusted"
    assert doc["attestation"]["reason"].startswith("overdue")
    status, pending = setup.operator("GET", "/api/attestation/pending")
    assert status == 200 and pending["requested"] is True, pending
    # The device polls every sync interval (300 s) and attests when asked.
    setup.tick(301.0, step=5.0)
    assert setup.runtime.get(Attestation).state["trust"] == "trusted"
    assert setup.operator("GET", f"/api/devices/{DEVICE}")[1]["attestation"]["trust"] == "trusted"


def test_central_asks_and_the_device_answers_at_its_next_poll(setup: Setup) -> None:
    setup.tick(1.0)
    status, asked = setup.operator("POST", f"/api/devices/{DEVICE}/attestation")
    assert status == 202, asked
    assert setup.operator("GET", "/api/attestation/pending")[1]["requested"] is True
    setup.tick(301.0, step=5.0)
    doc = setup.operator("GET", f"/api/devices/{DEVICE}/attestation")[1]
    assert doc["requested_at"] is None
    assert [r["outcome"] for r in doc["results"]] == ["pass", "pass"]


def test_untrusted_pushes_are_accepted_when_central_allows_them(
    tmp_path: Path, certs: dict[str, Path]
) -> None:
    s = make_setup(tmp_path, certs, refuse_untrusted=False)
    try:
        s.tick(1.0)
        s.model.write_bytes(b"other")
        assert s.attest()["trust"] == "untrusted"
        s.runtime.engine.add_workflow(WORKFLOW)
        assert s.runtime.sync is not None
        s.runtime.sync.restart()
        s.tick(6.0)
        assert s.runtime.sync.status()["status"] == "success", s.runtime.sync.status()
        assert s.runtime.sync.status()["refused"] is None
        doc = s.operator("GET", f"/api/devices/{DEVICE}/attestation")[1]
        assert doc["trust"] == "untrusted" and doc["refuse_untrusted_sync"] is False
    finally:
        s.runtime.close()
        s.central.stop()


@pytest.mark.parametrize(
    ("frame", "field", "says"),
    [
        (b"\xff\x00garbage", "frame", "is not CBOR"),
        (b"\x83\x01\x02\x03", "frame", "must be a CBOR map, not list"),
        ({"v": "1"}, "v", "must be int, not str"),
        ({"v": 1, "alg": "ed25519", "key": "abc"}, "key", "must be bytes, not str"),
        ({"body": {"device_id": DEVICE, "nonce": 7}}, "body.nonce", "must be str, not int"),
        (
            {"body": {"device_id": DEVICE, "nonce": "a" * 64, "measurements": []}},
            "body.measurements",
            "must be dict, not list",
        ),
    ],
)
def test_bad_quote_frames_name_the_field(setup: Setup, frame: Any, field: str, says: str) -> None:
    import cbor2

    if isinstance(frame, dict):
        good = {"v": 1, "alg": "ed25519", "key": b"k" * 32, "sig": b"s" * 64, "body": b""}
        if "body" in frame:
            frame = {**good, "body": cbor2.dumps(frame["body"])}
        else:
            frame = {**good, **frame}
        frame = cbor2.dumps(frame)
    status, doc = https(
        setup.central, setup.certs, "POST", "/api/attestation/quote", frame, QUOTE_CONTENT_TYPE
    )
    assert status == 400, doc
    assert doc["error"]["code"] == "bad_quote"
    assert f"quote field '{field}': {says}" in doc["error"]["message"]
