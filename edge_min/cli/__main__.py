"""``python -m edge_min.cli``: the same as the ``edge-min`` command."""

from __future__ import annotations

import sys

from edge_min.cli import main

if __name__ == "__main__":
    sys.exit(main())
