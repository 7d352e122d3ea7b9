"""The A/B slot state machine on real files: install, verify, switch, tries, commit, fall back."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from pathlib import Path

import pytest

from edge_min.clock import VirtualClock
from edge_min.config import load_config
from edge_min.errors import ConfigError, SchemaError
from edge_min.store.migrations import MIGRATIONS
from edge_min.store.sqlite import SqliteStore
from edge_min.update.installer import (
    Installer,
    LocalPayload,
    local_payload,
    pre_update_backup,
    schema_version,
)
from edge_min.update.slots import (
    MAX_TRIES,
    STATE_FILE,
    BadPayload,
    NoPreviousVersion,
    SlotBusy,
    SlotDigestMismatch,
    SlotStateCorrupt,
    program,
    verify_slot,
)


def _binary(tmp: Path, version: str) -> LocalPayload:
    path = tmp / f"payload-{version}"
    path.write_bytes(b"#!/bin/sh\n# " + version.encode() + b"\n" + b"x" * 200_000)
    return local_payload(path, version)


def _installed(tmp: Path) -> Installer:
    """A device with 1.0.0 committed in slot a."""
    inst = Installer(tmp / "root", VirtualClock())
    assert inst.install(_binary(tmp, "1.0.0")) == "a"
    inst.switch()
    inst.commit()
    return inst


def test_install_writes_the_inactive_slot_and_reads_it_back(tmp_path: Path) -> None:
    inst = _installed(tmp_path)
    new = _binary(tmp_path, "2.0.0")
    assert inst.install(new) == "b"
    st = inst.state()
    assert st["active"] == "a"  # the running version is untouched
    assert st["slots"]["b"]["state"] == "installed"
    assert st["slots"]["b"]["digest"] == new.sha256
    assert program(inst.root, "b").read_bytes() == new.payload.read_bytes()
    assert program(inst.root, "a").read_bytes() == (tmp_path / "payload-1.0.0").read_bytes()
    verify_slot(inst.root, st, "b")


def test_the_state_file_is_replaced_whole(tmp_path: Path) -> None:
    inst = _installed(tmp_path)
    text = (inst.root / STATE_FILE).read_text()
    assert json.loads(text)["active"] == "a"
    assert not list(inst.root.glob(f".{STATE_FILE}.*"))  # no temp file left behind


def test_a_trial_is_counted_before_each_start_and_given_up_after_three(tmp_path: Path) -> None:
    inst = _installed(tmp_path)
    inst.install(_binary(tmp_path, "2.0.0"))
    inst.switch()
    for n in range(1, MAX_TRIES + 1):
        assert inst.begin_start() == ("b", n)
        assert inst.state()["trying"]["tries"] == n  # durable before the start
        inst.failed_start("b", n, f"exited with status 3 (try {n})")
    assert inst.begin_start() == ("a", 0)  # the fourth start is the old version
    st = inst.state()
    assert st["trying"] is None and st["active"] == "a"
    assert st["slots"]["b"]["state"] == "bad"
    report = inst.pending_report()
    assert report is not None and report["kind"] == "fallback"
    assert report["version"] == "2.0.0" and report["to_version"] == "1.0.0"
    assert "3 failed starts" in report["reason"] and "try 3" in report["reason"]
    inst.mark_reported()
    assert inst.pending_report() is None
    assert inst.state()["report"]["reason"] == report["reason"]  # kept, marked sent


def test_unhealthy_is_the_reason_of_the_fallback(tmp_path: Path) -> None:
    inst = _installed(tmp_path)
    inst.install(_binary(tmp_path, "2.0.0"))
    inst.switch()
    for n in range(1, MAX_TRIES + 1):
        inst.begin_start()
        inst.opened("b", n)
        inst.unhealthy("b", n, "health failed: broken_driver")
    inst.begin_start()
    assert "broken_driver" in inst.state()["report"]["reason"]


def test_commit_keeps_the_previous_version_for_a_manual_rollback(tmp_path: Path) -> None:
    inst = _installed(tmp_path)
    inst.install(_binary(tmp_path, "2.0.0"))
    inst.switch()
    inst.begin_start()
    assert inst.commit("b") == "b"
    st = inst.state()
    assert st["active"] == "b" and st["slots"]["a"]["state"] == "good"
    assert inst.rollback("sensor regression") == "a"
    st = inst.state()
    assert st["active"] == "a" and st["report"]["kind"] == "rollback"
    assert st["report"]["reason"] == "sensor regression"
    assert inst.begin_start() == ("a", 0)


def test_rollback_without_a_previous_version_is_refused(tmp_path: Path) -> None:
    inst = _installed(tmp_path)
    with pytest.raises(NoPreviousVersion, match="other slot is empty"):
        inst.rollback("manual")
    assert inst.state()["active"] == "a"


def test_give_up_ends_only_the_trial_it_names(tmp_path: Path) -> None:
    """A waiter's timeout (``update wait --give-up``) must not undo a trial that committed."""
    from edge_min.update.commands import trial_outcome

    inst = _installed(tmp_path)
    inst.install(_binary(tmp_path, "2.0.0"))
    inst.switch()
    inst.begin_start()
    assert trial_outcome(inst.state(), "b") is None  # still on trial
    inst.commit("b")
    assert inst.give_up("b", "not committed within 62s") is False
    st = inst.state()
    assert st["active"] == "b" and st["report"] is None
    assert trial_outcome(st, "b") == (0, "slot b (2.0.0) committed; 1.0.0 is kept in slot a")

    inst.install(_binary(tmp_path, "3.0.0"))
    inst.switch()
    inst.begin_start()
    assert inst.give_up("a", "not committed within 62s") is True
    st = inst.state()
    assert st["active"] == "b" and st["slots"]["a"]["state"] == "bad"
    assert trial_outcome(st, "a") == (
        1,
        "slot a (3.0.0) was given up: not committed within 62s; slot b (2.0.0) runs",
    )


