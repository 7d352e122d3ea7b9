"""Build ``dist/edge-min-linux-aarch64``: ``build/build_binary.py``, run inside the arm64 root.

Run by ``build/arm64/in_root.sh`` with the root's venv Python, under qemu-user-static. The
Nuitka options are not repeated here: this calls ``build_binary.main`` itself, so the
aarch64 binary is built exactly like the x86_64 one (its name comes from
``platform.machine()``, which is ``aarch64`` in the root). Two things differ:

- the C compiler: ``CC`` names ``build/arm64/zig-aarch64-cc`` (set by ``in_root.sh``), the
  host's native zig, so Nuitka's C compilation is not emulated;
- the output folder: ``build/out/aarch64/<variant>``, so an x86_64 build in the same tree
  (``build/out/<variant>``) and this one never share Nuitka's build directory.
"""

from __future__ import annotations

import os
import platform
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

import build_binary  # type: ignore[import-not-found,unused-ignore]  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    """Check that this runs as aarch64 with the zig wrapper, then run build_binary.main."""
    if platform.machine() != "aarch64":
        raise SystemExit(f"build_arm64: run inside the arm64 root, not on {platform.machine()}")
    cc = os.environ.get("CC", "")
    if "zig" not in Path(cc).name or not os.access(cc, os.X_OK):
        raise SystemExit(f"build_arm64: CC={cc!r}; set it to {HERE / 'zig-aarch64-cc'}")
    build_binary.OUT = build_binary.OUT / "aarch64"
    return build_binary.main(argv)


if __name__ == "__main__":
    sys.exit(main())
