"""Kernel and boot facts of a Linux host, for remote attestation (``Platform.boot_facts``).

What is read, each only where the host lets us (a fact that cannot be read is ``None``,
never a guess):

- ``cmdline``: ``/proc/cmdline``, the kernel command line the boot loader passed;
- ``kernel``: the running kernel's release (``uname -r``);
- ``secure_boot``: ``"enabled"`` or ``"disabled"`` from the UEFI variable ``SecureBoot``
  in efivarfs (``/sys/firmware/efi/efivars``); ``None`` on a host without UEFI variables;
- ``ima``: the IMA runtime measurement log (``/sys/kernel/security/ima/
  ascii_runtime_measurements``) when present: its entry count, the sha256 of the whole log
  and the template hash of its ``boot_aggregate`` entry. The log itself is not sent: it
  grows with every file the kernel measures and can be megabytes;
- ``tpm``: the TPM's major version when ``/sys/class/tpm/tpm0`` exists (reported only:
  quotes are not TPM quotes yet, see docs/security.md).

The roots are parameters so tests read a fake tree.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

#: The EFI global variable GUID under which ``SecureBoot`` lives.
EFI_GLOBAL = "8be4df61-93ca-11d2-aa0d-00e098032b8c"  # EFI_GLOBAL_VARIABLE
IMA_LOG = "kernel/security/ima/ascii_runtime_measurements"
#: Hash at most this much of the IMA log: a boot fact must not stall the loop.
IMA_MAX_BYTES = 64 * 1024 * 1024


def read_boot_facts(
    proc_root: str | Path = "/proc", sys_root: str | Path = "/sys"
) -> dict[str, Any]:
    """The boot facts of this host (see the module docstring); unreadable ones are None."""
    proc, sys_ = Path(proc_root), Path(sys_root)
    return {
        "cmdline": _cmdline(proc),
        "kernel": _kernel(),
        "secure_boot": secure_boot_state(sys_),
        "ima": ima_summary(sys_),
        "tpm": _tpm(sys_),
    }


def _cmdline(proc: Path) -> str | None:
    try:
        return (
            (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode("utf-8", "replace").strip()
        )
    except OSError:
        return None


def _kernel() -> str | None:
    try:
        return os.uname().release
    except (AttributeError, OSError):
        return None


def secure_boot_state(sys_root: Path) -> str | None:
    """``enabled``/``disabled`` from efivarfs (4 attribute bytes, then the value byte)."""
    var = sys_root / "firmware" / "efi" / "efivars" / f"SecureBoot-{EFI_GLOBAL}"
    try:
        data = var.read_bytes()
    except OSError:
        return None
    if len(data) < 5:
        return None
    return "enabled" if data[4] == 1 else "disabled"


def ima_summary(sys_root: Path) -> dict[str, Any] | None:
    """Entry count, sha256 and boot_aggregate of the IMA runtime log, or None without one."""
    path = sys_root / IMA_LOG
    digest = hashlib.sha256()
    entries = 0
    aggregate: str | None = None
    size = 0
    try:
        with path.open("rb") as f:
            for line in f:
                size += len(line)
                if size > IMA_MAX_BYTES:
                    break
                digest.update(line)
                entries += 1
                fields = line.split()
                # PCR, template hash, template name, file hash, file name
                if aggregate is None and len(fields) >= 5 and fields[4] == b"boot_aggregate":
                    aggregate = fields[1].decode("ascii", "replace")
    except OSError:
        return None
    return {"entries": entries, "sha256": digest.hexdigest(), "boot_aggregate": aggregate}


def _tpm(sys_root: Path) -> str | None:
    tpm = sys_root / "class" / "tpm" / "tpm0"
    if not tpm.exists():
        return None
    try:
        return "2.0" if (tpm / "tpm_version_major").read_text().strip() == "2" else "1.2"
    except OSError:
        return "unknown"
