"""The firmware target's boot logic on folders: loader entries, reconciling, the watch, seeds.

Everything a booted image has is a path here (the ESP, efivarfs, /proc/cmdline, sysfs, the
partitions as fixed-size files), so each decision of ``targets.firmware.boot`` is checked on
real files and real child processes; tests/firmware boots the real image under QEMU.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from edge_min.update.installer import local_payload
from targets.firmware.boot import REBOOT, FirmwareBoot, FirmwareError, Layout, partitions
from targets.firmware.loader import LOADER_GUID, Esp, LoaderError, booted, parse_name
from targets.firmware.seed import ERROR_FILE, provision

PART = 1 << 20
ENTRY = """title edge_min slot {slot}
sort-key edge
version {version}
linux /edge/vmlinuz
initrd /edge/initrd.img
options root=PARTLABEL=edge-{slot} edge.slot={slot} console=ttyS0 panic=5
"""


def _squashfs(version: str, size: int = 200_000) -> bytes:
    body = (version.encode() * (size // len(version) + 1))[: size - 48]
    head = b"hsqs" + b"\0" * 36 + size.to_bytes(8, "little")
    return head + body


def _image(tmp: Path, slot_a: bytes | None = None) -> Layout:
    """A device: ESP with both entries (a first), two partitions holding one image, sysfs."""
    esp = tmp / "efi"
    (esp / "loader" / "entries").mkdir(parents=True)
    for slot, version in (("a", 2), ("b", 1)):
        (esp / "loader" / "entries" / f"edge-{slot}.conf").write_text(
            ENTRY.format(slot=slot, version=version)
        )
    dev, sysb = tmp / "dev", tmp / "sys"
    dev.mkdir()
    image = slot_a or _squashfs("1.0")
    for n, name in ((2, "edge-a"), (3, "edge-b"), (4, "edge-data")):
        (dev / f"vda{n}").write_bytes(image + b"\0" * (PART - len(image)))
        (sysb / f"vda{n}").mkdir(parents=True)
        (sysb / f"vda{n}" / "uevent").write_text(
            f"MAJOR=254\nMINOR={n}\nDEVNAME=vda{n}\nDEVTYPE=partition\nPARTN={n}\nPARTNAME={name}\n"
        )
    (tmp / "efivars").mkdir()
    return Layout(
        esp=esp,
        data=tmp / "data",
        efivars=tmp / "efivars",
        cmdline=tmp / "cmdline",
        sys_block=sysb,
        dev=dev,
        seeds=(tmp / "seed",),
        program=Path(sys.executable),
        console=tmp / "no-console",
    )


def _boot(layout: Layout, slot: str, count_path: str | None = None, selected: str = "") -> None:
    """What the loader leaves for the kernel: the command line and its variables."""
    layout.cmdline.write_text(f"root=PARTLABEL=edge-{slot} edge.slot={slot} console=ttyS0\n")
    for name, value in (("LoaderEntrySelected", selected or f"edge-{slot}.conf"),
                        ("LoaderBootCountPath", count_path)):  # fmt: skip
        path = layout.efivars / f"{name}-{LOADER_GUID}"
        if value is None:
            path.unlink(missing_ok=True)
        else:
            path.write_bytes(b"\x06\0\0\0" + (value + "\0").encode("utf-16-le"))


def _loader_boots(layout: Layout) -> str:
    """What systemd-boot does next boot: pick the highest version not used up, count it."""
    esp = Esp(layout.esp)
    ranked = sorted(esp.entries().values(), key=lambda e: (not e.exhausted, e.version))
    chosen = ranked[-1]
    if chosen.counted and not chosen.exhausted:
        left, done = int(chosen.left or 0) - 1, chosen.done + 1
        renamed = chosen.path.with_name(f"edge-{chosen.slot}+{left}-{done}.conf")
        chosen.path.rename(renamed)
        _boot(layout, chosen.slot, f"\\loader\\entries\\{renamed.name}", chosen.path.name)
    else:
        _boot(layout, chosen.slot, None, chosen.path.name)
    return chosen.slot


def test_entry_names_and_loader_variables(tmp_path: Path) -> None:
    assert parse_name("edge-b+2-1.conf") == ("b", 2, 1)
    assert parse_name("edge-a+3.conf") == ("a", 3, 0)
    assert parse_name("edge-a.conf") == ("a", None, 0)
    assert parse_name("other.conf") is None
    layout = _image(tmp_path)
    _boot(layout, "b", "\\loader\\entries\\edge-b+1-2.conf", "edge-b+3.conf")
    seen = booted(layout.cmdline, layout.efivars)
    assert (seen.slot, seen.selected, seen.try_number) == ("b", "edge-b+3.conf", 2)


def test_arm_bless_prefer_and_a_cut_change(tmp_path: Path) -> None:
    layout = _image(tmp_path)
    esp = Esp(layout.esp)
    armed = esp.arm("b")
    assert (armed.path.name, armed.version, armed.left) == ("edge-b+3.conf", 3, 3)
    assert sorted(p.name for p in (layout.esp / "loader/entries").iterdir()) == [
        "edge-a.conf", "edge-b+3.conf"]  # fmt: skip
    assert "edge.slot=b" in armed.path.read_text()
    assert _loader_boots(layout) == "b"
    assert esp.bless("b").path.name == "edge-b.conf"
    assert esp.entries()["b"].version == 3  # stays first
    assert esp.prefer("a").version == 4
    # a change cut between writing the new name and removing the old: the higher one counts
    (layout.esp / "loader/entries/edge-b+3.conf").write_text(ENTRY.format(slot="b", version=9))
    assert esp.entries()["b"].path.name == "edge-b+3.conf"
    with pytest.raises(LoaderError, match="no integer `version`"):
        (layout.esp / "loader/entries/edge-a.conf").write_text("title x\n")
        esp.entries()


def test_first_boot_adopts_the_factory_slots(tmp_path: Path) -> None:
    layout = _image(tmp_path)
    assert partitions(layout.sys_block, layout.dev)["edge-b"] == layout.dev / "vda3"
    _boot(layout, "a")
    fw = FirmwareBoot(layout, esp=Esp(layout.esp), version="1.0.0")
    fw._record_devices()
    assert fw.reconcile(booted(layout.cmdline, layout.efivars)) == 0
    st = fw.installer.state()
    assert st["active"] == "a"
    assert [st["slots"][s]["state"] for s in "ab"] == ["good", "good"]
    assert st["slots"]["a"]["length"] == 200_000


def test_not_a_firmware_boot_is_named(tmp_path: Path) -> None:
    layout = _image(tmp_path)
    layout.cmdline.write_text("console=ttyS0\n")
    with pytest.raises(FirmwareError, match="not a boot of an edge_min firmware image"):
        FirmwareBoot(layout).run()


def _switched(tmp: Path) -> tuple[Layout, FirmwareBoot]:
    """Factory 1.0.0 in both slots, 2.0.0 installed into b and switched to (not yet armed)."""
    layout = _image(tmp)
    _boot(layout, "a")
    fw = FirmwareBoot(layout, esp=Esp(layout.esp), version="1.0.0", health_timeout=30)
    fw._record_devices()
    fw.reconcile(booted(layout.cmdline, layout.efivars))
    new = tmp / "rootfs-2.0.0.img"
    new.write_bytes(_squashfs("2.0"))
    assert fw.installer.install(local_payload(new, "2.0.0")) == "b"
    fw.installer.switch()
    return layout, fw


def _on_trial(tmp: Path) -> tuple[Layout, FirmwareBoot, int]:
    """``_switched``, armed at the next boot, then booted into slot b: its first try."""
    layout, fw = _switched(tmp)
    assert fw.reconcile(booted(layout.cmdline, layout.efivars)) is None  # armed: reboot
    assert _loader_boots(layout) == "b"
    tries = fw.reconcile(booted(layout.cmdline, layout.efivars))
    assert tries == 1
    return layout, fw, tries


def test_a_switch_cut_before_the_loader_was_told_arms_it_at_the_next_boot(tmp_path: Path) -> None:
    layout, fw = _switched(tmp_path)
    assert fw.reconcile(booted(layout.cmdline, layout.efivars)) is None  # reboot
    assert Esp(layout.esp).entries()["b"].path.name == "edge-b+3.conf"
    assert _loader_boots(layout) == "b"
    assert fw.reconcile(booted(layout.cmdline, layout.efivars)) == 1
    assert fw.installer.state()["trying"]["tries"] == 1


def test_three_failed_boots_fall_back_with_the_last_reason(tmp_path: Path) -> None:
    layout, fw = _switched(tmp_path)
    fw.reconcile(booted(layout.cmdline, layout.efivars))
    for n in (1, 2, 3):
        assert _loader_boots(layout) == "b"
        assert fw.reconcile(booted(layout.cmdline, layout.efivars)) == n
        fw.installer.failed_start("b", n, f"not healthy (try {n})")
    assert _loader_boots(layout) == "a"  # b+0-3 is used up
    assert fw.reconcile(booted(layout.cmdline, layout.efivars)) == 0
    st = fw.installer.state()
    assert st["trying"] is None and st["active"] == "a" and st["slots"]["b"]["state"] == "bad"
    assert st["report"]["reason"] == "slot b failed 3 boots; the last: not healthy (try 3)"
    assert fw.installer.pending_report() is not None  # for central at the next sync


def test_a_committed_slot_whose_blessing_was_cut_is_blessed(tmp_path: Path) -> None:
    layout, fw, _tries = _on_trial(tmp_path)
    fw.installer.commit("b")  # ... and the power went before the blessing
    _loader_boots(layout)
    assert fw.reconcile(booted(layout.cmdline, layout.efivars)) == 0
    assert Esp(layout.esp).entries()["b"].path.name == "edge-b.conf"


def test_the_committed_slot_is_booted_when_the_loader_picked_the_other(tmp_path: Path) -> None:
    layout, fw = _switched(tmp_path)
    fw.installer.commit("b")
    _boot(layout, "a")
    assert fw.reconcile(booted(layout.cmdline, layout.efivars)) is None
    assert _loader_boots(layout) == "b"
    assert fw.reconcile(booted(layout.cmdline, layout.efivars)) == 0


CHILD = """import sys, time
sys.path[:0] = {paths!r}
from edge_min.clock import VirtualClock
from edge_min.update.installer import Installer
action = {action!r}
inst = Installer({root!r}, VirtualClock())
if action == "commit":
    time.sleep(0.3); inst.commit("b"); time.sleep(30)
