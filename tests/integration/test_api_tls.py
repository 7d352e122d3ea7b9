"""The local API over TLS 1.3: a client certificate maps to its configured role."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from edge_min.security.certs import init_certs, issue_device_cert
from edge_min.security.tls import client_context
from tests.conftest import free_port


def test_client_certificates_map_to_roles(tmp_path: Path) -> None:
    certs = init_certs(tmp_path / "certs", device_id="gw-1")
    monitor = issue_device_cert(tmp_path / "certs", "ops-console")
    data = tmp_path / "data"
    data.mkdir()
    port = free_port()
    (data / "edge-config.yaml").write_text(f"api: {{port: {port}, tls: true}}\n")
    (data / "edge-security.yaml").write_text(
        "encryption:\n  communication:\n    enabled: true\n    protocol: TLS 1.3\n"
        f"    certificate_path: {certs['device_cert']}\n    key_path: {certs['device_key']}\n"
        f"    ca_path: {certs['ca_cert']}\n"
        "access_control:\n  authentication:\n    method: certificate\n"
        "    certificate_roles: {ops-console: monitor}\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "edge_min.cli", "--data-dir", str(data), "run"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = ""
        while "API on" not in line:  # log lines may come first
            line = proc.stdout.readline()
            assert line, "the runtime exited"
        assert f"https://127.0.0.1:{port}" in line, line
        url = f"https://127.0.0.1:{port}"
        as_monitor = client_context(
            monitor["device_cert"], monitor["device_key"], monitor["ca_cert"]
        )
        deadline = time.monotonic() + 10
        while True:
            try:
                with urllib.request.urlopen(url + "/workflows", context=as_monitor) as resp:
                    assert resp.status == 200 and json.loads(resp.read()) == []
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        # monitor may read but not write.
        req = urllib.request.Request(url + "/workflows", data=b"name: x", method="POST")
        try:
            urllib.request.urlopen(req, context=as_monitor)
            raise AssertionError("a monitor certificate could write")
        except urllib.error.HTTPError as err:
            assert err.code == 403
        # No certificate and no token: 401 (TLS itself still works).
        anonymous = client_context(None, None, certs["ca_cert"])
        try:
            urllib.request.urlopen(url + "/workflows", context=anonymous)
            raise AssertionError("an anonymous caller got in")
        except urllib.error.HTTPError as err:
            assert err.code == 401
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) == 0
