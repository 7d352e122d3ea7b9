"""The shipped example: the int8 text classifier routes negative feedback to a command agent."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import ROOT, run_cli

MODEL_AGENT = ROOT / "models" / "text-classifier-lite.yaml"
MODEL = ROOT / "models" / "out" / "text-classifier-lite.onnx"


@pytest.fixture
def data(tmp_path: Path) -> Path:
    assert MODEL.exists(), "build the model first: make models"
    d = tmp_path / "data"
    for args in (
        ["agent", "add", str(MODEL_AGENT)],
        ["agent", "add", str(ROOT / "examples" / "agents" / "notify.yaml")],
        ["workflow", "add", str(ROOT / "examples" / "workflows" / "feedback-triage.yaml")],
    ):
        res = run_cli("--data-dir", str(d), *args)
        assert res.returncode == 0, res.stderr
    return d


def _run(data: Path, text: str) -> dict:
    res = run_cli(
        "--data-dir",
        str(data),
        "workflow",
        "run",
        "feedback-triage",
        "--input",
        json.dumps({"text": text}),
        "--wait",
        timeout=120,
    )
    assert res.returncode == 0, res.stdout + res.stderr
    return json.loads(res.stdout.split("\n", 1)[1])


def test_negative_feedback_is_classified_and_alerted(data: Path) -> None:
    view = _run(data, "The update bricked my gateway, terrible support")
    steps = {s["step"]: s for s in view["steps"]}
    out = steps["classify"]["output"]
    assert out["label"] == "negative"
    assert set(out["scores"]) == {"positive", "negative", "neutral"}
    assert abs(sum(out["scores"].values()) - 1) < 1e-3
    assert steps["alert"]["status"] == "succeeded"
    assert steps["alert"]["output"]["sent"] is True
    log = Path(steps["alert"]["output"]["log"]).read_text().splitlines()
    assert len(log) == 1 and log[0].startswith(f"{view['id']}:alert ")
    assert json.loads(log[0].split(" ", 1)[1])["text"].startswith("The update bricked")


def test_positive_feedback_skips_the_alert(data: Path) -> None:
    view = _run(data, "Works perfectly, love it")
    steps = {s["step"]: s for s in view["steps"]}
    assert steps["classify"]["output"]["label"] == "positive"
    assert steps["alert"]["status"] == "skipped"
    assert view["status"] == "succeeded"


def test_agent_run_prints_the_classification(data: Path) -> None:
    res = run_cli(
        "--data-dir",
        str(data),
        "agent",
        "run",
        "text-classifier-lite",
        "--input",
        json.dumps("Setup was quick and the dashboard is great"),
    )
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)
    assert out["label"] == "positive" and out["scores"]["positive"] > 0.5
