"""Encryption at rest on real SQLite files: sealed values, refused tampering, rotation, modes."""

from __future__ import annotations

import dataclasses
import sqlite3
import stat
from pathlib import Path
from typing import Any

import pytest

from edge_min.clock import VirtualClock
from edge_min.config import EdgeConfig, load_config
from edge_min.errors import (
    EncryptedRowsExist,
    KeysDropped,
    MasterKeyMismatch,
    StorageError,
    ValueRejected,
)
from edge_min.runtime import Paths
from edge_min.security.atrest import (
    check_backup_keys,
    key_ring,
    open_device_store,
    rotation_interval,
)
from edge_min.security.keyring import KeyRing, SealingCipher, master_key_path
from edge_min.security.rotation import PLAIN, Resealer, forget_all, key_usage, retire
from edge_min.store import MemoryStore, NotPrefix, Prefix, Store, open_store
from edge_min.store.backup import create_backup, restore
from edge_min.store.sealed import PAYLOAD_COLUMNS, SEALED_PREFIX

MARK = "MARKER-7f3a9c"


def config(enabled: bool = True) -> EdgeConfig:
    base = load_config(None)
    sec = base.security_config
    storage = dataclasses.replace(sec.encryption.storage, enabled=enabled)
    out = dataclasses.replace(
        base,
        security_config=dataclasses.replace(
            sec, encryption=dataclasses.replace(sec.encryption, storage=storage)
        ),
    )
    return out


@pytest.fixture
def paths(tmp_path: Path) -> Paths:
    return Paths(root=tmp_path / "data", db=tmp_path / "data" / "meta-agent-edge.db")


def ring_of(store: Store) -> KeyRing:
    assert isinstance(store.cipher, SealingCipher)
    return store.cipher.ring


def fill(store: Store) -> dict[str, Any]:
    """One row in every payload table, the marker in every payload."""
    wf = store.workflows.create("wf", {"steps": [MARK]}, "1")
    ag = store.agents.create("ag", "python", {"code": MARK}, "1")
    ex = store.executions.create(wf["id"], input={"in": MARK})
    store.executions.set(ex["id"], output={"out": MARK})
    store.agent_executions.add(
        {
            "agent_id": ag["id"],
            "workflow_execution_id": ex["id"],
            "status": "succeeded",
            "input": {"i": MARK},
            "output": {"o": MARK},
            "metrics": {"m": MARK},
            "started_at": "2026-01-01T00:00:00Z",
        }
    )
    store.sync_log.append("push", "workflows", wf["id"], "ok", {"d": MARK})
    db = store.backend
    db.insert("metrics_buffer", {"seq": 1, "collected_at": 1.0, "metrics": f'{{"x":"{MARK}"}}'})
    db.insert(
        "monitor_outbox", {"id": "n1", "kind": "alert", "payload": f'"{MARK}"', "created_at": 1.0}
    )
    db.insert(
        "sync_conflicts",
        {
            "id": "c1",
            "entity": "workflows",
            "entity_id": wf["id"],
            "edge_row": f'"{MARK}"',
            "central_row": f'"{MARK}"',
            "detected_at": "x",
        },
    )
    return {"wf": wf["id"], "ex": ex["id"]}


def runs(store: Store, *inputs: Any) -> list[str]:
    """New executions of one workflow with these inputs; their ids."""
    wf = store.workflows.create(f"wf-{len(inputs)}", {"steps": []}, "1")["id"]
    return [store.executions.create(wf, input=i)["id"] for i in inputs]


def stored(path: Path, table: str, column: str) -> list[str]:
    with sqlite3.connect(path) as conn:
        return [r[0] for r in conn.execute(f'SELECT "{column}" FROM "{table}"')]


def files_with(root: Path, needle: str) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file() and needle.encode() in p.read_bytes()]


def test_every_payload_column_is_sealed_on_disk_and_reads_back(paths: Paths) -> None:
    with open_device_store(config(), paths) as store:
        ids = fill(store)
        assert store.executions.require(ids["ex"])["output"] == {"out": MARK}
        assert store.workflows.require(ids["wf"])["definition"] == {"steps": [MARK]}
        assert store.backend.get("monitor_outbox", {"id": "n1"})["payload"] == f'"{MARK}"'
        for table, cols in PAYLOAD_COLUMNS.items():
            for col in cols:
                values = stored(paths.db, table, col)
                assert values and all(v.startswith(SEALED_PREFIX) for v in values), (table, col)
    assert files_with(paths.root, MARK) == []


def _tamper(db: Path, table: str, column: str, row_id: str, fn: Any) -> None:
    with sqlite3.connect(db) as conn:
        (value,) = conn.execute(f'SELECT "{column}" FROM "{table}" WHERE id=?', [row_id]).fetchone()
        conn.execute(f'UPDATE "{table}" SET "{column}"=? WHERE id=?', [fn(value), row_id])


