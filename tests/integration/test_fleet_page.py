"""The fleet page in a real Chromium, against a real central with operator tokens.

Central runs as ``python -m edge_min.central serve --operator-key-file ...`` on 127.0.0.1;
devices are seeded through its real routes (provisioning with an admin token, sync pushes
and an alert posted by the devices themselves); Playwright drives Debian's ``chromium``
(scripts/system-deps.sh installs it; Playwright's own browser download is not used). The
checks are what a person sees: the sign-in form, a refused token's message, the device
rows with their health and version, the alert, and a new alert appearing by itself.

``EDGE_MIN_SCREENSHOTS=1`` saves the signed-in page to docs/images/fleet.png.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from edge_min.sync.protocol import CONTENT_TYPE, encode_frame
from tests.conftest import ROOT, free_port

CHROMIUM = "/usr/bin/chromium"
SCREENSHOT = ROOT / "docs" / "images" / "fleet.png"
INSTALL_HINT = (
    "the fleet page test drives Debian's chromium through Playwright: install them with "
    "`bash scripts/system-deps.sh test` (apt-get install chromium) and "
    "`.venv/bin/pip install -e '.[dev]'` (playwright), or run `make test`"
)
# Long enough for a page's auto-refresh (every 5 s) on a busy two-core machine.
SEEN_WITHIN_MS = 20_000


def browser_or_fail() -> tuple[Any, Any]:
    """Playwright's ``sync_playwright`` and ``expect``; a failure naming the install commands
    when Playwright or Debian's chromium is missing (never a skip)."""
    try:
        from playwright.sync_api import expect, sync_playwright
    except ImportError:
        pytest.fail(f"playwright is not installed; {INSTALL_HINT}")
    if not os.access(CHROMIUM, os.X_OK):
        found = shutil.which("chromium")
        pytest.fail(f"{CHROMIUM} is missing (chromium on PATH: {found}); {INSTALL_HINT}")
    return sync_playwright, expect


@dataclass
class Central:
    """A central process, its URL and tokens of two roles."""

    url: str
    admin: str
    monitor: str
    log: Path
    operator: str

    def call(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        token: str | None = None,
        node: str | None = None,
        raw: bytes | None = None,
    ) -> tuple[int, Any]:
        """A real HTTP request; (status, parsed JSON)."""
        data = raw if raw is not None else None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.url + path, data=data, method=method)
        req.add_header("Content-Type", CONTENT_TYPE if raw is not None else "application/json")
        if token:
            req.add_header("Authorization", f"Bearer {token}")
        if node:
            req.add_header("X-Edge-Node", node)
        try:
            with urllib.request.urlopen(req, timeout=10) as resp:
                status, text = resp.status, resp.read()
        except urllib.error.HTTPError as err:
            status, text = err.code, err.read()
        try:
            return status, json.loads(text)
        except ValueError:
            return status, text

    def sync(self, node: str) -> None:
        """``node`` pushes one record, as a device's sync does (registering it on first contact)."""
        frame = encode_frame(
            {"kind": "push", "entity": "agents", "batch": uuid.uuid4().hex, "node": node},
            [
                {
                    "id": f"{node}-r1",
                    "base_version": None,
                    "hlc": "0001767225600000.00000." + node,
                    "row": {"id": f"{node}-r1", "name": "classifier"},
                    "field_hlcs": {},
                    "deleted": False,
                }
            ],
        )
        status, answer = self.call("POST", "/api/sync/push", node=node, raw=frame)
        assert status == 200, (node, status, answer)

    def provision(self, node: str, version: str, tags: list[str]) -> None:
        status, answer = self.call(
            "POST",
            f"/api/devices/{node}/provision",
            {"details": {"version": version, "tags": tags}},
            token=self.admin,
        )
        assert status == 200, answer

    def report(self, node: str, version: str, health: str) -> None:
        """``node`` reports itself, as a device's lifecycle subsystem does every sync cycle."""
        status, answer = self.call(
            "POST", "/api/devices/self/report", {"version": version, "health": health}, node=node
        )
        assert status == 202, answer

    def alert(self, node: str, name: str, severity: str, message: str) -> None:
        status, answer = self.call(
            "POST",
            "/api/alerts",
            {"name": name, "severity": severity, "message": message},
            node=node,
        )
        assert (status, answer) == (200, {"stored": 1})