def test_no_install_during_a_trial(tmp_path: Path) -> None:
    inst = _installed(tmp_path)
    inst.install(_binary(tmp_path, "2.0.0"))
    inst.switch()
    with pytest.raises(SlotBusy, match="on trial"):
        inst.install(_binary(tmp_path, "3.0.0"))


def test_a_payload_changed_after_verification_is_refused(tmp_path: Path) -> None:
    inst = _installed(tmp_path)
    new = _binary(tmp_path, "2.0.0")
    new.payload.write_bytes(new.payload.read_bytes() + b"tampered")
    with pytest.raises(BadPayload, match="changed after it was verified"):
        inst.install(new)
    st = inst.state()
    assert st["active"] == "a" and st["slots"]["b"]["state"] == "installing"
    with pytest.raises(BadPayload, match="no installed slot"):
        inst.switch()  # a half-written slot is never put on trial


def test_a_slot_changed_after_install_is_not_bootable(tmp_path: Path) -> None:
    inst = _installed(tmp_path)
    with program(inst.root, "a").open("ab") as f:
        f.write(b"\n")
    with pytest.raises(SlotDigestMismatch, match="does not match its digest"):
        verify_slot(inst.root, inst.state(), "a")


def test_a_hand_edited_state_file_is_named(tmp_path: Path) -> None:
    inst = _installed(tmp_path)
    (inst.root / STATE_FILE).write_text("{not json")
    with pytest.raises(SlotStateCorrupt, match=r"update-state\.json is not valid JSON"):
        inst.state()