def _flip(value: str) -> str:
    i = len(value) - 5
    return value[:i] + ("A" if value[i] != "A" else "B") + value[i + 1 :]


@pytest.mark.parametrize(
    "damage", [_flip, lambda v: v[: len(v) - 8], lambda v: v[:20]], ids=["flip", "cut", "short"]
)
def test_a_damaged_value_is_refused_by_name_and_other_rows_still_read(
    paths: Paths, damage: Any
) -> None:
    with open_device_store(config(), paths) as store:
        a, b = runs(store, {"n": 1}, {"n": 2})
    _tamper(paths.db, "workflow_executions", "input", a, damage)
    with open_device_store(config(), paths) as store:
        with pytest.raises(ValueRejected) as err:
            store.executions.get(a)
        assert (err.value.table, err.value.column, err.value.row_id) == (
            "workflow_executions",
            "input",
            a,
        )
        assert a in err.value.message and "workflow_executions.input" in err.value.message
        assert err.value.code == "value_rejected"
        assert store.executions.require(b)["input"] == {"n": 2}


def test_a_value_moved_to_another_row_or_column_is_refused(paths: Paths) -> None:
    with open_device_store(config(), paths) as store:
        a, b = runs(store, {"n": 1}, {"n": 2})
    with sqlite3.connect(paths.db) as conn:
        (va,) = conn.execute("SELECT input FROM workflow_executions WHERE id=?", [a]).fetchone()
        conn.execute("UPDATE workflow_executions SET input=? WHERE id=?", [va, b])
        conn.execute("UPDATE workflow_executions SET output=? WHERE id=?", [va, a])
    with open_device_store(config(), paths) as store:
        with pytest.raises(ValueRejected) as moved_row:
            store.executions.get(b)
        assert (moved_row.value.column, moved_row.value.row_id) == ("input", b)
        with pytest.raises(ValueRejected) as moved_col:
            store.executions.get(a)
        # The untouched input opens; the copy in output (another column) does not.
        assert (moved_col.value.column, moved_col.value.row_id) == ("output", a)


def test_drop_keys_makes_encrypted_columns_raise_keys_dropped(paths: Paths) -> None:
    with open_device_store(config(), paths) as store:
        wid = store.workflows.create("wf", {"a": 1}, "1")["id"]
        ring_of(store).drop_keys()
        with pytest.raises(KeysDropped) as err:
            store.workflows.get(wid)
        assert err.value.code == "keys_dropped"
        with pytest.raises(KeysDropped):
            store.workflows.create("wf2", {"a": 2}, "1")
        assert store.backend.count("workflows") == 1  # plain columns still answer
        ring_of(store).restore_keys()  # an unlock: read again from the master key file
        assert store.workflows.get(wid)["definition"] == {"a": 1}
        store.workflows.create("wf2", {"a": 2}, "1")


def test_rotation_reseals_old_rows_and_deletes_the_key_only_when_unused(paths: Paths) -> None:
    clock = VirtualClock(start=1000.0)
    with open_device_store(config(), paths, clock=clock) as store:
        ring = ring_of(store)
        ids = runs(store, *({"n": i} for i in range(25)))
        old = key_usage(store.raw)["keys"][0]["id"]
        new = ring.rotate(store.raw)
        usage = {k["id"]: k for k in key_usage(store.raw)["keys"]}
        assert usage[old]["state"] == "retiring" and usage[old]["values"] == 26
        assert usage[new]["state"] == "current"
        # Not yet re-sealed: nothing is deleted, every row still reads.
        assert retire(ring, store.raw, clock.time(), grace=0.0) == []
        resealer = Resealer(ring, store.raw, batch=7)
        steps = 0
        while not resealer.done:
            resealer.step()
            steps += 1
        assert steps >= 4  # small transactions
        # Within the grace period a writer may still hold the old key as current: kept.
        assert retire(ring, store.raw, clock.time()) == []
        clock.advance(61)
        assert retire(ring, store.raw, clock.time()) == [old]
        assert [k["id"] for k in key_usage(store.raw)["keys"]] == [new]
        assert [store.executions.require(i)["input"]["n"] for i in ids] == list(range(25))
        assert all(
            v.startswith(f"enc1:{new}:") for v in stored(paths.db, "workflow_executions", "input")
        )


