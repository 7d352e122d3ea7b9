"""``edge-min firmware boot``: the image's main service, between the boot loader and the runtime.

The image's init (``firmware/rootfs-init.sh``, PID 1 of the slot's root) runs it once per
boot; exit code ``REBOOT`` (75) asks the init to reboot, anything else to power off. It

1. reads which slot this kernel was booted for (``edge.slot=`` on the command line) and
   what systemd-boot says of the entry (``LoaderBootCountPath``: the try under way);
2. records the slots' partitions (``slot-devices.json``) for the update installer, whose
   state file on the data partition (``<data>/update/update-state.json``) stays the single
   truth, exactly as on a gateway; at a factory image's first boot it adopts the slots;
3. applies a provisioning seed (``targets.firmware.seed``) and enrolls with central if the
   seed says so;
4. reconciles the state with the boot loader (the table below), which may mean a reboot;
5. runs ``edge-min run`` from this slot with ``EDGE_MIN_UPDATE_ROOT/SLOT/TRY`` set, so the
   ``update`` subsystem commits a trial after ``update.commit_after`` healthy seconds, and
   watches it like the gateway's supervisor (``edge_min.update.supervisor``), with the boot
   loader as the way from one slot to the other:

   ===============================  =========================================================
   seen                             done
   ===============================  =========================================================
   a switch (trying: T)             back the database up, arm T's entry (3 counted boots,
                                    first), reboot
   a trial committed                bless this boot's entry (never counted again)
   a trial unhealthy, exited, or    the reason kept in the state file, reboot: the loader
   not healthy in health_timeout    counts the next try, and after 3 boots the other slot
   booted S while T is on trial     the loader gave T up (or T's kernel never got to init):
                                    the trial falls back with the last reason, reported to
                                    central at the next sync
   a rollback (active changed)      the active slot's entry first, blessed; reboot
   a committed runtime exits        started again (backing off 1, 2, 4 ... 30 s)
   ===============================  =========================================================

A power cut anywhere leaves the state file and the entries in states this table covers.
Every decision is printed on the console and appended to ``<data>/logs/boot.log``.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edge_min.errors import EdgeError
from edge_min.update.installer import Installer
from edge_min.update.slots import (
    MAX_TRIES,
    SQUASHFS_MAGIC,
    image_sha256,
    other,
    slot_devices,
    write_slot_devices,
)
from edge_min.update.supervisor import ENV_ROOT, ENV_SLOT, ENV_TRY
from targets.firmware.loader import BootedEntry, Esp, booted, remounted

log = logging.getLogger("edge_min.firmware")

REBOOT = 75  # EX_TEMPFAIL: the init reboots
POLL = 0.25
MAX_BACKOFF = 30.0


class FirmwareError(EdgeError):
    """The firmware image cannot boot as laid out."""

    code = "firmware_boot"


@dataclass(frozen=True)
class Layout:
    """Where things are on the image (every path injectable, for tests on folders)."""

    esp: Path = Path("/efi")
    data: Path = Path("/data")
    efivars: Path = Path("/sys/firmware/efi/efivars")
    cmdline: Path = Path("/proc/cmdline")
    sys_block: Path = Path("/sys/class/block")
    dev: Path = Path("/dev")
    seeds: tuple[Path, ...] = (Path("/run/seed"), Path("/efi/seed"))
    program: Path = Path("/usr/bin/edge-min")
    console: Path = Path("/dev/console")

    @property
    def update_root(self) -> Path:
        return self.data / "update"

    @property
    def config(self) -> Path:
        return self.data / "config"

    @property
    def data_dir(self) -> Path:
        return self.data / "edge"

    @property
    def logs(self) -> Path:
        return self.data / "logs"


def partitions(sys_block: Path, dev: Path) -> dict[str, Path]:
    """GPT partition names to device nodes (``PARTNAME=`` in sysfs: no udev, no blkid)."""
    found: dict[str, Path] = {}
    try:
        entries = sorted(os.listdir(sys_block))
    except OSError:
        return found
    for name in entries:
        try:
            uevent = (Path(sys_block) / name / "uevent").read_text()
        except OSError:
            continue
        fields = dict(line.partition("=")[::2] for line in uevent.splitlines())
        if fields.get("PARTNAME") and fields.get("DEVNAME"):
            found[fields["PARTNAME"]] = Path(dev) / fields["DEVNAME"]
    return found


def squashfs_length(device: Path) -> int | None:
    """The bytes a squashfs image at the start of ``device`` uses (its superblock), or None."""
    try:
        with open(device, "rb") as f:
            head = f.read(48)
    except OSError:
        return None
    if len(head) < 48 or head[:4] != SQUASHFS_MAGIC:
        return None
    return int.from_bytes(head[40:48], "little")


class FirmwareBoot:
    """One boot of the image (see the module docstring)."""

    def __init__(
        self,
        layout: Layout,
        *,
        esp: Esp | None = None,
        start: Callable[[list[str], dict[str, str]], Any] | None = None,
        version: str | None = None,
        health_timeout: float | None = None,
    ) -> None:
        from edge_min.clock import SystemClock

        self.layout = layout
        self.esp = esp or Esp(layout.esp, lambda: remounted(layout.esp, _run))
        self.installer = Installer(layout.update_root, SystemClock())
        self._start_fn = start or self._popen
        self.version = version
        self.health_timeout = health_timeout
        self._stopping: list[int] = []

    # -- the boot -----------------------------------------------------------------------------

    def run(self) -> int:
        """Boot: the exit code (``REBOOT``, or 0 once stopped by a signal)."""
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, lambda n, _f: self._stopping.append(n))
        entry = booted(self.layout.cmdline, self.layout.efivars)
        if entry.slot is None:
            raise FirmwareError(
                f"{self.layout.cmdline} has no edge.slot=a|b: this is not a boot of an "
                "edge_min firmware image (make firmware); on a gateway run `edge-min run`"
            )
        self.say(
            f"booted slot {entry.slot} (entry {entry.selected or '?'}"
            + (f", try {entry.try_number}" if entry.try_number else "")
            + ")"
        )
        self._record_devices()
        self._provision()
        tries = self.reconcile(entry)
        if tries is None:
            return REBOOT
        return self.serve(entry.slot, tries)

    def _record_devices(self) -> None:
        parts = partitions(self.layout.sys_block, self.layout.dev)
        missing = [n for n in ("edge-a", "edge-b") if n not in parts]
        if missing:
            raise FirmwareError(
                f"no partition named {missing[0]} (GPT names found: {sorted(parts) or 'none'}); "
                "the disk was not written from an edge_min image"
            )
        write_slot_devices(self.layout.update_root, {"a": parts["edge-a"], "b": parts["edge-b"]})

    def _provision(self) -> None:
        from targets.firmware.seed import provision

        outcome = provision(list(self.layout.seeds), self.layout.data)
        if outcome.state == "refused":
            self.say(f"SEED REFUSED: {outcome.message}")
            self.say(f"  (kept in {self.layout.logs / 'seed-error.txt'}; the device runs on")
            self.say("   the configuration it had: attach a corrected seed and reboot)")
        elif outcome.state == "applied":
            self.say(outcome.message)
        seed = outcome.seed
        if seed is not None and seed.enroll and outcome.state in ("applied", "unchanged"):
            self._enroll(seed.enroll, seed.device_id)

    def _enroll(self, enroll: dict[str, Any], device_id: str | None) -> None:
        from edge_min.lifecycle.enroll import enrollment_record

        if enrollment_record(self.layout.data_dir) is not None:
            return
        argv = [*self._base_args(), "enroll", "--central", str(enroll["central"])]
        for key, flag in (("token", "--token"), ("ca_sha256", "--ca-sha256")):
            if enroll.get(key):
                argv += [flag, str(enroll[key])]
        if device_id:
            argv += ["--device-id", device_id]
        if enroll.get("allow_insecure_http"):
            argv.append("--allow-insecure-http")
        try:
            done = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)
        except (OSError, subprocess.TimeoutExpired) as exc:
            self.say(f"enrollment with {enroll['central']} did not finish ({exc}); next boot")
            return
        if done.returncode == 0:
            self.say(f"enrolled with {enroll['central']}")
        else:
            why = (done.stderr or done.stdout).strip().splitlines()
            self.say(f"enrollment refused or failed ({why[-1] if why else done.returncode});"
                     " tried again at the next boot")  # fmt: skip

    # -- the state and the boot loader --------------------------------------------------------

    def reconcile(self, entry: BootedEntry) -> int | None:
        """The try number to run this slot with (0: committed), or None to reboot."""
        slot = str(entry.slot)
        st = self.installer.state()
        if st["active"] is None:
            self._adopt(slot)
            st = self.installer.state()
        trying = st["trying"]
        if trying is not None:
            trial = str(trying["slot"])
            if trial == slot:
                tries = entry.try_number or int(trying.get("tries") or 0) + 1
                self.installer.boot_try(slot, tries)
                self.say(f"slot {slot} on trial: try {tries} of {MAX_TRIES}")
                return tries
            armed = self.esp.entries().get(trial)
            if int(trying.get("tries") or 0) == 0 and (armed is None or not armed.counted):
                self._arm(trial)  # the switch was cut before the loader was told
                return None
            last = trying.get("last_reason") or (
                "its runtime never recorded a start (the kernel or init failed)"
            )
            reason = f"slot {trial} failed {MAX_TRIES} boots; the last: {last}"
            self.installer.give_up(trial, reason)
            self.say(f"FALLBACK to slot {slot}: {reason}")
            st = self.installer.state()
        active = st["active"]
        if active != slot and active is not None and st["slots"][active]["state"] == "good":
            self.say(f"slot {active} is the committed one, not {slot}: booting it")
            self.esp.prefer(active)
            return None
        if entry.try_number is not None:  # committed, but the blessing was cut
            self.esp.bless(slot)
            self.say(f"slot {slot}: blessed its loader entry")
        return 0

    def _adopt(self, slot: str) -> None:
        """A factory image's first boot: both slots hold the image's squashfs."""
        import edge_min

        devices = slot_devices(self.layout.update_root)  # as _record_devices found them
        version = self.version or edge_min.__version__
        mine = devices[slot]
        length = squashfs_length(mine)
        if length is None:
            raise FirmwareError(f"slot {slot} ({mine}) holds no squashfs image")
        digest = image_sha256(mine, length)
        record = {"version": version, "kind": "image", "length": length, "sha256": digest,
                  "digest": digest, "state": "good", "installed_at": time.time()}  # fmt: skip
        self.installer.adopt(slot, record)
        theirs = devices[other(slot)]
        if squashfs_length(theirs) == length and image_sha256(theirs, length) == digest:
            self.installer.adopt(other(slot), record)
        self.say(f"first boot: slot {slot} holds {version} ({length} bytes, {digest[:12]})")

    def _arm(self, slot: str) -> None:
        self.installer.prepare_trial(self._db())
        self.esp.arm(slot)
        self.say(f"slot {slot} armed: {MAX_TRIES} counted boots; rebooting into it")

    @functools.cached_property
    def config(self) -> Any:
        """The device's configuration (the defaults when the seed left none that loads),
        read once, after provisioning: nothing changes it during a boot."""
        from edge_min.config import load_config

        try:
            return load_config(self.layout.config if self.layout.config.is_dir() else None)
        except EdgeError:
            return load_config(None)

    def _db(self) -> Path:
        from edge_min.runtime import Paths

        return Paths.resolve(self.config, self.layout.data_dir).db

    # -- the runtime --------------------------------------------------------------------------

    def _base_args(self) -> list[str]:
        args = [str(self.layout.program)]
        if self.layout.config.is_dir():
            args += ["--config", str(self.layout.config)]
        return [*args, "--data-dir", str(self.layout.data_dir)]

    def _popen(self, argv: list[str], env: dict[str, str]) -> Any:
        from edge_min.platform.child import start_child

        console = self.layout.console
        return start_child(argv, env, console if console.exists() else self.layout.logs / "run.log")

    def _provisioned(self) -> dict[str, Any]:
        """What the last seed applied (provision.json), or nothing."""
        try:
            doc = json.loads((self.layout.data / "provision.json").read_text())
        except (OSError, ValueError):
            return {}
        return doc if isinstance(doc, dict) else {}

    def _host(self) -> str:
        """Where the API listens: the device's network, unless api.host names an address
        other than the gateway's loopback default (a device is reached over its network)."""
        host = str(self.config.api.host)
        return "0.0.0.0" if host in ("127.0.0.1", "localhost") else host

    def _timeout(self) -> float:
        if self.health_timeout is not None:
            return self.health_timeout
        return float(self.config.update.health_timeout)

    def serve(self, slot: str, tries: int) -> int:
        """Run the runtime of ``slot`` until a reboot is due (``REBOOT``) or a signal (0)."""
        backoff = 1.0
        db = self._db()
        if self.installer.ready_db(slot, db):
            self.say(f"restored the database slot {slot} can read")
        while not self._stopping:
            env = dict(os.environ)
            env.update(
                {ENV_ROOT: str(self.layout.update_root), ENV_SLOT: slot, ENV_TRY: str(tries)}
            )
            argv = [*self._base_args(), "run", "--host", self._host()]
            if self._provisioned().get("allow_insecure_http") is True:
                argv.append("--allow-insecure-http")
            child = self._start_fn(argv, env)
            began = time.monotonic()
            outcome, tries = self._watch(child, slot, tries)
            if outcome != "restart":
                return 0 if outcome == "stopped" else REBOOT
            if time.monotonic() - began > 60:
                backoff = 1.0
            self._sleep(backoff)
            backoff = min(MAX_BACKOFF, backoff * 2)
        return 0

    def _watch(self, child: Any, slot: str, tries: int) -> tuple[str, int]:
        started = time.monotonic()
        timeout = self._timeout()
        told_memory = False
        while True:
            if not told_memory and time.monotonic() - started > MEMORY_AFTER:
                told_memory = True
                self.say(memory_line(child.pid))
            if self._stopping:
                child.stop()
                return "stopped", tries
            rc = child.poll()
            st = self.installer.state()
            trying, active = st["trying"], st["active"]
            if tries:
                if trying is None or trying["slot"] != slot:
                    if active == slot:
                        self.esp.bless(slot)
                        self.say(f"slot {slot} committed: its loader entry is blessed")
                        tries = 0
                        continue
                    child.stop()
                    self.esp.prefer(str(active))
                    self.say(f"trial of slot {slot} given up; rebooting into slot {active}")
                    return "reboot", tries
                if trying.get("unhealthy"):
                    child.stop()
                    self.say(f"try {tries} of slot {slot} unhealthy: {trying['unhealthy']}")
                    return "reboot", tries
                if rc is not None:
                    reason = f"exited with status {rc} before it was committed (try {tries})"
                    self.installer.failed_start(slot, tries, reason)
                    self.say(f"slot {slot}: {reason}; rebooting")
                    return "reboot", tries
                if time.monotonic() - started > timeout:
                    child.stop()
                    reason = f"not healthy within update.health_timeout ({timeout:g}s)"
                    self.installer.failed_start(slot, tries, reason)
                    self.say(f"try {tries} of slot {slot}: {reason}; rebooting")
                    return "reboot", tries
            elif trying is not None:
                child.stop()
                self._arm(str(trying["slot"]))
                return "reboot", tries
            elif active != slot and active is not None:
                child.stop()
                self.esp.prefer(active)
                self.say(f"rolled back to slot {active}; rebooting into it")
                return "reboot", tries
            elif rc is not None:
                self.say(f"the runtime of slot {slot} exited with status {rc}; starting it again")
                return "restart", tries
            self._sleep(POLL)

    def _sleep(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while not self._stopping and time.monotonic() < deadline:
            time.sleep(min(0.05, seconds))

    def say(self, line: str) -> None:
        """One line on the console (stderr) and in ``<data>/logs/boot.log``."""
        try:
            uptime = Path("/proc/uptime").read_text().split()[0]
        except (OSError, IndexError):
            uptime = "?"
        text = f"edge-min firmware[{uptime}]: {line}"
        print(text, file=sys.stderr, flush=True)
        try:
            self.layout.logs.mkdir(parents=True, exist_ok=True)
            with open(self.layout.logs / "boot.log", "a") as f:
                f.write(f"{time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())} {line}\n")
                f.flush()
                os.fsync(f.fileno())
        except OSError:
            pass


MEMORY_AFTER = 60.0  # seconds after the runtime's start: its idle memory, once per boot


def _tree_rss(pid: int, proc: Path = Path("/proc")) -> int:
    """Resident bytes of ``pid`` and its descendants (its agent workers)."""
    parents: dict[int, int] = {}
    for entry in proc.iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
                parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
    tree, todo = set(), [pid]
    while todo:
        p = todo.pop()
        tree.add(p)
        todo += [c for c, parent in parents.items() if parent == p and c not in tree]
    total = 0
    for p in tree:
        try:
            for line in (proc / str(p) / "status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
        except (OSError, ValueError):
            continue
    return total


def memory_line(pid: int) -> str:
    """``memory: guest used N MB of M MB, runtime R MB``: the image's idle footprint."""
    info: dict[str, int] = {}
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            key, _, value = line.partition(":")
            info[key] = int(value.split()[0]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    used = info.get("MemTotal", 0) - info.get("MemAvailable", 0)
    mb = 1024 * 1024
    return (
        f"memory: guest used {used / mb:.1f} MB of {info.get('MemTotal', 0) / mb:.0f} MB, "
        f"runtime {_tree_rss(pid) / mb:.1f} MB (with its workers)"
    )


def _run(argv: Sequence[str]) -> None:
    subprocess.run(list(argv), check=True, capture_output=True)


def status(layout: Layout) -> dict[str, Any]:
    """What ``edge-min firmware status`` prints: slot, entries, state, provisioning."""
    entry = booted(layout.cmdline, layout.efivars)
    view: dict[str, Any] = {"booted": entry.slot, "entry": entry.selected, "try": entry.try_number}
    try:
        view["entries"] = {
            s: {"file": e.path.name, "version": e.version, "left": e.left, "done": e.done}
            for s, e in Esp(layout.esp).entries().items()
        }
    except EdgeError as exc:
        view["entries"] = str(exc)
    view["update"] = Installer(layout.update_root, _clock()).state()
    try:
        view["provision"] = json.loads((layout.data / "provision.json").read_text())
    except (OSError, ValueError):
        view["provision"] = None
    return view


def _clock() -> Any:
    from edge_min.clock import SystemClock

    return SystemClock()