def central_cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "edge_min.central", *args]


@pytest.fixture
def central(tmp_path: Path) -> Iterator[Central]:
    key = tmp_path / "operator.key"
    port = free_port()
    log = tmp_path / "central.log"
    proc = subprocess.Popen(
        central_cli(
            "serve",
            "--db",
            f"sqlite:///{tmp_path / 'central.db'}",
            "--port",
            str(port),
            "--workers",
            "4",
            "--operator-key-file",
            str(key),
        ),
        stdout=log.open("ab"),
        stderr=subprocess.STDOUT,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while True:
            assert proc.poll() is None, f"central exited {proc.returncode}: {log.read_text()}"
            try:
                with urllib.request.urlopen(url + "/health", timeout=1):
                    break
            except OSError:
                assert time.monotonic() < deadline, f"central not ready: {log.read_text()}"
                time.sleep(0.1)

        def token(role: str) -> str:
            out = subprocess.run(
                central_cli(
                    "token", "--operator-key-file", str(key), "--role", role, "--ttl", "1h"
                ),
                capture_output=True,
                text=True,
                check=True,
            )
            return out.stdout.strip()

        yield Central(url, token("admin"), token("monitor"), log, token("operator"))
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()


def seed(central: Central) -> None:
    """Four devices as a fleet has them: synced and reporting, alerting, provisioned but
    never seen, and seen once without provisioning or a report."""
    central.provision("gw-a-01", "1.4.2", ["hall-a", "line-1"])
    central.sync("gw-a-01")
    central.report("gw-a-01", "1.4.2", "healthy")
    central.provision("gw-b-02", "1.4.1", ["hall-b"])
    central.sync("gw-b-02")
    central.report("gw-b-02", "1.4.1", "healthy")
    central.alert("gw-b-02", "disk_full", "critical", "data disk 97% full")
    central.provision("gw-c-03", "1.4.2", ["hall-a"])  # provisioned, never connected
    central.sync("gw-d-04")  # registered on first contact, nothing provisioned


def table(page: Any, caption: str) -> list[dict[str, str]]:
    """The rows of the table whose caption is ``caption``, keyed by its column headers."""
    grid = page.get_by_role("table", name=caption)
    # The headers' text as written (the stylesheet shows them in capitals).
    headers = [h.strip() for h in grid.locator("thead th").all_text_contents()]
    rows = []
    for row in grid.locator("tbody tr").all():
        cells = [c.strip() for c in row.locator("th, td").all_inner_texts()]
        assert len(cells) == len(headers), (headers, cells)
        rows.append(dict(zip(headers, cells, strict=True)))
    return rows


def test_fleet_page_shows_the_fleet_to_a_token_and_nothing_without_one(central: Central) -> None:
    sync_playwright, expect = browser_or_fail()
    seed(central)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 860})
            api_calls: list[Any] = []
            page.on("request", lambda r: api_calls.append(r) if "/api/" in r.url else None)
            failures: list[str] = []
            page.on("pageerror", lambda exc: failures.append(f"script error: {exc}"))
            # The browser logs every 401 and 404 as a console error; answers of 500 up, and
            # script errors, are the page's failures.
            page.on(
                "response",
                lambda r: failures.append(f"{r.status} {r.url}") if r.status >= 500 else None,
            )

            # Without a token: the form, and not one data call.
            page.goto(central.url + "/fleet")
            token_box = page.get_by_label("Token", exact=True)
            expect(token_box).to_be_visible()
            expect(page.get_by_role("table", name=re.compile("Every device"))).to_be_hidden()
            page.wait_for_load_state("networkidle")
            assert api_calls == [], [r.url for r in api_calls]

            # A wrong token: refused with the central's reason, the form stays.
            token_box.fill(central.monitor[:-4] + "AAAA")
            page.get_by_role("button", name="Show the fleet").click()
            message = page.get_by_role("alert")
            expect(message).to_contain_text("Central refused the token (token_invalid)")
            expect(message).to_contain_text("edge-min central token")
            expect(token_box).to_be_visible()
            assert page.evaluate("sessionStorage.length") == 0  # a refused token is not kept

            # The monitor's token: the fleet as the API holds it.
            token_box.fill(central.monitor)
            page.get_by_role("button", name="Show the fleet").click()
            devices = page.get_by_role("table", name=re.compile("Every device"))
            expect(devices.locator("tbody tr")).to_have_count(4)
            expect(message).to_be_hidden()
            rows = {row["Device"]: row for row in table(page, "Every device central knows, by id")}
            assert set(rows) == {"gw-a-01", "gw-b-02", "gw-c-03", "gw-d-04"}
            assert (rows["gw-a-01"]["Health"], rows["gw-a-01"]["Version"]) == ("healthy", "1.4.2")
            assert (rows["gw-b-02"]["Health"], rows["gw-b-02"]["Version"]) == ("unhealthy", "1.4.1")
            assert (rows["gw-c-03"]["Health"], rows["gw-c-03"]["Last seen"]) == ("unknown", "never")
            assert (rows["gw-d-04"]["Version"], rows["gw-d-04"]["Status"]) == ("—", "active")
            assert rows["gw-a-01"]["Tags"] == "hall-a, line-1"
            assert rows["gw-a-01"]["Attestation"] == "unknown"
            assert rows["gw-a-01"]["Last seen"].endswith("s ago")
            assert rows["gw-c-03"]["Status"] == "provisioned"

            alerts = table(page, "The newest alerts devices reported")
            assert [(a["Device"], a["Severity"], a["Alert"], a["Message"]) for a in alerts] == [
                ("gw-b-02", "critical", "disk_full", "data disk 97% full")
            ]
            # No rollout was made: the section says so.
            expect(page.get_by_text("No rollouts.")).to_be_visible()

            # Every data call carried the token, and the token sits in this tab only.
            sent = {r.headers.get("authorization") for r in api_calls if "/api/devices" in r.url}
            assert sent >= {f"Bearer {central.monitor}"}, sent
            assert page.evaluate("Object.keys(localStorage).length") == 0

            # The page refreshes itself: a new alert shows without a reload.
            central.alert("gw-a-01", "temperature_high", "warning", "enclosure 71 °C")
            gw_a = devices.locator('tr[data-device="gw-a-01"]')
            expect(gw_a.get_by_text("degraded")).to_be_visible(timeout=SEEN_WITHIN_MS)
            expect(page.get_by_text("enclosure 71 °C")).to_be_visible()

            # A reload keeps the tab's token: no second sign-in.
            page.reload()
            expect(devices.locator("tbody tr")).to_have_count(4)
            expect(token_box).to_be_hidden()

            if os.environ.get("EDGE_MIN_SCREENSHOTS") == "1":
                SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
                page.screenshot(path=str(SCREENSHOT), full_page=True)

            # Forgetting the token drops it from the tab and shows the form again.
            page.get_by_role("button", name="Forget token").click()
            expect(token_box).to_be_visible()
            assert page.evaluate("sessionStorage.length") == 0
            assert failures == [], failures
        finally:
            browser.close()


