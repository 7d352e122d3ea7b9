"""``security.secure_boot``: refuse to start on a boot chain nothing verified.

The ``SecureBoot`` subsystem opens first, before any data is touched. With
``security.secure_boot: true`` it asks the platform's ``boot_chain()``
(``edge_min.platform.boot``) and raises ``BootChainUnverified`` unless a link is verified:

- the gateway binary's **signed launcher** checked the Ed25519 signature over its whole file
  before running anything (``targets/gateway/launcher.c``) and said so to the program it
  started (a claim by the verified launcher, believed only in that compiled program);
- or **UEFI Secure Boot** is on (the firmware image, a later issue).

The error names what is missing and the two ways out: start from the signed binary (or the
firmware image), or set ``security.secure_boot: false``. A binary signed with the build's
development key starts, with a warning: that key is for development only. With
``secure_boot: false`` nothing is checked. ``status()`` shows what verified the boot.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from edge_min.errors import BootChainUnverified
from edge_min.subsystem import Subsystem

if TYPE_CHECKING:
    from edge_min.config import EdgeConfig
    from edge_min.platform import Platform
    from edge_min.platform.boot import BootChain

log = logging.getLogger("edge_min.security.boot")

FIX = (
    "start edge-min from the signed gateway binary (make binary) or the firmware image, or "
    "set security.secure_boot: false in edge-config.yaml to run without a verified boot chain"
)


def check_boot_chain(config: EdgeConfig, platform: Platform) -> BootChain | None:
    """The verified boot chain when ``security.secure_boot`` is true (``None`` when it is
    false: nothing checked); ``BootChainUnverified`` if nothing verified it."""
    if not config.security.secure_boot:
        return None
    chain = platform.boot_chain()
    if not chain.verified:
        where = config.source or "the embedded default config"
        raise BootChainUnverified(
            f"{where}: security.secure_boot is true, but the boot chain cannot be verified: "
            f"{'; '.join(chain.missing)}. To fix it, {FIX}",
            missing=list(chain.missing),
        )
    if chain.launcher_key is not None:
        log.info("boot chain: signed launcher verified the program (key %s)", chain.launcher_key)
        if chain.launcher_key_kind == "development":
            log.warning(
                "boot chain: this binary is signed with a development key (%s); sign release "
                "builds with EDGE_MIN_SIGNING_KEY (build/README.md)",
                chain.launcher_key,
            )
    if chain.uefi_secure_boot:
        log.info("boot chain: UEFI Secure Boot is on")
    return chain


class SecureBoot(Subsystem):
    """Checks the boot chain before anything else opens (``security.secure_boot``)."""

    name = "boot"
    needs = ()

    def open(self) -> None:
        """Refuse to start on an unverified boot chain when ``secure_boot`` is true."""
        self.chain = check_boot_chain(self.host.config, self.host.platform)

    def status(self) -> Mapping[str, Any]:
        """``boot``: what verified the boot, or that it was not checked."""
        if self.chain is None:
            return {"boot": {"checked": False, "why": "security.secure_boot is false"}}
        return {"boot": {"checked": True, **self.chain.as_dict()}}
