"""The browser worker's loop under CPython: real runtime, real SQLite, a persist that copies.

``targets.browser.host.BrowserHost`` is what the Web Worker runs; here it runs on asyncio with
a ``persist()`` that copies the mount folder into a "durable" folder (what IDBFS does into
IndexedDB), so each promise of the host is checked against the copy itself: every reply the
page is posted is already in the durable copy at the moment it is posted, a failed persist
rejects what waited on it and shows in ``status()``, and a runtime opened again from the
durable copy (as after a reload or a killed renderer) has every run that was reported.
tests/targets/test_web.py checks the same in a real Chromium.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from targets.browser.host import BrowserHost, browser_config

WORKFLOW = """\
name: hello
version: 1.0.0
steps:
  - id: a
    agent: echo
    input: "${input}"
  - id: b
    agent: noop
    needs: [a]
    input: "${steps.a.output.input}"
"""


class Durable:
    """The durable side: a whole copy of the mount folder per persist, or a failure."""

    def __init__(self, mount: Path, copy: Path) -> None:
        self.mount = mount
        self.copy = copy
        self.persists = 0
        self.failing: str | None = None

    async def persist(self) -> None:
        await asyncio.sleep(0.005)  # IndexedDB answers later, never in the same turn
        if self.failing:
            raise OSError(self.failing)
        staging = self.copy.with_name("staging")
        shutil.rmtree(staging, ignore_errors=True)
        shutil.copytree(self.mount, staging)
        shutil.rmtree(self.copy, ignore_errors=True)
        staging.rename(self.copy)
        self.persists += 1

    def runs(self, scratch: Path) -> dict[str, str]:
        """Run id -> status in the durable copy (opened on a scratch copy of it)."""
        shutil.rmtree(scratch, ignore_errors=True)
        if not self.copy.exists():
            return {}
        shutil.copytree(self.copy, scratch)
        db = sqlite3.connect(scratch / "edge-data" / "meta-agent-edge.db")
        try:
            return dict(db.execute("SELECT id, status FROM workflow_executions").fetchall())
        finally:
            db.close()


class Page:
    """The page's side: calls sent, messages received, each reply checked when it arrives."""

    def __init__(self, host: BrowserHost, on_reply: Callable[[dict[str, Any]], None]) -> None:
        self.host = host
        self.on_reply = on_reply
        self.messages: list[dict[str, Any]] = []
        self.replies: dict[int, dict[str, Any]] = {}
        self.next_id = 1

    def receive(self, text: str) -> None:
        message = json.loads(text)
        self.messages.append(message)
        if message["type"] == "reply":
            self.on_reply(message)
            self.replies[message["id"]] = message

    def send(self, method: str, **params: Any) -> int:
        call_id = self.next_id
        self.next_id += 1
        self.host.receive(
            json.dumps({"type": "call", "id": call_id, "method": method, "params": params})
        )
        return call_id

    async def answer(self, call_id: int, timeout: float = 30.0) -> dict[str, Any]:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while call_id not in self.replies:
            assert loop.time() < deadline, f"no reply to call {call_id}: {self.messages[-3:]}"
            await asyncio.sleep(0.01)
        return self.replies[call_id]

    async def value(self, method: str, **params: Any) -> Any:
        reply = await self.answer(self.send(method, **params))
        assert reply["ok"], reply
        return reply["value"]


def make_host(mount: Path, durable: Durable, page_receive: Callable[[str], None]) -> BrowserHost:
    return BrowserHost(durable.persist, page_receive, mount=str(mount), backend="test-copy")


async def started(host: BrowserHost, page: Page) -> asyncio.Task[None]:
    task = asyncio.create_task(host.serve())
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 60
    while not any(m["type"] in ("ready", "fatal") for m in page.messages):
        assert not task.done() or task.exception() is None, task.exception()
        assert loop.time() < deadline, "the host never said ready"
        await asyncio.sleep(0.01)
    assert page.messages[0] == {"type": "ready"}, page.messages
    return task