def test_the_page_is_three_packaged_files_that_load_nothing_from_elsewhere(
    central: Central,
) -> None:
    for path, kind in (
        ("/fleet", "text/html"),
        ("/fleet/fleet.js", "text/javascript"),
        ("/fleet/fleet.css", "text/css"),
    ):
        with urllib.request.urlopen(central.url + path, timeout=10) as resp:
            body = resp.read().decode()
            assert resp.headers["Content-Type"].startswith(kind), path
            assert resp.headers["Content-Security-Policy"].startswith("default-src 'self'")
        assert not re.search(r"https?://", body), f"{path} refers to another origin"
    status, answer = central.call("GET", "/api/devices")
    assert status == 401 and answer["error"]["code"] == "unauthorized"


def test_rollouts_show_their_phases_and_progress_and_obey_the_buttons(central: Central) -> None:
    sync_playwright, expect = browser_or_fail()
    devices = [f"gw-r{i}" for i in range(4)]
    for node in devices:
        central.provision(node, "1.4.0", ["line-2"])
    status, bundle = central.call(
        "POST", "/api/bundles?version=1.5.0", raw=b"signed bundle bytes", token=central.admin
    )
    assert status in (200, 201), bundle
    status, rollout = central.call(
        "POST",
        "/api/rollouts",
        {
            "version": "1.5.0",
            "bundle": bundle["id"],
            "devices": {"ids": devices},
            "phases": [25, 50, 100],
            "max_failure_percent": 50,
            "min_devices": 1,
        },
        token=central.admin,
    )
    assert status in (200, 201), rollout
    rid = rollout["id"]
    # The first phase's one device takes its update and commits it: phase 2 begins.
    assigned = [
        n for n in devices if central.call("GET", "/api/updates/assigned", node=n)[0] == 200
    ]
    assert len(assigned) == 1, assigned
    for state in ("downloading", "installed", "committed"):
        status, answer = central.call(
            "POST",
            "/api/updates/state",
            {"rollout": rid, "state": state, "version": "1.5.0"},
            node=assigned[0],
        )
        assert status == 200, answer
    operator = central.operator  # read, execute: may not steer rollouts
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            page = browser.new_page()
            page.goto(central.url + "/fleet")
            page.get_by_label("Token", exact=True).fill(operator)
            page.get_by_role("button", name="Show the fleet").click()
            rollouts = page.get_by_role("table", name=re.compile("Staged rollouts"))
            expect(rollouts.locator("tbody tr")).to_have_count(1)
            (row,) = table(page, "Staged rollouts with their phases and progress")
            assert (row["Rollout"], row["Version"], row["State"]) == (rid, "1.5.0", "active")
            assert row["Phase"] == "50% (2 of 3: 25% → 50% → 100%)"
            assert row["Progress"] == "1 of 4 committed"
            expect(page.get_by_role("progressbar")).to_have_attribute("value", "1")
            expect(page.get_by_role("button", name=f"Resume rollout {rid}")).to_be_disabled()

            # The operator role may not pause: the page says so, and nothing changes.
            page.get_by_role("button", name=f"Pause rollout {rid}").click()
            expect(page.get_by_role("alert")).to_contain_text(
                f"Rollout {rid} could not pause: POST /api/rollouts/{rid}/pause needs permission"
            )
            assert (
                central.call("GET", f"/api/rollouts/{rid}", token=central.admin)[1]["status"]
                == "active"
            )

            page.get_by_role("button", name="Forget token").click()
            page.get_by_label("Token", exact=True).fill(central.admin)
            page.get_by_role("button", name="Show the fleet").click()
            page.get_by_role("button", name=f"Pause rollout {rid}").click()
            expect(rollouts.get_by_text("paused", exact=True)).to_be_visible()
            expect(page.get_by_role("button", name=f"Resume rollout {rid}")).to_be_enabled()
            page.get_by_role("button", name=f"Cancel rollout {rid}").click()
            expect(rollouts.get_by_text("cancelled", exact=True)).to_be_visible()
            for action in ("Pause", "Resume", "Cancel"):
                expect(page.get_by_role("button", name=f"{action} rollout {rid}")).to_be_disabled()
            status, shown = central.call("GET", f"/api/rollouts/{rid}", token=central.admin)
            assert shown["status"] == "cancelled"
        finally:
            browser.close()