def test_another_connection_follows_a_rotation_within_the_refresh(paths: Paths) -> None:
    clock = VirtualClock(start=0.0)
    with open_device_store(config(), paths, clock=clock) as a:
        b = open_device_store(config(), paths, clock=clock)  # its own ring, as another process
        try:
            first = ring_of(a).rotate(a.raw)
            (rid,) = runs(b, {"x": 1})  # b still seals with the old key
            assert not stored(paths.db, "workflow_executions", "input")[0].startswith(
                f"enc1:{first}:"
            )  # the old key: b has not looked again yet
            clock.advance(5.0)
            wf = b.executions.require(rid)["workflow_id"]
            rid2 = b.executions.create(wf, input={"x": 2})["id"]
            assert a.executions.require(rid)["input"] == {"x": 1}  # a reads b's old-key value
            assert b.executions.require(rid2)["input"] == {"x": 2}
            with sqlite3.connect(paths.db) as conn:
                (v,) = conn.execute(
                    "SELECT input FROM workflow_executions WHERE id=?", [rid2]
                ).fetchone()
            assert v.startswith(f"enc1:{first}:")
        finally:
            b.close()


def test_enabling_on_a_plaintext_database_seals_existing_rows(paths: Paths) -> None:
    paths.root.mkdir(parents=True)
    with open_store(str(paths.db)) as plain:
        ids = fill(plain)
    assert files_with(paths.root, MARK)
    with open_device_store(config(), paths) as store:
        ring = ring_of(store)
        assert key_usage(store.raw)["plaintext_values"] == 12
        # Plaintext rows read as they are until the background pass reaches them.
        assert store.executions.require(ids["ex"])["input"] == {"in": MARK}
        report = Resealer(ring, store.raw, batch=3).run()
        assert report.plaintext_sealed == 12
        assert key_usage(store.raw)["plaintext_values"] == 0
        store.raw.checkpoint_truncate()  # type: ignore[attr-defined]
        assert store.executions.require(ids["ex"])["output"] == {"out": MARK}
    assert files_with(paths.root, MARK) == []


def test_switching_off_is_refused_while_keys_exist_until_decrypt_all(paths: Paths) -> None:
    with open_device_store(config(), paths) as store:
        ids = fill(store)
    with pytest.raises(EncryptedRowsExist) as err:
        open_device_store(config(enabled=False), paths)
    assert "keys decrypt-all" in err.value.message
    with open_device_store(config(enabled=False), paths, decrypting=True) as store:
        report = Resealer(ring_of(store), store.raw, mode=PLAIN).run()
        assert report.rewritten == 12
        assert len(forget_all(ring_of(store), store.raw)) == 1
    with open_device_store(config(enabled=False), paths) as store:
        assert store.cipher is None
        assert store.executions.require(ids["ex"])["input"] == {"in": MARK}
        assert stored(paths.db, "workflow_executions", "input") == [f'{{"in":"{MARK}"}}']


def test_files_are_created_0600(paths: Paths) -> None:
    with open_device_store(config(), paths) as store:
        fill(store)
        wal = Path(str(paths.db) + "-wal")
        assert wal.exists()
        backup = create_backup(store, paths.root, 1_700_000_000.0)
        for p in (paths.db, wal, Path(str(paths.db) + "-shm"), master_key_path(paths.root), backup):
            assert stat.S_IMODE(p.stat().st_mode) == 0o600, p
    restore(backup, paths.db)
    assert stat.S_IMODE(paths.db.stat().st_mode) == 0o600


def test_a_backup_taken_before_a_rotation_restores_and_reads(paths: Paths) -> None:
    clock = VirtualClock(start=1000.0)
    with open_device_store(config(), paths, clock=clock) as store:
        ids = fill(store)
        backup = create_backup(store, paths.root, 1_700_000_000.0)
        ring = ring_of(store)
        ring.rotate(store.raw)
        Resealer(ring, store.raw).run()
        clock.advance(100)
        assert len(retire(ring, store.raw, clock.time())) == 1
    assert files_with(backup.parent, MARK) == []
    check_backup_keys(backup, paths)
    restore(backup, paths.db)
    with open_device_store(config(), paths) as store:
        assert store.executions.require(ids["ex"])["output"] == {"out": MARK}


def test_a_backup_from_another_device_is_refused_naming_the_master_key(
    paths: Paths, tmp_path: Path
) -> None:
    with open_device_store(config(), paths) as store:
        fill(store)
        backup = create_backup(store, paths.root, 1_700_000_000.0)
    other = Paths(root=tmp_path / "other", db=tmp_path / "other" / "meta-agent-edge.db")
    with pytest.raises(MasterKeyMismatch, match="does not exist"):
        check_backup_keys(backup, other)
    with open_device_store(config(), other):
        pass  # the other device gets its own master key
    with pytest.raises(MasterKeyMismatch, match="another device"):
        check_backup_keys(backup, other)
    restore(backup, other.db)  # the check is the CLI's; opening then says the same
    with pytest.raises(MasterKeyMismatch, match=r"keys/storage\.key"):
        open_device_store(config(), other)


def test_a_missing_master_key_file_is_not_silently_replaced(paths: Paths) -> None:
    with open_device_store(config(), paths) as store:
        fill(store)
    master_key_path(paths.root).unlink()
    with pytest.raises(MasterKeyMismatch, match="does not exist"):
        open_device_store(config(), paths)
    assert not master_key_path(paths.root).exists()


