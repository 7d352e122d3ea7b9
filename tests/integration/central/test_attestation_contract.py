"""The central's attestation routes and tables on both backends (SQLite and PostgreSQL)."""

from __future__ import annotations

import hashlib
import json
import secrets
from collections.abc import Callable
from typing import Any

import pytest

from edge_min.central.server import CentralServer
from edge_min.security.quote import QUOTE_CONTENT_TYPE, AttestationKey, build_quote, public_key_of
from tests.integration.central.conftest import Client, HttpError, item

MODEL = {"filesystem_integrity": {"models/m.onnx": hashlib.sha256(b"m1").hexdigest()}}
BOOT = {"cmdline": "root=/dev/sda1 ro", "kernel": "6.1.0", "secure_boot": "enabled"}


def new_key() -> AttestationKey:
    seed = secrets.token_bytes(32)
    return AttestationKey(seed, public_key_of(seed))


def send_quote(
    client: Client,
    key: AttestationKey,
    measurements: dict[str, Any] = MODEL,
    boot: dict[str, Any] = BOOT,
    nonce: str | None = None,
) -> tuple[int, Any, bytes]:
    nonce = nonce or client.json("POST", "/api/attestation/challenge", {})["nonce"]
    assert client.node is not None
    frame = build_quote(
        key, device_id=client.node, nonce=nonce, measurements=measurements, boot=boot, time=0.0
    )
    status, _, raw = client.request("POST", "/api/attestation/quote", frame, QUOTE_CONTENT_TYPE)
    return status, json.loads(raw), frame


def test_tofu_policy_replay_and_refused_pushes(start_central: Callable[..., CentralServer]) -> None:
    server = start_central()
    dev = Client(server.url, "dev-a")
    key = new_key()
    status, verdict, frame = send_quote(dev, key)
    assert status == 200 and verdict["result"] == "pass", verdict
    assert verdict["trust"] == "trusted"
    # The same frame again: its nonce is spent.
    status, _, raw = dev.request("POST", "/api/attestation/quote", frame, QUOTE_CONTENT_TYPE)
    assert status == 409 and json.loads(raw)["error"]["code"] == "attestation_nonce"
    # Another key for the same device: refused as a fail (trust on first use).
    status, verdict, _ = send_quote(dev, new_key())
    assert verdict["result"] == "fail" and "not the key registered" in verdict["reason"]
    assert verdict["trust"] == "untrusted"
    with pytest.raises(HttpError) as refused:
        dev.push("workflows", [item("wf-1")])
    assert refused.value.status == 403 and refused.value.code == "device_untrusted"
    # The right key and the baseline values pass again; pushes go through.
    assert send_quote(dev, key)[1]["trust"] == "trusted"
    assert dev.push("workflows", [item("wf-1")])[0]["status"] == "accepted"
    # Changed boot facts fail against the adopted baseline.
    verdict = send_quote(dev, key, boot={**BOOT, "secure_boot": "disabled"})[1]
    assert verdict["result"] == "fail" and "boot secure_boot" in verdict["reason"]
    doc = dev.json("GET", "/api/devices/dev-a/attestation?limit=3")
    assert [r["outcome"] for r in doc["results"]] == ["fail", "pass", "fail"]


def test_an_operator_policy_from_provisioning_and_update(
    start_central: Callable[..., CentralServer],
) -> None:
    server = start_central()
    op = Client(server.url, None)
    digest = MODEL["filesystem_integrity"]["models/m.onnx"]
    policy = {"measurements": {"filesystem_integrity": {"models/m.onnx": digest}}}
    with pytest.raises(HttpError) as bad:
        op.json("POST", "/api/devices/dev-b/provision", {"attestation_policy": {"x": 1}})
    assert bad.value.code == "bad_provisioning" and "unknown field(s) ['x']" in str(bad.value)
    op.json("POST", "/api/devices/dev-b/provision", {"attestation_policy": policy})
    dev = Client(server.url, "dev-b")
    assert dev.json("GET", "/api/attestation/pending")["requested"] is True
    key = new_key()
    new = {"filesystem_integrity": {"models/m.onnx": hashlib.sha256(b"m2").hexdigest()}}
    verdict = send_quote(dev, key, measurements=new)[1]
    assert verdict["result"] == "fail" and "changed models/m.onnx" in verdict["reason"]
    # An update carries the new accepted values; then the new model passes.
    op.json(
        "POST",
        "/api/devices/dev-b/update",
        {
            "version": "2",
            "attestation_policy": {
                "measurements": {
                    "filesystem_integrity": {
                        "models/m.onnx": [digest, new["filesystem_integrity"]["models/m.onnx"]]
                    }
                }
            },
        },
    )
    assert send_quote(dev, key, measurements=new)[1]["result"] == "pass"
    doc = op.json("GET", "/api/devices/dev-b/attestation")
    assert doc["policy"]["source"] == "operator" and doc["key"]["source"] == "first_quote"


def test_a_nonce_is_for_its_device_only(start_central: Callable[..., CentralServer]) -> None:
    server = start_central()
    nonce = Client(server.url, "dev-c").json("POST", "/api/attestation/challenge", {})["nonce"]
    status, doc, _ = send_quote(Client(server.url, "dev-d"), new_key(), nonce=nonce)
    assert status == 409 and "not issued to this device" in doc["error"]["message"]
    # A quote naming another device than the caller is refused outright.
    dev = Client(server.url, "dev-c")
    frame = build_quote(
        new_key(), device_id="dev-d", nonce=nonce, measurements={}, boot={}, time=0.0
    )
    status, _, raw = dev.request("POST", "/api/attestation/quote", frame, QUOTE_CONTENT_TYPE)
    assert status == 403 and json.loads(raw)["error"]["code"] == "attestation_device_mismatch"
