"""The durable log on flash: append-only framed records in segments, and an ack checkpoint.

Each reading's execution is one record, appended with one ``write`` and flushed before the
reading counts as taken::

    length u16 | crc32 u32 (of the length bytes and the payload) | payload

The payload is the CBOR list ``[seq, at_ms, sensor, reading, output map]``; readers get it as
``(seq, payload bytes)`` and decode only what they need (``cbor.head_items``).

Segments are files ``<data_dir>/log/<first seq>.seg`` of at most ``segment_bytes``; the
checkpoint ``<data_dir>/ckpt.json`` holds the highest seq central acknowledged, replaced
whole (write a temporary file, then rename over it). A reset or power loss at any byte
therefore loses at most the record being written: on start the last segment is read frame
by frame, and whatever follows its last whole frame (a torn length, payload or crc) is cut
away by rewriting the valid prefix, so the next append never lands behind garbage. Earlier
segments are closed and never written again.

The log is bounded by ``max_bytes``: segments whose records are all acknowledged are
deleted, oldest first, and when only unacknowledged records remain ``append`` raises
``LogFull``. Nothing unsynced is ever dropped to make room: the caller stops taking readings
and says so until central acknowledges some.
"""

import binascii
import json
import os
import struct

from edge_mcu import cbor

try:
    from typing import Any
except ImportError:  # MicroPython: annotations are not evaluated, nothing to import
    pass

_HEAD = 6
MAX_RECORD = 0xFFFF


class LogFull(Exception):
    """No room left inside the log's bound without dropping unsynced records."""


def _size(path: str) -> int:
    try:
        return os.stat(path)[6]
    except OSError:
        return -1


def _crc(length_bytes: bytes, payload: bytes) -> int:
    return binascii.crc32(payload, binascii.crc32(length_bytes)) & 0xFFFFFFFF


def replace_file(path: str, data: str | bytes) -> None:
    """Write ``data`` to ``path`` whole or not at all (temporary file, then rename)."""
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
    try:
        os.rename(tmp, path)
    except OSError:  # FAT will not rename over a file: the one non-atomic step, on FAT only
        os.remove(path)
        os.rename(tmp, path)


