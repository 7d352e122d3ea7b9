"""SIGKILL a real `edge-min run` at random moments during 200 runs; nothing finished runs twice.

The workflow (tests/fixtures/recovery/five-steps.yaml) is a 5-step DAG a -> (b, c) -> d -> e
whose steps all run a command agent (side-effect-agent.yaml) that appends
"<idempotency key> <wall time>" to a side-effect log before echoing its input. The key is the
step's ``agent_executions`` row id, so the log says when each step really ran. A step that was
in flight at a kill may be logged twice, but only before its completion was recorded: a line
after ``completed_at`` means a step whose result was committed ran again.
"""

from __future__ import annotations

import json
import random
import sqlite3
import threading
import time
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from http.client import HTTPException
from pathlib import Path
from typing import Any

import pytest

from edge_min.config import load_config
from edge_min.runtime import Paths
from edge_min.security.atrest import open_device_store
from tests.conftest import http, run_cli

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "recovery"
AGENT_FILE = FIXTURES / "side-effect-agent.yaml"
WORKFLOW_FILE = FIXTURES / "five-steps.yaml"
WORKFLOW = "five-steps"
STEPS = ("a", "b", "c", "d", "e")
RUNS = 200
SEED = 20240607
# A kill lands this long after the runtime answers /health: from "still recovering" to
# "several runs in flight" (one run takes about 0.3 s on an idle machine).
KILL_AFTER = (0.0, 2.0)
DRAIN_TIMEOUT = 150.0
# completed_at is stored with microseconds (rounded); a line up to 1 us later is the same
# instant, not a second run.
ISO_SLACK_NS = 1_000
RUNTIME_CONFIG = """\
runtime:
  max_concurrent_workflows: 8
storage:
  backup_interval: 0 # no backups: they would only slow the restarts down
"""


# -- the side-effect check (also used on synthetic logs below) ------------------------------


