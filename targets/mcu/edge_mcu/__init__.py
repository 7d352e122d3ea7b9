"""edge_min's MicroPython shim (docs/mcu.md): its own small core, the gateway's protocol."""

import sys


def unload(name: str) -> None:
    """Forget the submodule ``name`` so the heap its code holds is collected (code run once:
    the config check, opening the log, enrollment)."""
    sys.modules.pop("edge_mcu." + name, None)
    globals().pop(name, None)