def test_memory_store_seals_too_and_refuses_matching_on_a_sealed_value(paths: Paths) -> None:
    ring = KeyRing(master_key_path(paths.root))
    store = Store(MemoryStore(), cipher=ring.cipher)
    ring.ensure(store.raw)
    wid = store.workflows.create("wf", {"a": MARK}, "1")["id"]
    assert store.raw.get("workflows", {"id": wid})["definition"].startswith(SEALED_PREFIX)
    assert store.workflows.require(wid)["definition"] == {"a": MARK}
    with pytest.raises(StorageError, match="encrypted at rest"):
        store.backend.select("workflows", {"definition": "{}"})
    assert store.backend.count("workflows", {"definition": Prefix(SEALED_PREFIX)}) == 1
    assert store.backend.count("workflows", {"definition": NotPrefix(SEALED_PREFIX)}) == 0


def test_prefix_conditions_match_literally_on_sqlite(tmp_path: Path) -> None:
    with open_store(str(tmp_path / "p.db")) as store:
        for i, name in enumerate(["a*b", "a?c", "a[x", "ab", "A*b"]):
            store.backend.insert("meta", {"key": f"k{i}", "value": name})
        got = [r["value"] for r in store.backend.select("meta", {"value": Prefix("a*")})]
        assert got == ["a*b"]
        assert store.backend.count("meta", {"value": Prefix("a[")}) == 1
        assert store.backend.count("meta", {"value": NotPrefix("a")}) == 1


def test_rotation_interval_is_exact_in_seconds_or_whole_days(tmp_path: Path) -> None:
    assert rotation_interval(load_config(None)) == 30 * 86400
    (tmp_path / "edge-config.yaml").write_text("security:\n  key_rotation_interval: 3600\n")
    assert rotation_interval(load_config(tmp_path / "edge-config.yaml")) == 3600.0
    days = load_config(None)
    sec = days.security_config
    seven = dataclasses.replace(
        sec,
        encryption=dataclasses.replace(
            sec.encryption,
            storage=dataclasses.replace(sec.encryption.storage, key_rotation_days=7),
        ),
    )
    assert rotation_interval(dataclasses.replace(days, security_config=seven)) == 7 * 86400


def test_key_ring_is_none_when_encryption_is_off(paths: Paths) -> None:
    assert key_ring(config(enabled=False), paths) is None
    assert isinstance(key_ring(config(), paths), KeyRing)


def test_the_engine_fails_a_run_whose_input_is_refused_and_runs_the_others(
    paths: Paths,
) -> None:
    from edge_min.agents.registry import AgentRegistry
    from edge_min.workflows.engine import Engine, InlineDispatcher

    workflow = "name: two\nversion: 1.0.0\nsteps:\n  - id: a\n    agent: noop\n"
    with open_device_store(config(), paths) as store:
        engine = Engine(
            store,
            AgentRegistry(store, work_root=paths.root / "w"),
            dispatcher=InlineDispatcher(),
            clock=store.clock,
        )
        engine.add_workflow(workflow, origin="test")
        ids = [engine.submit("two", {"n": i}) for i in range(3)]
    _tamper(paths.db, "workflow_executions", "input", ids[1], _flip)
    with open_device_store(config(), paths) as store:
        engine = Engine(
            store,
            AgentRegistry(store, work_root=paths.root / "w"),
            dispatcher=InlineDispatcher(),
            clock=store.clock,
        )
        for _ in range(50):
            engine.poll()
            if not engine.busy():
                break
        status = {i: store.raw.get("workflow_executions", {"id": i})["status"] for i in ids}
    assert status == {ids[0]: "succeeded", ids[1]: "failed", ids[2]: "succeeded"}


@pytest.mark.parametrize(
    ("edge", "sealed"),
    [("security: {encryption_enabled: false}\n", False), ("security: {}\n", True)],
)
def test_edge_configs_encryption_enabled_switches_sealing(
    tmp_path: Path, edge: str, sealed: bool
) -> None:
    (tmp_path / "edge-config.yaml").write_text(edge)
    cfg = load_config(tmp_path / "edge-config.yaml")
    where = Paths(root=tmp_path / "data", db=tmp_path / "data" / "edge.db")
    ring = key_ring(cfg, where)
    assert (ring is not None) is sealed
    store = open_device_store(cfg, where, ring=ring)
    try:
        store.workflows.create("wf", {"steps": [MARK]}, "1")
    finally:
        store.close()
    raw = sqlite3.connect(where.db).execute("SELECT definition FROM workflows").fetchone()[0]
    assert (MARK not in raw) is sealed
    assert raw.startswith(SEALED_PREFIX) is sealed