def iso_to_ns(text: str) -> int:
    """Nanoseconds since the epoch of an ``edge_min.clock.iso`` timestamp, exactly."""
    moment = datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)
    delta = moment - datetime(1970, 1, 1, tzinfo=UTC)
    micros = (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds
    return micros * 1_000


def parse_side_effect_log(lines: Iterable[str]) -> dict[str, list[int]]:
    """Idempotency key -> wall times (ns) of each call, from "<key> <seconds>.<nanoseconds>"."""
    calls: dict[str, list[int]] = {}
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        key, stamp = line.split()
        seconds, _, fraction = stamp.partition(".")
        assert len(fraction) == 9, f"line {number}: {line!r} has no nanoseconds (date +%N)"
        calls.setdefault(key, []).append(int(seconds) * 1_000_000_000 + int(fraction))
    return calls


def late_side_effects(completed_at: Mapping[str, str], calls: Mapping[str, list[int]]) -> list[str]:
    """Each call logged after its step's recorded completion, described; [] when none."""
    late = []
    for key, when in completed_at.items():
        limit = iso_to_ns(when) + ISO_SLACK_NS
        for stamp in calls.get(key, []):
            if stamp > limit:
                late.append(f"{key}: ran at +{(stamp - limit) / 1e6:.3f} ms after {when}")
    return late


def test_late_side_effect_check_flags_a_run_after_completion() -> None:
    completed = {"r1:a": "2026-01-02T03:04:05.123456Z", "r1:b": "2026-01-02T03:04:06.000000Z"}
    base = iso_to_ns("2026-01-02T03:04:05.123456Z")
    assert base == 1767323045123456000
    before = [f"r1:a {base // 10**9}.{base % 10**9 - 5_000_000:09d}"]
    # In flight at a kill and run again: two calls, both before completion, is allowed.
    twice = parse_side_effect_log([*before, f"r1:a {base // 10**9}.{base % 10**9:09d}"])
    assert late_side_effects(completed, twice) == []
    # The same step run again 1 ms after its completion was committed is caught.
    after = base + 1_000_000
    doctored = parse_side_effect_log([*before, f"r1:a {after // 10**9}.{after % 10**9:09d}"])
    assert late_side_effects(completed, doctored) == [
        "r1:a: ran at +0.999 ms after 2026-01-02T03:04:05.123456Z"
    ]
    # Rounding of completed_at to microseconds is tolerated, nothing more.
    edge = base + ISO_SLACK_NS
    assert late_side_effects(completed, {"r1:a": [edge]}) == []
    assert len(late_side_effects(completed, {"r1:a": [edge + 1]})) == 1


# -- the recovery test -------------------------------------------------------------------


def _setup(tmp_path: Path) -> tuple[Path, Path]:
    data, side_log = tmp_path / "data", tmp_path / "side-effects.log"
    data.mkdir()
    (data / "edge-config.yaml").write_text(RUNTIME_CONFIG)
    agent = tmp_path / "side-effect-agent.yaml"
    agent.write_text(AGENT_FILE.read_text().replace("__SIDE_EFFECT_LOG__", str(side_log)))
    for argv in (("agent", "add", str(agent)), ("workflow", "add", str(WORKFLOW_FILE))):
        done = run_cli("--data-dir", str(data), *argv)
        assert done.returncode == 0, done.stderr
    return data, side_log


def _submitter(
    url: str,
    accepted: dict[str, int],
    refused: list[Any],
    stop: threading.Event,
    batch: int,
    pause: float,
) -> None:
    """Submit up to ``batch`` runs (input n = how many were accepted so far) until stopped."""
    for _ in range(batch):
        if stop.is_set() or len(accepted) >= RUNS:
            return
        n = len(accepted)
        try:
            status, body = http("POST", f"{url}/workflows/{WORKFLOW}/run", {"n": n}, timeout=10)
        except (OSError, HTTPException):  # the kill cut the request or the reply
            return
        if status != 202:
            refused.append((status, body))
            continue
        accepted[body["execution_id"]] = n
        time.sleep(pause)


def record_completions(db: Path, first: dict[str, str]) -> list[str]:
    """Merge the succeeded steps' ``completed_at`` into ``first``; return any that changed.

    Read after each kill (read-only, so the crashed WAL is left for the runtime to recover):
    keeping the first recorded completion catches an engine that re-runs a finished step
    and overwrites its row, which the final rows alone would hide.
    """
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        rows = conn.execute(
            "SELECT id, completed_at FROM agent_executions WHERE status = 'succeeded'"
        ).fetchall()
    finally:
        conn.close()
    rewritten = []
    for step_id, completed in rows:
        known = first.setdefault(step_id, completed)
        if known != completed:
            rewritten.append(f"{step_id}: completed_at {known} became {completed}")
    return rewritten


def steps_running(db: Path) -> int:
    """How many steps the store shows in flight (read right after a kill)."""
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        query = "SELECT count(*) FROM agent_executions WHERE status = 'running'"
        return int(conn.execute(query).fetchone()[0])
    finally:
        conn.close()


def _drain(url: str) -> None:
    deadline = time.monotonic() + DRAIN_TIMEOUT
    while time.monotonic() < deadline:
        _, queued = http("GET", url + "/executions?status=queued&limit=1")
        _, running = http("GET", url + "/executions?status=running&limit=1")
        if not queued and not running:
            return
        time.sleep(0.2)
    raise AssertionError(f"runs still unfinished after {DRAIN_TIMEOUT}s")


@pytest.mark.slow
def test_sigkill_during_200_runs_loses_none_and_reruns_no_finished_step(
    runtime_process: Any, tmp_path: Path
) -> None:
    data, side_log = _setup(tmp_path)
    rng = random.Random(SEED)
    accepted: dict[str, int] = {}  # execution id -> its input n, for every 202 answer
    refused: list[Any] = []  # any other answer
    db = data / "meta-agent-edge.db"
    first_completed: dict[str, str] = {}  # step row id -> completed_at when first seen
    rewritten: list[str] = []
    in_flight: list[int] = []  # steps running at each kill
    kills = 0
    began = time.monotonic()
    while len(accepted) < RUNS and not refused:  # a refusal fails below, never loops
        rp = runtime_process(data)
        stop = threading.Event()
        submitter = threading.Thread(
            target=_submitter,
            args=(rp.url, accepted, refused, stop, rng.randint(4, 14), rng.uniform(0.0, 0.08)),
        )
        submitter.start()
        time.sleep(rng.uniform(*KILL_AFTER))
        rp.kill9()
        kills += 1
        stop.set()
        submitter.join(15)
        assert not submitter.is_alive()
        rewritten += record_completions(db, first_completed)
        in_flight.append(steps_running(db))
    assert not refused, f"submissions refused: {refused[:5]}"
    rp = runtime_process(data)
    _drain(rp.url)
    assert rp.stop() == 0
    elapsed = time.monotonic() - began
    rewritten += record_completions(db, first_completed)
    assert not rewritten, "finished steps recorded again:\n" + "\n".join(rewritten[:20])

    conn = sqlite3.connect(db)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        steps = conn.execute(
            "SELECT id, workflow_execution_id, status FROM agent_executions"
        ).fetchall()
    finally:
        conn.close()
    # Outputs are encrypted at rest: read them as the runtime does, through its key ring.
    config = load_config(data / "edge-config.yaml")
    with open_device_store(config, Paths.resolve(config, data)) as store:
        runs = {
            row["id"]: (row["status"], row["output"])
            for row in store.backend.select("workflow_executions")
        }

    lost = set(accepted) - set(runs)
    assert not lost, f"{len(lost)} accepted runs lost (seed {SEED})"
    for execution_id, n in accepted.items():
        status, output = runs[execution_id]
        assert status == "succeeded", f"run {execution_id} ended {status}: {output} (seed {SEED})"
        want = {"e": {"n": n, "from_b": n, "from_c": n, "step": "e"}}
        assert json.loads(output) == want, f"run {execution_id} output {output}"
    # Runs whose 202 the kill cut off may exist too; they must have finished as well.
    assert {status for status, _ in runs.values()} == {"succeeded"}

    by_run: dict[str, dict[str, str]] = {}
    for step_id, execution_id, status in steps:
        by_run.setdefault(execution_id, {})[step_id.split(":", 1)[1]] = status
    for execution_id in runs:
        assert by_run.get(execution_id) == dict.fromkeys(STEPS, "succeeded"), execution_id

    calls = parse_side_effect_log(side_log.read_text().splitlines())
    assert set(calls) == set(first_completed), "a step ran that has no row, or one never ran"
    late = late_side_effects(first_completed, calls)
    assert not late, f"{len(late)} finished steps ran again (seed {SEED}):\n" + "\n".join(late)
    reruns = sum(len(stamps) - 1 for stamps in calls.values())
    print(
        f"\n{len(accepted)} accepted runs, {len(runs)} in the db, {kills} SIGKILLs "
        f"({sum(1 for n in in_flight if n)} with steps in flight, {sum(in_flight)} steps), "
        f"{reruns} steps logged twice, {elapsed:.1f}s"
    )
    # The kills must have hit work in flight, or this test proved nothing about recovery.
    assert sum(1 for n in in_flight if n) >= kills // 2, in_flight


def test_record_completions_keeps_the_first_and_reports_a_rewrite(tmp_path: Path) -> None:
    db = tmp_path / "steps.db"
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE agent_executions (id TEXT, status TEXT, completed_at TEXT)")
        conn.execute("INSERT INTO agent_executions VALUES ('r:a', 'succeeded', 't1')")
        conn.execute("INSERT INTO agent_executions VALUES ('r:b', 'running', NULL)")
    conn.close()
    first: dict[str, str] = {}
    assert record_completions(db, first) == []
    assert first == {"r:a": "t1"}
    with sqlite3.connect(db) as conn:  # a re-run of a finished step rewrites its row
        conn.execute("UPDATE agent_executions SET completed_at = 't2' WHERE id = 'r:a'")
    conn.close()
    assert record_completions(db, first) == ["r:a: completed_at t1 became t2"]
    assert first == {"r:a": "t1"}
