"""``security.secure_boot``: what the platform shows of the boot chain, and the startup check.

From a source run nothing verified the boot chain, so ``secure_boot: true`` (the spec's
edge-config.yaml sets it) is a startup error naming what is missing and the fix;
``secure_boot: false`` starts. The gateway binary's launcher verifies its signature and says
so to the program (``tests/targets/test_launcher.py``; the binary itself starting with
``secure_boot: true`` is in ``tests/targets/test_binary.py``).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from edge_min.clock import VirtualClock
from edge_min.config import load_config, parse_config
from edge_min.errors import BootChainUnverified
from edge_min.platform import get_platform
from edge_min.platform.boot import SECURE_BOOT_VAR, BootChain, read_boot_chain
from edge_min.platform.inprocess import InProcessPlatform
from edge_min.runtime import Paths, Runtime
from edge_min.security.boot import check_boot_chain
from tests.conftest import ROOT, SPEC_CONFIGS

FIX = "set security.secure_boot: false in edge-config.yaml to run without a verified boot chain"
VERIFIED = {
    "EDGE_MIN_BOOT_VERIFIED": "ed25519:0123456789abcdef",
    "EDGE_MIN_BOOT_KEY_KIND": "release",
}


class Host(InProcessPlatform):
    """A platform (no processes, no link probe) that shows a given boot chain."""

    name = "test-boot"

    def __init__(self, chain: BootChain) -> None:
        self.chain = chain

    def boot_chain(self) -> BootChain:
        return self.chain


def _efivar(sys_root: Path, value: int) -> None:
    var = sys_root / "firmware" / "efi" / "efivars" / SECURE_BOOT_VAR
    var.parent.mkdir(parents=True)
    var.write_bytes(b"\x06\x00\x00\x00" + bytes([value]))  # attributes, then the value


def test_a_source_run_shows_neither_link(tmp_path: Path) -> None:
    chain = read_boot_chain({}, tmp_path, compiled=False)
    assert not chain.verified and chain.launcher_key is None and chain.uefi_secure_boot is None
    assert [m.split(" (")[0] for m in chain.missing] == [
        "no signed launcher",
        "no UEFI Secure Boot state",
    ]


def test_the_launchers_claim_counts_only_in_the_compiled_program(tmp_path: Path) -> None:
    chain = read_boot_chain(VERIFIED, tmp_path, compiled=True)
    assert chain.verified and chain.launcher_key == "ed25519:0123456789abcdef"
    assert chain.launcher_key_kind == "release"
    # Anyone can set a variable before `python -m edge_min`: it proves nothing there.
    forged = read_boot_chain(VERIFIED, tmp_path, compiled=False)
    assert not forged.verified and "is not believed" in forged.missing[0]


@pytest.mark.parametrize(("value", "on"), [(1, True), (0, False)])
def test_uefi_secure_boot_state_from_efivars(tmp_path: Path, value: int, on: bool) -> None:
    _efivar(tmp_path, value)
    chain = read_boot_chain({}, tmp_path, compiled=False)
    assert chain.uefi_secure_boot is on and chain.verified is on
    if not on:
        assert any(m.startswith("UEFI Secure Boot is off") for m in chain.missing)


def test_secure_boot_true_on_an_unverified_chain_is_a_startup_error(tmp_path: Path) -> None:
    config = parse_config({"security": {"secure_boot": True}}, source="/etc/edge/edge-config.yaml")
    runtime = Runtime(
        config,
        Paths.resolve(config, tmp_path / "data"),
        clock=VirtualClock(),
        platform=Host(read_boot_chain({}, tmp_path, compiled=False)),
    )
    with pytest.raises(BootChainUnverified) as info:
        runtime.open()
    message = str(info.value)
    assert message.startswith(
        "/etc/edge/edge-config.yaml: security.secure_boot is true, but the boot chain cannot "
        "be verified: no signed launcher ("
    )
    assert "no UEFI Secure Boot state" in message and message.endswith(FIX)
    assert info.value.code == "boot_chain_unverified"
    # Refused before anything was opened: no database, no files.
    assert not (tmp_path / "data").exists() or list((tmp_path / "data").iterdir()) == []


def test_secure_boot_false_starts_without_asking(tmp_path: Path) -> None:
    config = parse_config({"security": {"secure_boot": False}}, source="test")
    unverified = Host(BootChain(missing=("nothing",)))
    assert check_boot_chain(config, unverified) is None
    rt = Runtime(
        config, Paths.resolve(config, tmp_path / "d"), clock=VirtualClock(), platform=unverified
    )
    try:
        assert rt.open().status()["boot"] == {
            "checked": False,
            "why": "security.secure_boot is false",
        }
    finally:
        rt.close()


def test_secure_boot_true_on_a_verified_chain_starts(tmp_path: Path) -> None:
    config = parse_config({"security": {"secure_boot": True}}, source="test")
    host = Host(read_boot_chain(VERIFIED, tmp_path, compiled=True))
    rt = Runtime(config, Paths.resolve(config, tmp_path / "d"), clock=VirtualClock(), platform=host)
    try:
        boot = rt.open().status()["boot"]
    finally:
        rt.close()
    assert boot["checked"] and boot["verified"]
    assert boot["launcher_key"] == VERIFIED["EDGE_MIN_BOOT_VERIFIED"]


def test_a_browser_tab_cannot_verify_its_boot_chain() -> None:
    chain = InProcessPlatform().boot_chain()
    assert not chain.verified and "browser tab" in chain.missing[0]


def test_the_default_is_off_and_the_spec_file_turns_it_on() -> None:
    # The embedded default lets a source run start; the spec's file asks for secure boot.
    assert load_config(None).security.secure_boot is False
    assert load_config(SPEC_CONFIGS / "edge-config.yaml").security.secure_boot is True


@pytest.mark.slow
def test_the_spec_config_from_a_source_run_names_what_is_missing(tmp_path: Path) -> None:
    # The spec's edge-config.yaml (secure_boot: true) from the source tree: refused at start,
    # with one line naming what is missing and the fix, before the data dir is used.
    assert not get_platform().boot_chain().verified  # this test process is a source run
    spec = str(SPEC_CONFIGS / "edge-config.yaml")
    res = subprocess.run(
        [
            *(sys.executable, "-m", "edge_min.cli", "--data-dir", str(tmp_path / "d")),
            "--config",
            spec,
            "run",
            "--port",
            "0",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert res.returncode != 0, res.stdout
    assert "security.secure_boot is true, but the boot chain cannot be verified" in res.stderr
    assert "no signed launcher" in res.stderr and FIX in res.stderr, res.stderr
    assert not (tmp_path / "d" / "meta-agent-edge.db").exists()
