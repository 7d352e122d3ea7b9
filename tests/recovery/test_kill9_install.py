"""kill -9 across an A/B install: the device always comes back on a good, whole version.

A device runs 1.0.0 committed in slot a. A real worker process (``update_worker``) installs
2.0.0 (a payload written in many chunks), switches to it and supervises its first start;
it SIGKILLs its process group (itself and the runtime it started) at one counted step:
every chunk of the slot write, each half of every state file write, every rename, the
database backup, the start of the runtime. A first run without a kill counts the steps
(more than 50); then every one of them is a kill point, and a few more kills land at
timed moments of the first start (before, during and after the commit). After each kill
the real supervisor (``edge-min update supervise``) starts on the device; it must settle
on the active slot, that slot must be ``good`` and match its digest (never a half-written
one), and its runtime must answer. Both versions are seen: kills before the switch leave
1.0.0, kills after it end with 2.0.0 committed.

The second test kills earlier, in what comes before the slot write on a real device: the
runtime's rollout follower (``Follower`` with ``install_bundle``, as under the supervisor)
downloading a signed bundle from a real central in 128 KiB ranges, then verifying it. At
each range, each write of the follower's state and each chunk the verify writes: the
running slot is untouched and whole, and a second run resumes (the ranges on disk are not
fetched again) and ends with the new version installed and on trial.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from edge_min.update.slots import verify_slot
from tests.integration.test_update_slots import _running, _settled
from tests.integration.update_device import (
    REPO,
    Device,
    env,
    health,
    make_device,
    payload,
    stop,
    wait_for,
)

MIN_POINTS = 50
TIMED_KILLS = (0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 4.0, 5.0)
PAD_LINES = 30_000  # ~2.4 MB of payload: 37 chunks written, each a kill point


def _template(base: Path) -> Device:
    dev = make_device(base)
    dev.cli("update", "install-payload", str(payload(base / "p", "1.0.0")), "--version",
            "1.0.0", "--commit")  # fmt: skip
    sup = dev.supervise()  # a first boot: database, keys and baselines exist
    try:
        wait_for(lambda: _settled(dev))
    finally:
        stop(sup)
    payload(base / "p", "2.0.0", pad=PAD_LINES)
    return dev


def _copy(template: Device, dest: Path) -> Device:
    shutil.copytree(template.base, dest, symlinks=True)
    return Device(dest)


def _worker(dev: Device, kill_at: int) -> subprocess.Popen[bytes]:
    e = env()
    e.update(UPDATE_KILL_AT=str(kill_at), UPDATE_KILL_COUNT=str(dev.base / "kill-count"))
    new = dev.base / "p" / "edge-min-2.0.0-good"
    argv = [sys.executable, "-m", "tests.recovery.update_worker", str(dev.root)]
    argv += [str(dev.config), str(dev.data), str(new), "2.0.0"]
    log = open(dev.base / "worker.log", "ab")  # noqa: SIM115 - the child holds it
    return subprocess.Popen(argv, cwd=REPO, env=e, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)  # fmt: skip


def _recover(dev: Device) -> str:
    """Start the real supervisor; the version it settles on, checked whole and good."""
    sup = dev.supervise()
    try:
        st = wait_for(lambda: _settled(dev), timeout=90)
        slot = st["active"]
        assert _running(dev)["slot"] == slot
        assert st["slots"][slot]["state"] == "good", st
        verify_slot(dev.root, st, slot)  # the files match the digest: never half-written
        assert health(dev) is not None
        return str(st["slots"][slot]["version"])
    finally:
        stop(sup)


@pytest.mark.slow
def test_kill9_at_every_step_of_an_install_comes_back_on_a_good_version(
    tmp_path: Path,
) -> None:
    template = _template(tmp_path / "template")

    counting = _copy(template, tmp_path / "count")
    worker = _worker(counting, 0)
    try:
        wait_for(lambda: (s := _settled(counting)) and s["active"] == "b", timeout=90)
    finally:
        stop(worker)
    total = int((counting.base / "kill-count").read_text().split()[0])
    assert total >= MIN_POINTS, f"only {total} kill points"

    versions: dict[str, int] = {}
    for point in range(1, total + 1):
        dev = _copy(template, tmp_path / f"kill-{point}")
        worker = _worker(dev, point)
        assert worker.wait(timeout=120) == -signal.SIGKILL, f"point {point} did not kill"
        version = _recover(dev)
        versions[version] = versions.get(version, 0) + 1
        shutil.rmtree(dev.base)

    for i, delay in enumerate(TIMED_KILLS):
        dev = _copy(template, tmp_path / f"timed-{i}")
        worker = _worker(dev, 0)
        time.sleep(delay)
        os.killpg(worker.pid, signal.SIGKILL)
        worker.wait()
        version = _recover(dev)
        versions[version] = versions.get(version, 0) + 1
        shutil.rmtree(dev.base)

    assert set(versions) == {"1.0.0", "2.0.0"}, versions
    assert sum(versions.values()) == total + len(TIMED_KILLS) >= MIN_POINTS


# -- download and verify: the rollout follower, killed at every range and every chunk ---------

NODE = "kill-dev"
#: The phases of an install the test above does not kill in: the follower's download (each
#: 128 KiB range appended, each follow-state write), the bundle's verify (each chunk copied
#: and decoded into the staging folder) and the kept records beside the slot.
FETCH_PHASES = ("download.", "follow.", "verify.", "install.")
RANDOM_BYTES = 768 * 1024  # incompressible padding: the bundle needs ~8 ranges


def _fetch_worker(dev: Device, central: str, kill_at: int, log: Path | None = None) -> int:
    e = env()
    e.update(UPDATE_KILL_AT=str(kill_at), UPDATE_KILL_COUNT=str(dev.base / "kill-count"))
    if log is not None:
        e["UPDATE_STEP_LOG"] = str(log)
    argv = [sys.executable, "-m", "tests.recovery.update_worker", "fetch", str(dev.root)]
    argv += [str(dev.config), str(dev.data), central, NODE]
    with open(dev.base / "worker.log", "ab") as out:
        done = subprocess.run(argv, cwd=REPO, env=e, stdout=out, stderr=subprocess.STDOUT,
                              start_new_session=True, timeout=180)  # fmt: skip
    return done.returncode


def _running_slot_untouched(dev: Device) -> None:
    """Slot a still runs 1.0.0, good and whole; b is on trial only if it is whole too."""
    st = dev.state()
    assert st["active"] == "a" and st["slots"]["a"]["state"] == "good", st
    assert st["slots"]["a"]["version"] == "1.0.0"
    verify_slot(dev.root, st, "a")
    if st["trying"] is not None or st["slots"]["b"]["state"] == "installed":
        verify_slot(dev.root, st, "b")


@pytest.mark.slow
def test_kill9_across_download_and_verify_resumes_and_never_touches_the_running_slot(
    tmp_path: Path,
) -> None:
    import json
    import secrets

    from edge_min.central.server import CentralServer
    from edge_min.central.store import open_central_store
    from edge_min.sync.transport import HttpTransport
    from tests.integration.test_update_e2e import cli, package, roll, rollout

    template = _template(tmp_path / "template")
    new = template.base / "p" / "edge-min-2.0.0-good"
    pad = secrets.token_urlsafe(RANDOM_BYTES).encode()
    lines = b"".join(b"# " + pad[i : i + 76] + b"\n" for i in range(0, len(pad), 76))
    new.write_bytes(new.read_bytes().replace(b"#!/bin/sh\n", b"#!/bin/sh\n" + lines, 1))
    keys = tmp_path / "keys"
    bundle = tmp_path / "edge-min-2.0.0.emub"
    pkg = str(package(new, tmp_path / "2.0.0.tar"))
    for args in (
        ("keys", "init", str(keys)),
        ("trust", str(keys / "root.json")),
        ("bundle", pkg, "--version", "2.0.0", "--keys", str(keys), "-o", str(bundle)),
    ):
        done = cli(template, "update", *args)
        assert done.returncode == 0, done.stderr

    central = CentralServer(open_central_store(str(tmp_path / "central.db")), "127.0.0.1", 0)
    central.start()
    try:
        # The device is known to central once it has asked (as a runtime's follower does).
        link = HttpTransport.for_url(central.url, node=NODE, security_config=None)
        assert link.request("GET", "/api/updates/assigned")[0] == 204
        link.close()
        rid = roll(central, bundle, "2.0.0", NODE)

        counting = _copy(template, tmp_path / "count")
        steps = tmp_path / "steps.log"
        assert _fetch_worker(counting, central.url, 0, steps) == 0, (
            counting.base / "worker.log"
        ).read_text()
        _running_slot_untouched(counting)
        assert counting.state()["trying"]["slot"] == "b"
        names = [line.split(" ", 1) for line in steps.read_text().splitlines()]
        points = [int(n) for n, name in names if name.startswith(FETCH_PHASES)]
        ranges = sum(1 for _, name in names if name == "download.range")
        assert ranges >= 6, f"only {ranges} ranges: the bundle is too small to cut"
        assert len(points) >= 15, names

        resumed = 0
        for point in points:
            dev = _copy(template, tmp_path / f"fetch-{point}")
            assert _fetch_worker(dev, central.url, point) == -signal.SIGKILL, point
            _running_slot_untouched(dev)  # a kill anywhere here leaves 1.0.0 running, whole
            part = list((dev.data / "update" / "downloads").glob("*.part"))
            kept = part[0].stat().st_size if part else 0
            assert _fetch_worker(dev, central.url, 0) == 0, (dev.base / "worker.log").read_text()
            _running_slot_untouched(dev)
            st = dev.state()
            assert st["trying"]["slot"] == "b" and st["slots"]["b"]["version"] == "2.0.0", st
            log = (dev.base / "worker.log").read_text()
            if kept:  # the ranges already on disk were not fetched again
                assert "resuming the download" in log or kept >= bundle.stat().st_size, log
                resumed += 1
            shutil.rmtree(dev.base)
        assert resumed >= ranges - 2, f"only {resumed} of the cut downloads resumed"
        print(f"download and verify: {len(points)} kill points, {ranges} ranges, {resumed} resumed")
        shown = rollout(central, rid)
        assert shown["status"] not in ("halted", "cancelled"), json.dumps(shown)[:500]
    finally:
        central.stop()