def _package(tmp: Path, version: str, *, tamper: bool = False) -> Path:
    files = {
        "edge-min": b"#!/bin/sh\necho " + version.encode() + b"\n",
        "VERSION": version.encode(),
    }
    sums = "".join(f"{hashlib.sha256(d).hexdigest()}  {n}\n" for n, d in sorted(files.items()))
    if tamper:
        files["VERSION"] = b"something else"
    files["SHA256SUMS"] = sums.encode()
    path = tmp / f"meta-agent-edge-{version}.tar.gz"
    with tarfile.open(path, "w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), 0o755
            tar.addfile(info, io.BytesIO(data))
    return path


def test_a_package_is_unpacked_checked_and_digested(tmp_path: Path) -> None:
    inst = _installed(tmp_path)
    pkg = local_payload(_package(tmp_path, "2.0.0"), "2.0.0")
    assert pkg.kind == "package"
    assert inst.install(pkg) == "b"
    assert (inst.root / "slots" / "b" / "VERSION").read_text() == "2.0.0"
    verify_slot(inst.root, inst.state(), "b")
    (inst.root / "slots" / "b" / "VERSION").write_text("2.0.1")
    with pytest.raises(SlotDigestMismatch):
        verify_slot(inst.root, inst.state(), "b")


def test_a_package_failing_its_sums_is_refused(tmp_path: Path) -> None:
    inst = _installed(tmp_path)
    with pytest.raises(BadPayload, match="VERSION fails its SHA256SUMS"):
        inst.install(local_payload(_package(tmp_path, "2.0.0", tamper=True), "2.0.0"))


@pytest.mark.parametrize("python", ["this one", "before 3.11.4 (no tarfile filters)"])
def test_a_package_member_outside_the_slot_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, python: str
) -> None:
    if python != "this one":  # Debian 12's Python 3.11.2: the installer's own checks
        monkeypatch.delattr(tarfile, "data_filter", raising=False)
    inst = _installed(tmp_path)
    assert inst.install(local_payload(_package(tmp_path, "2.0.0"), "2.0.0")) == "b"
    evil = tmp_path / "evil.tar.gz"
    with tarfile.open(evil, "w:gz") as tar:
        info = tarfile.TarInfo("../../outside")
        info.size = 3
        tar.addfile(info, io.BytesIO(b"bad"))
    inst.switch()
    inst.commit()
    with pytest.raises((BadPayload, tarfile.TarError)):
        inst.install(local_payload(evil, "3.0.0", "package"))
    assert not (tmp_path / "outside").exists() and not (tmp_path / "root" / "outside").exists()


def _open(db: Path, *, newer: bool = False) -> SqliteStore:
    """The database as this version (or a newer one, with one more migration) opens it."""
    extra = [(len(MIGRATIONS) + 100, "a newer version's table", "CREATE TABLE later (x TEXT);")]
    return SqliteStore(db, migrations=[*MIGRATIONS, *extra] if newer else None)


def _note(db: Path, text: str, *, newer: bool = False) -> None:
    store = _open(db, newer=newer)
    try:
        store.insert("meta", {"key": text, "value": "1"})
    finally:
        store.close()


def _notes(db: Path) -> list[str]:
    store = _open(db)  # raises SchemaError if this version cannot read it
    try:
        return sorted(r["key"] for r in store.select("meta") if r["key"].startswith("note"))
    finally:
        store.close()


def test_a_fallback_restores_the_database_the_old_version_can_read(tmp_path: Path) -> None:
    inst = _installed(tmp_path)
    db = tmp_path / "data" / "meta-agent-edge.db"
    db.parent.mkdir()
    _note(db, "note-old")
    inst.install(_binary(tmp_path, "2.0.0"))
    inst.switch()
    assert inst.begin_start(db) == ("b", 1)
    assert pre_update_backup(db, "a").is_file()
    assert inst.state()["slots"]["a"]["schema"] == schema_version(db)
    _note(db, "note-new", newer=True)  # the new version migrated the database
    with pytest.raises(SchemaError, match="upgrade edge_min or restore an older backup"):
        _notes(db)
    assert inst.rollback("health failed") == "a"
    assert inst.ready_db("a", db) is True
    assert _notes(db) == ["note-old"]  # the old version opens it again
    assert inst.ready_db("a", db) is False  # nothing to do once it can read it


def test_a_database_the_old_version_reads_is_kept(tmp_path: Path) -> None:
    inst = _installed(tmp_path)
    db = tmp_path / "meta-agent-edge.db"
    _note(db, "note-old")
    inst.install(_binary(tmp_path, "2.0.0"))
    inst.switch()
    inst.begin_start(db)
    _note(db, "note-new")  # written by the new version, same schema: nothing is lost
    inst.rollback("manual")
    assert inst.ready_db("a", db) is False
    assert _notes(db) == ["note-new", "note-old"]


def test_update_config_is_checked(tmp_path: Path) -> None:
    cfg = tmp_path / "edge-config.yaml"
    cfg.write_text("update:\n  commit_after: 5m\n  health_timeout: 1m\n")
    with pytest.raises(ConfigError, match=r"update\.health_timeout"):
        load_config(cfg)
    cfg.write_text("update:\n  commit_after: 30s\n")
    assert load_config(cfg).update.commit_after == 30.0
    assert load_config(None).update.health_timeout == 300.0
