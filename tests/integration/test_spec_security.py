"""The spec's edge-security.yaml as a new user meets it: certificates, TLS and auth methods.

Its ``encryption.communication`` names certificate files under /etc/meta-agent/certs/ and its
``authentication.method`` is ``certificate``: local commands work without those files, the
runtime refuses to start with one line naming the missing file and the command that makes it,
``edge-min init --security`` makes the files where the config names them, and then the API
serves TLS, takes client certificates (the device's own is admin) and refuses bearer tokens.
"""

from __future__ import annotations

import json
import signal
import ssl
import stat
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from edge_min.security.certs import issue_device_cert
from edge_min.security.tls import client_context
from tests.conftest import SPEC_CONFIGS, edge_min_cmd, free_port, run_cli

SPEC_CERTS = "/etc/meta-agent/certs"


def data_dir(tmp_path: Path, certs: Path | None, port: int = 0) -> Path:
    """A data directory with the spec's edge-security.yaml (certs moved to ``certs``)."""
    data = tmp_path / "data"
    data.mkdir()
    text = (SPEC_CONFIGS / "edge-security.yaml").read_text()
    assert SPEC_CERTS in text
    if certs is not None:
        text = text.replace(SPEC_CERTS, str(certs))
    (data / "edge-security.yaml").write_text(text)
    (data / "edge-config.yaml").write_text(
        "sync: {central_url: 'http://127.0.0.1:9'}\n"
        "security: {secure_boot: false}\n"
        f"api: {{port: {port}}}\n"
    )
    return data


def test_local_commands_need_no_certificates_and_run_names_the_missing_one(
    tmp_path: Path,
) -> None:
    if Path(SPEC_CERTS).exists():
        pytest.skip(f"{SPEC_CERTS} exists on this machine")
    data = data_dir(tmp_path, None)
    listed = run_cli("--data-dir", str(data), "workflow", "list")
    assert listed.returncode == 0, listed.stderr
    assert json.loads(listed.stdout) == []
    started = run_cli("--data-dir", str(data), "run", timeout=60)
    assert started.returncode != 0
    errors = [line for line in started.stderr.splitlines() if "error" in line]
    assert len(errors) == 1, started.stderr
    assert f"{SPEC_CERTS}/" in errors[0] and "does not exist" in errors[0]
    assert "edge-min init --security" in errors[0]


def test_api_tls_false_with_certificate_method_is_a_config_error(tmp_path: Path) -> None:
    data = data_dir(tmp_path, tmp_path / "certs")
    cfg = data / "edge-config.yaml"
    cfg.write_text(cfg.read_text().replace("api: {port: 0}", "api: {port: 0, tls: false}"))
    checked = run_cli("--data-dir", str(data), "workflow", "list")
    assert checked.returncode != 0
    assert "api.tls: is false" in checked.stderr
    assert "method: certificate" in checked.stderr and "method: token" in checked.stderr


def test_init_security_makes_the_named_files_then_tls_takes_certificates_only(
    tmp_path: Path,
) -> None:
    certs = tmp_path / "certs"
    port = free_port()
    data = data_dir(tmp_path, certs, port)
    made = run_cli("--data-dir", str(data), "init", "--security", "--device-id", "gw-7")
    assert made.returncode == 0, made.stderr
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in certs.iterdir()}
    assert modes == {
        "ca.crt": 0o644,
        "ca.key": 0o600,
        "central.crt": 0o644,
        "central.key": 0o600,
        "device.crt": 0o644,
        "device.key": 0o600,
    }
    again = run_cli("--data-dir", str(data), "init", "--security")
    assert again.returncode != 0 and "refusing to overwrite" in again.stderr
    console = issue_device_cert(certs, "ops-console", tmp_path / "console")

    proc = subprocess.Popen(
        [*edge_min_cmd(), "--data-dir", str(data), "run"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = ""
        while "API on" not in line:
            line = proc.stdout.readline()
            assert line, "the runtime exited"
        url = f"https://127.0.0.1:{port}"
        assert url in line, line
        as_device = client_context(certs / "device.crt", certs / "device.key", certs / "ca.crt")
        status, body = _call(url + "/workflows", as_device, method="GET")
        assert (status, body) == (200, [])
        # the device's own certificate administers it: a write is allowed
        status, body = _call(url + "/workflows", as_device, data=b"name: x\nsteps: []\n")
        assert status != 403, body
        # a certificate the config does not map has no role
        as_console = client_context(
            console["device_cert"], console["device_key"], console["ca_cert"]
        )
        status, body = _call(url + "/workflows", as_console, method="GET")
        assert status == 403 and "certificate_roles" in body["error"]["message"]
        # a bearer token is refused by name, even a valid admin one
        token = run_cli("--data-dir", str(data), "token", "issue", "--role", "admin")
        assert token.returncode == 0, token.stderr
        anonymous = client_context(None, None, certs / "ca.crt")
        status, body = _call(
            url + "/workflows",
            anonymous,
            method="GET",
            headers={"Authorization": "Bearer " + token.stdout.strip()},
        )
        assert status == 401 and body["error"]["code"] == "token_not_accepted"
        # the CLI asks the running runtime with the device certificate
        health = run_cli("--data-dir", str(data), "health", "--json")
        assert health.returncode in (0, 1), health.stderr
        assert "checks" in json.loads(health.stdout)
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) == 0


def _call(
    url: str,
    context: ssl.SSLContext,
    *,
    method: str = "POST",
    data: bytes | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, object]:
    req = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    deadline = time.monotonic() + 10
    while True:
        try:
            with urllib.request.urlopen(req, context=context, timeout=10) as resp:
                return resp.status, json.loads(resp.read())
        except urllib.error.HTTPError as err:
            return err.code, json.loads(err.read())
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)
