"""Sync from a tab to a real central, in Debian's Chromium.

The bundle of ``make web`` is served by a real ``python -m http.server`` on one port; a real
``CentralServer`` on another port of 127.0.0.1 allows that page's origin (CORS,
``edge_min.api.cors``). The tab is configured with ``edgeMin.configure`` and syncs with
``edgeMin.syncNow`` over synchronous XMLHttpRequest in its worker
(``targets.browser.transport``). What central holds is read from its own store. Between
the syncs central is stopped (the tab keeps working and queues), the tab is reloaded, and
central comes back on the same database: every run must be there exactly once.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from edge_min.central.server import CentralServer
from edge_min.central.store import open_central_store
from tests.conftest import free_port
from tests.targets.test_web import (  # noqa: F401  (fixtures, used by name)
    Tab,
    add_words,
    browser,
    bundle,
    site,
    tab,
)

pytestmark = [pytest.mark.web, pytest.mark.slow]

DEVICE = "tab-sync-1"


class Central:
    """A real central on a fixed port of 127.0.0.1, stopped and started on the same db."""

    def __init__(self, db: Path, origin: str) -> None:
        self.db = db
        self.origin = origin
        self.port = free_port()
        self.server: CentralServer | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        store = open_central_store(str(self.db))
        self.server = CentralServer(
            store, "127.0.0.1", self.port, allowed_origins=[self.origin]
        ).start()

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()
            self.server = None

    def runs(self) -> dict[str, int]:
        """Execution id -> how many records central holds for it (read from its database)."""
        with sqlite3.connect(self.db) as db:
            rows = db.execute(
                "SELECT id, COUNT(*) FROM records WHERE entity = 'workflow_executions' GROUP BY id"
            ).fetchall()
        return {str(i): int(n) for i, n in rows}

    def storage(self, device: str, seconds: float = 30) -> dict[str, Any]:
        """The storage the device last reported (``GET /api/devices``' field), once it has."""
        assert self.server is not None
        deadline = time.monotonic() + seconds
        while True:
            rows = self.server.store.list_inventory(after=None, limit=100)
            found = {r["id"]: r.get("storage") for r in rows}
            if found.get(device) is not None:
                return dict(found[device])
            assert time.monotonic() < deadline, f"no storage report from {device}: {found}"
            time.sleep(0.2)

    def record(self, run_id: str) -> dict[str, Any]:
        assert self.server is not None
        for rec in self.server.store.pull("workflow_executions", 0, 1000):
            if rec["id"] == run_id:
                return rec
        raise AssertionError(f"central has no record of run {run_id}")


@pytest.fixture
def central(tmp_path: Path, site: str) -> Iterator[Central]:  # noqa: F811
    server = Central(tmp_path / "central.db", site.rstrip("/"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


def run_words(tab: Tab, texts: list[str]) -> list[str]:  # noqa: F811
    ids = []
    for text in texts:
        run = tab.ok("wait", tab.ok("run", "words", {"text": text}))
        assert run["status"] == "succeeded", run
        ids.append(run["id"])
    return ids


def test_runs_sync_to_central_once_across_an_outage_and_a_reload(
    tab: Tab,  # noqa: F811
    central: Central,
) -> None:
    tab.open()
    add_words(tab)
    refused = tab.call("syncNow")["error"]
    assert refused["code"] == "sync_unavailable" and "configure" in refused["message"]
    settings = tab.ok(
        "configure", {"central_url": central.url, "device_id": DEVICE, "encryption": False}
    )
    assert settings == {
        "central_url": central.url,
        "device_id": DEVICE,
        "token": None,
        "encryption": False,
    }
    status = tab.ok("status")
    assert status["central"]["central_url"] == central.url
    print(f"\nsync bridge: {status['sync_bridge']}")

    first = run_words(tab, [f"first batch number {i}" for i in range(5)])
    started = time.monotonic()
    done = tab.ok("syncNow")
    first_sync_s = time.monotonic() - started
    report = done["report"]
    assert report["ok"], report
    # No zstandard in the tab: it offers zlib, and every request went over the XHR.
    assert done["transport"]["accept"] == "zlib, none", done["transport"]
    assert done["transport"]["requests"] >= 2 and done["transport"]["failures"] == 0
    assert report["entities"]["workflow_executions"]["accepted"] >= 5, report
    held = central.runs()
    assert set(first) <= set(held) and all(n == 1 for n in held.values()), held
    rec = central.record(first[0])
    assert rec["origin"] == DEVICE and rec["row"]["status"] == "succeeded", rec
    # The device's report tells central what the page knows of the tab's storage.
    storage = central.storage(DEVICE)
    assert storage["backend"] == "idbfs" and isinstance(storage["persisted"], bool), storage
    assert storage["quota"] > 0 and storage["usage"] >= 0, storage
    assert storage["persisted"] == status["browser"]["persisted"]
    # The second sync has nothing new to push.
    again = tab.ok("syncNow")
    assert again["report"]["ok"]
    assert again["report"]["entities"]["workflow_executions"]["pushed"] == 0, again

    # Central goes away: the tab keeps running workflows, a sync reports the link failure
    # (it does not reject), and the work waits.
    central.stop()
    second = run_words(tab, [f"while central is down {i}" for i in range(5)])
    outage = tab.ok("syncNow")
    down = outage["report"]
    assert not down["ok"]
    codes = {e["error_code"] for e in down["entities"].values() if not e["ok"]}
    assert codes == {"sync_transport"}, down
    # The configuration and the queued work survive a reload.
    status = tab.reload()
    assert status["central"]["device_id"] == DEVICE
    third = run_words(tab, ["after the reload"])

    central.start()  # the same database
    started = time.monotonic()
    back = tab.ok("syncNow")
    catch_up_s = time.monotonic() - started
    assert back["report"]["ok"], back
    held = central.runs()
    every = [*first, *second, *third]
    assert set(every) <= set(held), (set(every) - set(held), back)
    assert all(held[i] == 1 for i in every), held
    assert len(held) == len(every), held  # nothing else was pushed (or pushed twice)
    assert central.record(third[0])["row"]["status"] == "succeeded"
    print(
        f"\nsync timings: first sync of 5 runs {first_sync_s * 1000:.0f} ms "
        f"(worker {done['took_ms']} ms), catch-up of 6 runs {catch_up_s * 1000:.0f} ms "
        f"(worker {back['took_ms']} ms), a sync with central down: worker {outage['took_ms']} ms"
    )


def test_of_two_tabs_only_the_leader_syncs_and_both_runs_arrive_once(
    tab: Tab,  # noqa: F811
    central: Central,
) -> None:
    tab.open()
    add_words(tab)
    second = Tab(tab.context, tab.url)
    assert second.open()["tab"]["role"] == "follower"
    # Every request either page (or its worker) makes to central, by page.
    to_central: dict[str, list[str]] = {"first": [], "second": []}
    for name, page in (("first", tab.page), ("second", second.page)):
        page.on(
            "request",
            lambda r, name=name: (
                to_central[name].append(r.url) if r.url.startswith(central.url) else None
            ),
        )
    # The follower configures and syncs; the leader's runtime is the one that does it.
    second.ok("configure", {"central_url": central.url, "device_id": DEVICE, "encryption": False})
    ids = run_words(tab, ["from the first tab"]) + run_words(second, ["from the second tab"])
    done = second.ok("syncNow")
    assert done["report"]["ok"], done
    assert tab.ok("status")["central"]["device_id"] == DEVICE
    held = central.runs()
    assert set(held) == set(ids) and all(n == 1 for n in held.values()), held
    assert to_central["first"] and not to_central["second"], to_central

    # The leader closes: the follower takes over and syncs from then on, with the same
    # settings and without pushing anything twice.
    tab.page.close()
    assert second.ok("status")["tab"]["role"] == "leader"
    ids += run_words(second, ["after the takeover"])
    again = second.ok("syncNow")
    assert again["report"]["ok"], again
    held = central.runs()
    assert set(held) == set(ids) and all(n == 1 for n in held.values()), held
    assert to_central["second"]


def test_payloads_are_encrypted_with_webcrypto_under_the_key_central_holds(
    tab: Tab,  # noqa: F811
    central: Central,
) -> None:
    device, key = "tab-sync-2", bytes(range(32))
    assert central.server is not None
    central.server.store.provision_device(device, sync_key=key)
    tab.open()
    add_words(tab)
    bridge = tab.ok("status")["sync_bridge"]
    assert bridge == {"transport": "xhr", "run_sync": True, "aes": "webcrypto"}, bridge
    bad = tab.call("configure", {"central_url": central.url, "sync_key": "abcd"})["error"]
    assert bad["code"] == "usage_error" and "64 hex digits" in bad["message"], bad
    # A key central does not hold for this device: its answers do not decrypt; nothing lands.
    tab.ok("configure", {"central_url": central.url, "device_id": device, "sync_key": "11" * 32})
    ids = run_words(tab, ["kept secret"])
    wrong = tab.ok("syncNow")["report"]
    assert not wrong["ok"], wrong
    assert central.runs() == {}
    # Central's key: central insists on encrypted frames from this device (it holds a key for
    # it) and decrypts them, so the run arrives whole.
    tab.ok("configure", {"central_url": central.url, "device_id": device, "sync_key": key.hex()})
    ids += run_words(tab, ["kept secret too"])
    done = tab.ok("syncNow")
    assert done["report"]["ok"], done
    assert set(ids) <= set(central.runs())
    rec = central.record(ids[0])
    assert rec["origin"] == device and rec["row"]["status"] == "succeeded", rec
    print(f"\nencrypted sync of 2 runs: worker {done['took_ms']} ms")


def test_a_central_that_does_not_allow_the_page_is_a_link_failure(
    tab: Tab,  # noqa: F811
    tmp_path: Path,
) -> None:
    other = Central(tmp_path / "other.db", "http://127.0.0.1:1")  # not this page's origin
    other.start()
    try:
        tab.open()
        tab.ok("configure", {"central_url": other.url, "encryption": False})
        report = tab.ok("syncNow")["report"]
        assert not report["ok"]
        assert {r["error_code"] for r in report["entities"].values()} == {"sync_transport"}
        assert other.runs() == {}
    finally:
        other.stop()