class FlashLog:
    """Records by seq (from 1, never reused), with the acknowledged cursor."""

    def __init__(
        self,
        data_dir: str,
        max_bytes: int = 262144,
        segment_bytes: int = 8192,
        log: Any = print,
    ) -> None:
        self.dir = data_dir + "/log"
        self.ckpt = data_dir + "/ckpt.json"
        self.max_bytes = max_bytes
        self.segment_bytes = segment_bytes
        self._log = log
        self.segments = []  # type: list[list[int]]  # [first seq, bytes], oldest first
        self.repaired = 0
        self._out = None  # type: Any
        self._torn = False  # a write failed: the next record opens a new segment
        # (segment index, offset) of the first unacknowledged record
        self._rpos = None  # type: tuple[int, int] | None
        self.acked = 0
        self.last_seq = 0
        # Opening (checkpoint, segments, torn tail) runs once: its code is unloaded after.
        import edge_mcu
        from edge_mcu import recover

        recover.open_log(self)
        del recover
        edge_mcu.unload("recover")

    def _path(self, first: int) -> str:
        return "%s/%010d.seg" % (self.dir, first)

    @staticmethod
    def _read_at(f: Any) -> tuple[Any, int]:
        """(record, frame size) of the frame at the file's position, or (None, 0)."""
        head = f.read(_HEAD)
        if len(head) < _HEAD:
            return None, 0
        length, crc = struct.unpack(">HI", head)
        payload = f.read(length)
        if len(payload) < length or _crc(head[:2], payload) != crc:
            return None, 0
        try:
            seq = cbor.head_items(payload, 1)[0][0]
        except cbor.CborError:
            return None, 0
        if not isinstance(seq, int) or seq < 1:
            return None, 0
        return (seq, payload), _HEAD + length

    # -- writing -------------------------------------------------------------------------
    def used_bytes(self) -> int:
        """Bytes of every segment."""
        return sum(s[1] for s in self.segments)

    def unsynced(self) -> int:
        """How many records central has not acknowledged."""
        return self.last_seq - self.acked

    def append(self, fields: tuple[Any, ...]) -> int:
        """Write the record ``[next seq] + fields`` durably and return its seq; ``LogFull``."""
        seq = self.last_seq + 1
        payload = cbor.dumps([seq] + list(fields))
        if len(payload) > MAX_RECORD:
            raise ValueError("a record of %d bytes is past %d" % (len(payload), MAX_RECORD))
        length = struct.pack(">H", len(payload))
        frame = length + struct.pack(">I", _crc(length, payload)) + payload
        if self.used_bytes() + len(frame) > self.max_bytes:
            self.reclaim()
            if self.used_bytes() + len(frame) > self.max_bytes:
                raise LogFull(
                    "the log holds %d bytes (max_log_bytes %d) and %d readings central has "
                    "not acknowledged" % (self.used_bytes(), self.max_bytes, self.unsynced())
                )
        if (
            self._torn
            or not self.segments
            or self.segments[-1][1] + len(frame) > self.segment_bytes
        ):
            self.close()
            self.segments.append([seq, 0])
            self._torn = False
        try:
            if self._out is None:
                self._out = open(self._path(self.segments[-1][0]), "ab")
            self._out.write(frame)
            self._out.flush()
        except Exception:
            # A write that failed may have left part of the frame: never append behind it.
            # The next record opens a new segment; readers stop at this one's last whole
            # frame (its size here counts whole frames only) and go on to the next.
            self.close()
            if self.segments[-1][1] == 0:
                try:
                    os.remove(self._path(self.segments[-1][0]))
                except OSError:
                    pass
                self.segments.pop()
            else:
                self._torn = True
            raise
        self.segments[-1][1] += len(frame)
        self.last_seq = seq
        return seq

    def close(self) -> None:
        """Close the segment being written."""
        if self._out is not None:
            self._out.close()
            self._out = None

    # -- reading and acknowledging -------------------------------------------------------
    def pending(self, limit: int, max_bytes: int = 2048) -> list[tuple[int, bytes, Any]]:
        """Up to ``limit`` ``(seq, payload, position after it)`` after the acknowledged seq,
        in order (about ``max_bytes`` of them at most); ``ack`` takes the position."""
        out = []  # type: list[tuple[int, bytes, Any]]
        index, offset = self._start()
        total = 0
        while index < len(self.segments) and len(out) < limit and total < max_bytes:
            first, size = self.segments[index]
            if offset >= size:
                index, offset = index + 1, 0
                continue
            with open(self._path(first), "rb") as f:
                f.seek(offset)
                while offset < size and len(out) < limit and total < max_bytes:
                    rec, n = self._read_at(f)
                    if rec is None:
                        self._log("log: %d.seg unreadable after byte %d; skipped" % (first, offset))
                        offset = size
                        break
                    offset += n
                    if rec[0] > self.acked:
                        out.append((rec[0], rec[1], (index, offset)))
                        total += n
        return out

    def _start(self) -> tuple[int, int]:
        if self._rpos is not None:
            return self._rpos
        index = 0
        for i, segment in enumerate(self.segments):
            first = segment[0]
            if first <= self.acked + 1:
                index = i
        return index, 0

    def ack(self, seq: int, pos: tuple[int, int] | None = None) -> None:
        """Central acknowledged every record up to ``seq``: move the checkpoint there."""
        if seq <= self.acked:
            return
        replace_file(self.ckpt, json.dumps({"acked": seq}))
        self.acked = seq
        self._rpos = pos
        if self.used_bytes() > self.max_bytes // 2:
            self.reclaim()

    def reclaim(self) -> int:
        """Delete segments whose records are all acknowledged, oldest first."""
        dropped = 0
        while len(self.segments) > 1 and self.segments[1][0] <= self.acked + 1:
            os.remove(self._path(self.segments[0][0]))
            self.segments.pop(0)
            dropped += 1
        if dropped and self._rpos is not None:
            self._rpos = (self._rpos[0] - dropped, self._rpos[1])
        if len(self.segments) == 1 and self.last_seq == self.acked and self.segments[0][1] > 0:
            # Everything is acknowledged: the next append starts a fresh segment.
            self.close()
            os.remove(self._path(self.segments[0][0]))
            self.segments.pop()
            self._rpos = None
        return dropped
