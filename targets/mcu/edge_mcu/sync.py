"""Sync with central: enrollment, then push batches of the log, acknowledged item by item.

A batch is the next ``batch_size`` unacknowledged records of the log, sent as one push frame
of ``agent_executions`` items with the batch id ``"{device}:{first seq}-{last seq}"`` and
item ids ``"{device}:{seq}"``. Central applies a batch once (a replayed batch id answers the
stored result) and each item by compare-and-set (``base_version`` null: insert only), so a
record sent again in another batch after a cut comes back as a ``conflict`` whose current
row is ours (same origin and hlc): that counts as delivered. The checkpoint moves only after
a push_result frame that opened, verified and answers every item of the batch: a cut at any
byte of the exchange leaves it where it was, and the same records go again. A conflict with
someone else's row is counted as ``rejected`` and logged; it can never be accepted.

Enrollment: with a ``claim_token`` and no key yet, ``POST /api/enroll`` with the token and
device id (no CSR: central issues a sync key and no certificate); the key is kept in
``<data_dir>/sync.key`` (hex, replaced whole). A configured ``sync_key`` skips it.
"""

import time

from edge_mcu import cbor, frame
from edge_mcu.flashlog import FlashLog
from edge_mcu.net import Http, NetError
from edge_mcu.suite import Suite

try:
    from typing import Any
except ImportError:  # MicroPython: annotations are not evaluated, nothing to import
    pass

ENTITY = "agent_executions"
CONTENT_TYPE = "application/x-edge-min-sync"


class SyncFailed(Exception):
    """This attempt failed; the reason is the message. The caller backs off and retries."""


def iso(ms: int) -> str:
    t = time.gmtime(ms // 1000)
    return "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ" % (
        t[0],
        t[1],
        t[2],
        t[3],
        t[4],
        t[5],
        ms % 1000,
    )


class Syncer:
    def __init__(
        self,
        conf: dict[str, Any],
        flashlog: FlashLog,
        http: Http,
        log: Any = print,
        buf: bytearray | None = None,
    ) -> None:
        self.conf = conf
        self.device = conf["device_id"]
        self.flashlog = flashlog
        self.http = http
        self._log = log
        self.key_path = conf["data_dir"] + "/sync.key"
        self.suite = None
        self.rejected = 0
        self.refused = 0
        self.batches = 0
        # One payload buffer for the life of the program: a push builds, seals and sends its
        # frame in it, so the heap does not fragment batch after batch.
        self.buf = buf if buf is not None else bytearray(conf["batch_bytes"])
        key = conf["sync_key"] or self._stored_key()
        if key:
            self.suite = Suite(bytes.fromhex(key))

    def _stored_key(self) -> str | None:
        try:
            with open(self.key_path) as f:
                return f.read().strip()
        except OSError:
            return None

    def ready(self) -> bool:
        """Whether the device can push (a key, or encryption turned off)."""
        return self.suite is not None or not self.conf["encryption"]

    async def enroll(self) -> None:
        """Claim the token for a sync key (``edge_mcu.enroll``, unloaded after)."""
        import edge_mcu
        from edge_mcu import enroll

        try:
            key = await enroll.claim(self.conf, self.http, self.key_path, self._log)
        finally:
            del enroll
            edge_mcu.unload("enroll")
        self.suite = Suite(bytes.fromhex(key))

    def _item(self, payload: bytes) -> tuple[str, str, dict[str, Any]]:
        (seq, at_ms, sensor, reading), pos = cbor.head_items(payload, 4)
        ident = "%s:%d" % (self.device, seq)
        at = iso(at_ms)
        row = {
            "id": ident,
            "agent_id": self.conf["agent_id"],
            "workflow_execution_id": "%s:readings" % self.device,
            "status": "completed",
            "input": {"reading": reading, "seq": seq},
            "output": cbor.Raw(bytes(memoryview(payload)[pos:])),
            "started_at": at,
            "completed_at": at,
            "metrics": {"sensor": sensor},
        }
        hlc = "%013d.%05d.%s" % (at_ms, 0, self.device)
        return (
            ident,
            hlc,
            {
                "id": ident,
                "base_version": None,
                "hlc": hlc,
                "row": row,
                "deleted": False,
            },
        )

    async def push(self) -> int:
        """Push the next batch; the number of records acknowledged (0: nothing pending)."""
        records = self.flashlog.pending(self.conf["batch_size"], len(self.buf) // 2)
        if not records:
            return 0
        buf = self.buf
        end = frame.HEAD_ROOM
        sent = {}  # type: dict[str, str]
        last = 0
        pos = None
        for seq, payload, after in records:
            ident, hlc, item = self._item(payload)
            data = cbor.dumps(item)
            del item
            if end + len(data) + 16 > len(buf):
                if not sent:
                    raise SyncFailed("record %d does not fit batch_bytes %d" % (seq, len(buf)))
                break
            buf[end : end + len(data)] = data
            end += len(data)
            sent[ident] = hlc
            last, pos = seq, after
        first = records[0][0]
        del records
        count = len(sent)
        batch = "%s:%d-%d" % (self.device, first, last)
        parts = frame.encode_parts(
            {"kind": "push", "node": self.device, "entity": ENTITY, "batch": batch},
            count,
            buf,
            end,
            self.suite,
        )
        headers = {
            "Content-Type": CONTENT_TYPE,
            "X-Edge-Node": self.device,
            "X-Edge-Sync-Accept": "none",
        }
        try:
            status, answer = await self.http.request("POST", "/api/sync/push", parts, headers)
        except NetError as exc:
            raise SyncFailed("push %s: %s" % (batch, exc)) from None
        del parts
        try:
            head, results = frame.decode(answer, self.suite)
        except frame.FrameError as exc:
            self.refused += 1
            raise SyncFailed(
                "push %s: refused central's answer (HTTP %d): %s" % (batch, status, exc)
            ) from None
        del answer
        if head["kind"] == "error" or status != 200:
            item = results[0] if results else {}
            raise SyncFailed(
                "push %s: central answered HTTP %d %s: %s"
                % (batch, status, item.get("code"), item.get("message"))
            )
        self._settle(batch, head, results, sent)
        self.flashlog.ack(last, pos)
        self.batches += 1
        return count

    def _settle(
        self,
        batch: str,
        head: dict[str, Any],
        results: list[dict[str, Any]],
        sent: dict[str, str],
    ) -> None:
        """Check the answer covers every item; count rejected conflicts. Raises SyncFailed."""
        if head["kind"] != "push_result" or head.get("batch") != batch:
            self.refused += 1
            raise SyncFailed(
                "push %s: the answer is for %r %r" % (batch, head["kind"], head.get("batch"))
            )
        seen = 0
        for result in results:
            ident = result.get("id")
            if ident not in sent:
                self.refused += 1
                raise SyncFailed("push %s: the answer names an item not sent: %r" % (batch, ident))
            seen += 1
            status = result.get("status")
            if status == "accepted":
                continue
            current = result.get("current")
            ours = (
                status == "conflict"
                and isinstance(current, dict)
                and current.get("origin") == self.device
                and current.get("hlc") == sent[ident]
            )
            if not ours:
                self.rejected += 1
                self._log(
                    "sync: central rejected %s (%s); it holds another row under that id"
                    % (ident, status)
                )
        if seen != len(sent):
            self.refused += 1
            raise SyncFailed("push %s: the answer covers %d of %d items" % (batch, seen, len(sent)))
