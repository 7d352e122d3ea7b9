"""Opening the flash log: the checkpoint, the segments, and a torn last record cut away.

Run once by ``FlashLog.__init__`` and unloaded after, so its code does not stay in the heap.
"""

import json
import os

from edge_mcu.flashlog import FlashLog, _size


class CheckpointError(ValueError):
    """The checkpoint file is not one this shim wrote: refuse to start over silently."""


def open_log(self: FlashLog) -> None:
    """Fill ``self`` (a FlashLog) from the flash: acked, last_seq, segments, repaired."""
    makedirs(self.dir)
    self.acked = _read_checkpoint(self)
    self.last_seq = self.acked
    _recover(self)


def makedirs(path: str) -> None:
    """Make ``path`` and its parents (MicroPython's os has no makedirs)."""
    built = ""
    for part in path.split("/"):
        built = built + "/" + part if built or path.startswith("/") else part
        if part and _size(built) < 0:
            try:
                os.mkdir(built)
            except OSError:
                pass


def _read_checkpoint(self: FlashLog) -> int:
    try:
        with open(self.ckpt) as f:
            doc = json.loads(f.read())
        acked = doc["acked"]
        if isinstance(acked, int) and acked >= 0:
            return acked
    except OSError:
        return 0
    except (ValueError, KeyError, TypeError):
        pass
    raise CheckpointError(
        "%s is not a checkpoint this shim wrote; restore it or delete the data_dir to "
        "start over (unsynced readings there would be lost)" % self.ckpt
    )


def _recover(self: FlashLog) -> None:
    firsts = []
    for name in os.listdir(self.dir):
        if name.endswith(".seg") and name[:-4].isdigit():
            firsts.append(int(name[:-4]))
        elif name.endswith(".tmp"):
            os.remove(self.dir + "/" + name)
    firsts.sort()
    for first in firsts:
        self.segments.append([first, _size(self._path(first))])
    if not self.segments:
        return
    first, size = self.segments[-1]
    valid, last = _scan_end(self, first)
    if valid < size:
        self.repaired = size - valid
        self._log(
            "log: cut %d torn bytes after the last whole record of %d.seg" % (size - valid, first)
        )
        _rewrite(self, first, valid)
        self.segments[-1][1] = valid
    if valid == 0:
        os.remove(self._path(first))
        self.segments.pop()
        last = _last_of_closed(self)
    if last > self.last_seq:
        self.last_seq = last


def _last_of_closed(self: FlashLog) -> int:
    if not self.segments:
        return 0
    return _scan_end(self, self.segments[-1][0])[1]


def _scan_end(self: FlashLog, first: int) -> tuple[int, int]:
    """(bytes of whole frames, last seq in them) of one segment."""
    pos, last = 0, 0
    with open(self._path(first), "rb") as f:
        while True:
            rec, size = self._read_at(f)
            if rec is None:
                return pos, last
            pos += size
            last = rec[0]


def _rewrite(self: FlashLog, first: int, valid: int) -> None:
    path = self._path(first)
    with open(path, "rb") as src, open(path + ".tmp", "wb") as dst:
        left = valid
        while left:
            chunk = src.read(min(left, 512))
            dst.write(chunk)
            left -= len(chunk)
        dst.flush()
    os.remove(path)
    os.rename(path + ".tmp", path)
