"""``python -m edge_min.central serve ...``."""

from __future__ import annotations

import sys

from edge_min.central.cli import main

if __name__ == "__main__":
    sys.exit(main())