elif action == "exit":
    sys.exit(3)
elif action == "switch":
    time.sleep(0.3); inst.switch(); time.sleep(30)
"""


def _child(fw: FirmwareBoot, tmp: Path, action: str) -> None:
    script = tmp / f"child-{action}.py"
    script.write_text(CHILD.format(paths=sys.path, action=action, root=str(fw.layout.update_root)))

    def start(argv: list[str], env: dict[str, str]) -> object:
        from edge_min.platform.child import start_child

        assert argv[-3:] == ["run", "--host", "0.0.0.0"] and env["EDGE_MIN_UPDATE_ROOT"] == str(
            fw.layout.update_root
        )
        return start_child([sys.executable, str(script)], env, tmp / "child.log")

    fw._start_fn = start


def test_a_trial_that_commits_is_blessed_and_keeps_running(tmp_path: Path) -> None:
    layout, fw, tries = _on_trial(tmp_path)
    _child(fw, tmp_path, "commit")
    import threading

    stopper = threading.Timer(3.0, lambda: fw._stopping.append(15))
    stopper.start()
    assert fw.serve("b", tries) == 0
    assert Esp(layout.esp).entries()["b"].path.name == "edge-b.conf"
    assert "slot b committed" in (layout.logs / "boot.log").read_text()


def test_a_trial_that_exits_records_why_and_reboots(tmp_path: Path) -> None:
    _layout, fw, tries = _on_trial(tmp_path)
    _child(fw, tmp_path, "exit")
    assert fw.serve("b", tries) == REBOOT
    last = fw.installer.state()["trying"]["last_reason"]
    assert last == "exited with status 3 before it was committed (try 1)"


def test_a_switch_written_by_the_runtime_arms_the_loader_and_reboots(tmp_path: Path) -> None:
    layout, fw = _switched(tmp_path)
    with fw.installer.file.locked() as st:  # as if 2.0.0 had not been switched to yet
        st["trying"] = None
    _child(fw, tmp_path, "switch")
    assert fw.serve("a", 0) == REBOOT
    assert Esp(layout.esp).entries()["b"].path.name == "edge-b+3.conf"
    assert fw.installer.state()["trying"]["backup_done"] is True


# -- seeds --------------------------------------------------------------------------------


def _seed(tmp: Path, files: dict[str, str]) -> Path:
    seed = tmp / "seed"
    seed.mkdir(exist_ok=True)
    for old in seed.iterdir():
        old.unlink()
    for name, text in files.items():
        (seed / name).write_text(text)
    return seed


GOOD = {
    "seed.json": json.dumps({"format": 1, "device_id": "gw-0042"}),
    "edge-config.yaml": "runtime:\n  max_concurrent_workflows: 3\n",
}


def test_a_seed_is_validated_then_applied_once(tmp_path: Path) -> None:
    data = tmp_path / "data"
    seed = _seed(tmp_path, GOOD)
    first = provision([seed], data, now=1.0)
    assert first.state == "applied"
    assert (data / "config" / "edge-config.yaml").read_text() == GOOD["edge-config.yaml"]
    record = json.loads((data / "provision.json").read_text())
    assert (record["state"], record["device_id"]) == ("applied", "gw-0042")
    assert provision([seed], data).state == "unchanged"
    assert provision([tmp_path / "nothing"], data).state == "none"


@pytest.mark.parametrize(
    ("files", "message"),
    [
        ({**GOOD, "edge-config.yaml": "runtime:\n  max_concurrent_workflows: lots\n"},
         "runtime.max_concurrent_workflows: expected an integer, got string 'lots'"),
        ({**GOOD, "seed.json": "{not json"}, "seed.json: not valid JSON"),
        ({**GOOD, "seed.json": '{"format": 2}'}, "format is 2; this image reads 1"),
        ({**GOOD, "seed.json": '{"format": 1, "devce_id": "x"}'}, "unknown key 'devce_id'"),
        ({**GOOD, "notes.txt": "hi"}, "notes.txt: not a seed file"),
        ({"edge-config.yaml": "runtime: {}\n"}, "seed.json: missing"),
    ],
)  # fmt: skip
def test_a_bad_seed_changes_nothing_and_says_why(
    tmp_path: Path, files: dict[str, str], message: str
) -> None:
    data = tmp_path / "data"
    provision([_seed(tmp_path, GOOD)], data)
    outcome = provision([_seed(tmp_path, files)], data)
    assert outcome.state == "refused"
    assert message in outcome.message
    assert message in (data / "logs" / ERROR_FILE).read_text()
    assert (data / "config" / "edge-config.yaml").read_text() == GOOD["edge-config.yaml"]
    assert json.loads((data / "provision.json").read_text())["refused"]["message"]
    # fixed: the corrected seed is applied and the error goes
    fixed = {**GOOD, "edge-config.yaml": "runtime:\n  max_concurrent_workflows: 4\n"}
    assert provision([_seed(tmp_path, fixed)], data).state == "applied"
    assert not (data / "logs" / ERROR_FILE).exists()


def test_a_seed_carries_the_api_token_key_and_the_update_root(tmp_path: Path) -> None:
    import time

    from edge_min.update.keys import init_keys

    data = tmp_path / "data"
    init_keys(tmp_path / "keys", now=time.time())
    seed = _seed(tmp_path, GOOD)
    (seed / "api-token.key").write_bytes(b"k" * 32)
    (seed / "update-root.json").write_bytes((tmp_path / "keys" / "root.json").read_bytes())
    assert provision([seed], data).state == "applied"
    key = data / "edge" / "keys" / "api-token.key"
    assert key.read_bytes() == b"k" * 32 and key.stat().st_mode & 0o777 == 0o600
    assert (data / "edge" / "update" / "trust" / "root.json").exists()
    (seed / "api-token.key").write_bytes(b"short")
    refused = provision([seed], data)
    assert refused.state == "refused" and "5 bytes; a token key is at least 32" in refused.message
    assert key.read_bytes() == b"k" * 32


def test_a_seeds_enrollment_runs_edge_min_enroll_once(tmp_path: Path) -> None:
    """The seed's enroll block becomes `edge-min enroll` (docs/updates.md) until it worked."""
    layout = _image(tmp_path)
    seen = tmp_path / "argv.json"
    program = tmp_path / "edge-min"
    program.write_text(
        f"#!{sys.executable}\nimport json, sys\njson.dump(sys.argv[1:], open({str(seen)!r}, 'w'))\n"
    )
    program.chmod(0o755)
    layout = Layout(**{**layout.__dict__, "program": program})
    fw = FirmwareBoot(layout, esp=Esp(layout.esp))
    enroll = {"central": "http://10.0.2.2:8765", "token": "emt_x", "ca_sha256": "ab" * 32,
              "allow_insecure_http": True}  # fmt: skip
    fw._enroll(enroll, "gw-7")
    argv = json.loads(seen.read_text())
    assert argv[argv.index("enroll") :] == [
        "enroll", "--central", "http://10.0.2.2:8765", "--token", "emt_x",
        "--ca-sha256", "ab" * 32, "--device-id", "gw-7", "--allow-insecure-http",
    ]  # fmt: skip
    assert argv[:2] == ["--data-dir", str(layout.data_dir)]
    seen.unlink()
    layout.data_dir.mkdir(parents=True, exist_ok=True)
    (layout.data_dir / "enrollment.json").write_text("{}")
    fw._enroll(enroll, "gw-7")  # enrolled already: not again
    assert not seen.exists()
