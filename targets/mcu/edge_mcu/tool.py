"""``main.py CONFIG --check-log``: open (and so repair) the log and print what it holds."""

import json

from edge_mcu.flashlog import FlashLog

try:
    from typing import Any
except ImportError:  # MicroPython: annotations are not evaluated, nothing to import
    pass


def check_log(conf: dict[str, Any], log: Any) -> None:
    """``--check-log``: open (and so repair) the log, print what it holds as JSON."""
    flashlog = FlashLog(conf["data_dir"], conf["max_log_bytes"], conf["segment_bytes"], log)
    seqs = [r[0] for r in flashlog.pending(1 << 30, 1 << 30)]
    print("LOG " + json.dumps({
        "last_seq": flashlog.last_seq, "acked": flashlog.acked, "repaired": flashlog.repaired,
        "pending": len(seqs),
        "first": seqs[0] if seqs else None, "last": seqs[-1] if seqs else None,
        "in_order": seqs == list(range(flashlog.acked + 1, flashlog.acked + 1 + len(seqs))),
    }))  # fmt: skip
    flashlog.close()