def test_every_reply_is_durable_when_the_page_hears_it(tmp_path: Path) -> None:
    mount, copy = tmp_path / "mount", tmp_path / "durable"
    mount.mkdir()
    durable = Durable(mount, copy)
    checked: list[str] = []

    def check(reply: dict[str, Any]) -> None:
        # The moment of posting: the durable copy must already hold what the reply says.
        value = reply.get("value")
        if isinstance(value, str) and len(value) == 32:  # a run id from `run`
            assert value in durable.runs(tmp_path / "scratch"), (
                "a run id was told before it was durable"
            )
            checked.append("run")
        elif isinstance(value, dict) and value.get("status") in ("succeeded", "failed"):
            assert durable.runs(tmp_path / "scratch").get(value["id"]) == value["status"]
            checked.append("wait")

    async def scenario() -> list[str]:
        page: Page
        host = make_host(mount, durable, lambda text: page.receive(text))
        page = Page(host, check)
        task = await started(host, page)
        assert durable.persists >= 1  # ready came after what opening wrote was durable
        await page.value("addWorkflow", yaml=WORKFLOW)
        calls = [page.send("run", name="hello", input={"n": i}) for i in range(5)]
        ids = [(await page.answer(c))["value"] for c in calls]
        runs = [await page.value("wait", id=i) for i in ids]
        assert [r["status"] for r in runs] == ["succeeded"] * 5
        assert [r["steps"][1]["output"] for r in runs] == [{"n": i} for i in range(5)]
        # Idle turns change no file, so they persist nothing.
        before = durable.persists
        await asyncio.sleep(0.3)
        idle = durable.persists - before
        # Killed, not stopped: what the page was told must be in the durable copy alone.
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert idle <= 1, f"{idle} persists while idle"
        return ids

    ids = asyncio.run(scenario())
    assert checked.count("run") == 5 and checked.count("wait") == 5

    # A reload: a fresh mount holding only the durable copy, a new host on it.
    reopened = tmp_path / "reopened"
    shutil.copytree(copy, reopened)

    async def reload() -> None:
        page: Page
        host = make_host(
            reopened, Durable(reopened, tmp_path / "durable2"), lambda t: page.receive(t)
        )
        page = Page(host, lambda _: None)
        task = await started(host, page)
        for run_id in ids:
            run = await page.value("get", id=run_id)
            assert run["status"] == "succeeded" and len(run["steps"]) == 2
        listed = await page.value("runs", status="succeeded", limit=10)
        assert sorted(r["id"] for r in listed) == sorted(ids)
        host.stop()
        await task
        assert page.messages[-1] == {"type": "stopping"}

    asyncio.run(reload())


def test_a_failed_persist_rejects_what_waited_and_shows_in_status(tmp_path: Path) -> None:
    mount = tmp_path / "mount"
    mount.mkdir()
    durable = Durable(mount, tmp_path / "durable")

    async def scenario() -> None:
        page: Page
        host = make_host(mount, durable, lambda text: page.receive(text))
        page = Page(host, lambda _: None)
        task = await started(host, page)
        durable.failing = "QuotaExceededError: the origin's quota is used up"
        reply = await page.answer(page.send("addWorkflow", yaml=WORKFLOW))
        assert reply["ok"] is False and reply["error"]["code"] == "not_persisted", reply
        assert "QuotaExceededError" in reply["error"]["message"]
        status = await page.answer(page.send("status"))  # computed now, but held as well
        assert status["ok"] is False and status["error"]["code"] == "not_persisted"
        assert host.storage.state == "failed"
        # Storage comes back: the next turn persists everything, and says so.
        durable.failing = None
        status = await page.value("status")
        assert status["persistence"]["state"] == "ok" and status["persistence"]["error"] is None
        assert status["workflows"] == 1  # committed before, durable now
        host.stop()
        await task

    asyncio.run(scenario())


def test_storage_that_cannot_be_persisted_at_opening_is_fatal(tmp_path: Path) -> None:
    mount = tmp_path / "mount"
    mount.mkdir()
    durable = Durable(mount, tmp_path / "durable")
    durable.failing = "InvalidStateError: IndexedDB is not available"
    messages: list[dict[str, Any]] = []
    host = make_host(mount, durable, lambda text: messages.append(json.loads(text)))
    with pytest.raises(Exception, match="could not be persisted"):
        asyncio.run(host.serve())
    assert messages[-1]["type"] == "fatal" and messages[-1]["error"]["code"] == "not_persisted"
    assert not any(m["type"] == "ready" for m in messages)


def test_the_browser_config_keeps_what_a_tab_cannot_do_off() -> None:
    config = browser_config()
    assert config.runtime.offline_mode == "always"
    assert config.security_config.encryption.storage.enabled is False
    assert config.storage.backup_interval == 0
    # An override is validated like any edge-config: a typo is an error, not ignored.
    with pytest.raises(Exception, match="max_concurrent_workflow"):
        browser_config({"runtime": {"max_concurrent_workflow": 2}})
