"""How this host booted, as far as it can show: the platform side of ``security.secure_boot``.

Two links can be verified on a gateway (``edge_min.security.boot`` decides what is enough):

- **the signed launcher**: the gateway binary's launcher (``targets/gateway/launcher.c``)
  checks the Ed25519 signature over its whole file before it unpacks or runs anything, then
  starts the program with ``EDGE_MIN_BOOT_VERIFIED=<key id>`` and
  ``EDGE_MIN_BOOT_KEY_KIND=<development|release>``. That is a *claim by the verified
  launcher*, passed in the environment: it is honoured only inside the compiled program the
  launcher starts (a source run with the variable set is not believed), and it is only as
  strong as whatever started that launcher.
- **UEFI Secure Boot**: the firmware's ``SecureBoot`` variable (efivarfs: 4 bytes of
  attributes, then the value; 1 is on). The firmware image (a later issue) boots this way.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

#: The EFI global variable GUID (UEFI spec, 3.3).
SECURE_BOOT_VAR = "SecureBoot-8be4df61-93ca-11d2-aa0d-00e098032b8c"
VERIFIED_ENV = "EDGE_MIN_BOOT_VERIFIED"
KEY_KIND_ENV = "EDGE_MIN_BOOT_KEY_KIND"


@dataclass(frozen=True)
class BootChain:
    """What verified this boot: the launcher's key, UEFI Secure Boot, and what is missing.

    ``launcher_key`` is the key id the signed launcher verified the program with (``None``:
    not started by a verified launcher); ``uefi_secure_boot`` is the firmware's state
    (``None``: no EFI variables to tell); ``missing`` says, one phrase each, why a link is not
    verified.
    """

    launcher_key: str | None = None
    launcher_key_kind: str | None = None
    uefi_secure_boot: bool | None = None
    missing: tuple[str, ...] = ()

    @property
    def verified(self) -> bool:
        """Whether at least one link (the signed launcher or UEFI Secure Boot) is verified."""
        return self.launcher_key is not None or self.uefi_secure_boot is True

    def as_dict(self) -> dict[str, object]:
        """For ``edge-min status`` and ``GET /status``."""
        return {
            "verified": self.verified,
            "launcher_key": self.launcher_key,
            "launcher_key_kind": self.launcher_key_kind,
            "uefi_secure_boot": self.uefi_secure_boot,
            "missing": list(self.missing),
        }


def read_boot_chain(
    environ: Mapping[str, str], sys_root: str | Path = "/sys", *, compiled: bool
) -> BootChain:
    """The boot chain of this process: the launcher's claim in ``environ`` (believed only when
    ``compiled``, i.e. this is the program the launcher starts) and the EFI variable under
    ``sys_root``."""
    missing: list[str] = []
    key = environ.get(VERIFIED_ENV) or None
    kind = environ.get(KEY_KIND_ENV) or None
    if key is not None and not compiled:
        missing.append(
            f"no signed launcher ({VERIFIED_ENV} is set, but this is not the compiled program "
            "the gateway binary's launcher starts, so it is not believed)"
        )
        key = kind = None
    elif key is None:
        missing.append(
            "no signed launcher (not started by the gateway binary, whose launcher checks "
            "its signature: this looks like a source run)"
        )
    var = Path(sys_root) / "firmware" / "efi" / "efivars" / SECURE_BOOT_VAR
    uefi: bool | None = None
    try:
        data = var.read_bytes()
    except OSError:
        missing.append(f"no UEFI Secure Boot state ({var} cannot be read: not booted by UEFI)")
    else:
        if len(data) < 5:
            missing.append(f"no UEFI Secure Boot state ({var} holds {len(data)} bytes, not 5)")
        else:
            uefi = data[-1] == 1
            if not uefi:
                missing.append(f"UEFI Secure Boot is off ({var} is {data[-1]})")
    return BootChain(key, kind, uefi, tuple(missing))


def this_process_boot_chain(sys_root: str | Path = "/sys") -> BootChain:
    """``read_boot_chain`` for this process: its environment, and compiled if Nuitka built it."""
    return read_boot_chain(os.environ, sys_root, compiled="__compiled__" in globals())
