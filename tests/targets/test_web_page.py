# ruff: noqa: F811  (the fixtures imported from test_web.py are parameters here)
"""The page a person uses (wasm/web/index.html, page.js), in Debian's Chromium.

What is checked is what a person sees and does, through the DOM only: the page loads and
says ready, shows whether persistent storage was granted with usage and quota, shows sync as
not configured, adds an example with one click, takes JSON input, runs the workflow on a
click and shows the run with its steps and output; invalid JSON is an inline error and
starts nothing; a runtime error shows its code and message. The test of a run saves the
page as docs/browser-page.png (committed, shown in docs/browser.md).

Fixtures (the bundle built from this tree, http.server, Chromium, a fresh context per test)
are test_web.py's.
"""

from __future__ import annotations

import json
import os
import re
from typing import Any

import pytest

from tests.conftest import ROOT
from tests.targets.test_web import (  # noqa: F401  (fixtures)
    READY_TIMEOUT_MS,
    Tab,
    browser,
    bundle,
    site,
    tab,
)

pytestmark = [pytest.mark.web, pytest.mark.slow]

SCREENSHOT = ROOT / "docs" / "browser-page.png"


def open_page(tab: Tab) -> Any:
    """The site in a new page of the tab's context, once the page says ready."""
    page = tab.context.new_page()
    tab.page = page
    page.on("console", lambda m: tab.console.append(f"{m.type}: {m.text}"))
    page.set_default_timeout(60_000)
    page.set_viewport_size({"width": 1100, "height": 900})
    page.goto(tab.url)
    page.wait_for_selector("#state[data-state='ready']", timeout=READY_TIMEOUT_MS)
    # The first refresh fills the storage line once status() answered.
    page.wait_for_function("document.getElementById('storage').textContent.includes('quota')")
    return page


def text(page: Any, selector: str) -> str:
    value: str = page.locator(selector).inner_text()
    return value


def test_a_person_adds_an_example_runs_it_and_sees_steps_and_output(tab: Tab) -> None:
    page = open_page(tab)
    status = tab.ok("status")
    storage = text(page, "#storage")
    granted = status["browser"]["persisted"]
    assert isinstance(granted, bool) and status["browser"]["quota"] > 0
    assert ("persistent storage granted" in storage) == granted, storage
    assert re.search(r"[\d.]+ MB used of [\d.]+ [MG]B quota", storage), storage
    assert status["browser"]["usage"] is not None
    if "sync" not in status:  # until sync exists in the tab
        assert text(page, "#sync") == "not configured"
    else:
        assert "pending" in text(page, "#sync")
    assert page.locator("#no-workflows").is_visible()
    assert page.locator("#run").is_disabled()
    assert page.locator("[data-example='feedback-triage']").is_enabled()

    page.click("[data-example='word-stats']")
    page.wait_for_function("document.getElementById('workflow').value === 'word-stats'")
    assert json.loads(page.input_value("#input"))["text"]  # the example's input, filled in
    sentence = "offline first runtimes keep working when the network goes away"
    page.fill("#input", json.dumps({"text": sentence}))
    page.click("#run")

    page.wait_for_selector("#run-detail[data-status='succeeded']")
    run_id = page.get_attribute("#run-detail", "data-run")
    assert text(page, "#run-title") == "word-stats: succeeded"
    steps = page.locator("#steps tr")
    assert steps.count() == 2
    assert page.get_attribute("#steps tr[data-step='stats']", "data-status") == "succeeded"
    assert page.get_attribute("#steps tr[data-step='report']", "data-status") == "succeeded"
    stats = json.loads(text(page, "#steps tr[data-step='stats'] pre"))
    assert stats == {"words": 10, "chars": len(sentence), "longest": "runtimes"}
    output = json.loads(text(page, "#run-output"))
    assert output["report"]["input"] == {"words": 10, "longest": "runtimes"}
    assert json.loads(text(page, "#run-input")) == {"text": sentence}
    # The runs table lists it; the runtime agrees with what the page shows.
    page.wait_for_selector(f"#runs tr[data-run='{run_id}'][data-status='succeeded']")
    assert tab.ok("get", run_id)["output"] == output

    # The built-in example, one click and the input it comes with.
    page.click("[data-example='hello']")
    page.wait_for_function("document.getElementById('workflow').value === 'hello'")
    page.click("#run")
    page.wait_for_selector("#run-detail[data-status='succeeded'] >> text=hello: succeeded")
    hello = json.loads(text(page, "#run-output"))
    assert hello["reply"]["input"] == {"hello": "world"}
    assert page.locator("#runs tr").count() == 2
    assert page.locator("#error").is_hidden()

    # The spec's feedback-triage: the int8 classifier on onnxruntime-web, then notify.
    page.click("[data-example='feedback-triage']")
    page.wait_for_function("document.getElementById('workflow').value === 'feedback-triage'")
    page.click("#run")
    page.wait_for_selector(
        "#run-detail[data-status='succeeded'] >> text=feedback-triage: succeeded"
    )
    classified = json.loads(text(page, "#steps tr[data-step='classify'] pre"))
    assert classified["label"] == "negative", classified
    assert set(classified["scores"]) == {"positive", "negative", "neutral"}
    assert page.get_attribute("#steps tr[data-step='alert']", "data-status") == "succeeded"
    assert page.locator("#runs tr").count() == 3

    page.click(f"#runs tr[data-run='{run_id}']")  # back to the first run
    page.wait_for_selector(f"#run-detail[data-run='{run_id}']")
    page.mouse.move(0, 0)  # no hover highlight in the picture
    if os.environ.get("EDGE_MIN_SCREENSHOTS") == "1":  # as the fleet page's test: on demand
        SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SCREENSHOT), full_page=True)
    else:
        assert page.screenshot(full_page=True)  # the page renders

    # After a reload the page shows the same runs (from IndexedDB).
    page.reload()
    page.wait_for_selector("#state[data-state='ready']", timeout=READY_TIMEOUT_MS)
    page.wait_for_selector(f"#runs tr[data-run='{run_id}'][data-status='succeeded']")
    assert page.locator("#runs tr").count() == 3


def test_invalid_json_is_an_inline_error_and_runtime_errors_show_their_code(tab: Tab) -> None:
    page = open_page(tab)
    page.click("[data-example='hello']")
    page.wait_for_function("document.getElementById('workflow').value === 'hello'")

    page.fill("#input", '{"name": "world",}')
    page.click("#run")
    error = page.locator("#input-error")
    error.wait_for(state="visible")
    assert error.inner_text().startswith("The input is not valid JSON:"), error.inner_text()
    assert page.get_attribute("#input", "aria-invalid") == "true"
    assert tab.ok("runs", {"limit": 10}) == []  # nothing was started
    assert page.locator("#run-detail").is_hidden()

    page.fill("#input", '{"name": "fixed"}')  # fixing it clears the error
    assert error.is_hidden()
    page.click("#run")
    page.wait_for_selector("#run-detail[data-status='succeeded']")
    assert len(tab.ok("runs", {"limit": 10})) == 1

    # A workflow the runtime does not know (removed in another window, say): the runtime's
    # rejection is shown with its code and message.
    page.evaluate(
        "() => { const s = document.getElementById('workflow');"
        " s.append(new Option('gone', 'gone')); s.value = 'gone'; }"
    )
    page.click("#run")
    banner = page.locator("#error")
    banner.wait_for(state="visible")
    assert text(page, "#error .code") == "not_found"
    assert "no workflow named 'gone'" in text(page, "#error .message")
    assert banner.inner_text().startswith("run gone failed:")
