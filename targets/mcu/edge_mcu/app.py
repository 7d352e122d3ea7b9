"""The shim's program: sample sensors, run the rules, log each execution, sync with central.

Two ``asyncio`` tasks share the log: the sampler takes a reading of every sensor each
``sample_interval`` (one record, one agent execution, per reading) and the syncer pushes
when ``batch_size`` records wait or ``sync_interval`` has passed, backing off exponentially
with jitter (``backoff_min`` .. ``backoff_max`` seconds) after a failure. With ``readings``
N > 0 the sampler stops once seq N is taken and the program ends when central has
acknowledged all of them, printing one ``SUMMARY {json}`` line; seq survives restarts, so a
killed and restarted device goes on where it stopped. When the log is full the sampler
pauses (``log full`` once) until central acknowledges records: nothing unsynced is dropped.
"""

import asyncio
import gc
import json
import os
import time

from edge_mcu import agents
from edge_mcu.flashlog import FlashLog, LogFull
from edge_mcu.net import Http
from edge_mcu.sync import Syncer, SyncFailed

try:
    from typing import Any
except ImportError:  # MicroPython: annotations are not evaluated, nothing to import
    pass

# Boards count seconds from 2000 unless set otherwise; records carry Unix milliseconds.
_EPOCH = 946684800 if time.gmtime(0)[0] == 2000 else 0


def log(msg: str) -> None:
    print("mcu:", msg)


def now_ms() -> int:
    return time.time_ns() // 1000000 + _EPOCH * 1000


def largest_free() -> int:
    """The largest block the heap can give now (bytes): fragmentation, measured."""
    gc.collect()
    low, high = 0, gc.mem_free()
    while high - low > 64:
        mid = (low + high) // 2
        try:
            probe = bytearray(mid)
            del probe
            low = mid
        except MemoryError:
            high = mid
    gc.collect()
    return low


class App:
    def __init__(
        self, conf: dict[str, Any], buffers: tuple[bytearray, bytearray] | None = None
    ) -> None:
        self.conf = conf
        payload, answer = buffers or (None, None)
        if payload is None or len(payload) != conf["batch_bytes"]:
            payload = bytearray(conf["batch_bytes"])
        self.flashlog = FlashLog(
            conf["data_dir"], conf["max_log_bytes"], conf["segment_bytes"], log
        )
        self.http = Http(conf["central_url"], conf["timeout"], conf["ca_file"], answer)
        self.syncer = Syncer(conf, self.flashlog, self.http, log, payload)
        self.sensors = [(s["name"], agents.make_sensor(s)) for s in conf["sensors"]]
        self.rules = agents.Rules(conf["rules"])
        self.done_sampling = False
        self.full = False
        self.wake = asyncio.Event()
        self.errors = 0
        self.min_free = gc.mem_free()

    async def sample(self) -> None:
        interval = self.conf["sample_interval"]
        target = self.conf["readings"]
        while True:
            if target and self.flashlog.last_seq >= target:
                self.done_sampling = True
                self.wake.set()
                return
            for name, sensor in self.sensors:
                if target and self.flashlog.last_seq >= target:
                    break
                at = now_ms()
                try:
                    value = sensor.read()
                    self.flashlog.append((at, name, value, self.rules.run(name, value, at)))
                except LogFull as exc:
                    if not self.full:
                        log("log full: %s; readings paused until central acknowledges some" % exc)
                    self.full = True
                    self.wake.set()
                    await asyncio.sleep(max(interval, 0.5))
                    break
                except Exception as exc:  # a sensor or the flash failed: say why, go on
                    self.errors += 1
                    log("sample of %s failed: %s: %s" % (name, type(exc).__name__, exc))
                    gc.collect()
                    await asyncio.sleep(max(interval, 0.5))
                    break
                if self.full:
                    log("log has room again: readings resumed")
                    self.full = False
            if self.flashlog.unsynced() >= self.conf["batch_size"]:
                self.wake.set()
            free = gc.mem_free()
            if free < self.min_free:
                self.min_free = free
            await asyncio.sleep(interval)

    async def _wait(self, seconds: float) -> None:
        try:
            await asyncio.wait_for(self.wake.wait(), seconds)
        except asyncio.TimeoutError:
            pass
        self.wake.clear()

    async def sync(self) -> None:
        conf = self.conf
        backoff = conf["backoff_min"]
        while True:
            try:
                if not self.syncer.ready():
                    await self.syncer.enroll()
                while await self.syncer.push():
                    gc.collect()
                backoff = conf["backoff_min"]
            except Exception as exc:  # a device keeps running: say why, retry
                self.errors += 1
                why = str(exc)
                if not isinstance(exc, SyncFailed):
                    why = "unexpected %s: %s" % (type(exc).__name__, exc)
                    gc.collect()
                log("sync failed, retry in %.1fs: %s" % (backoff, why))
                await asyncio.sleep(backoff * (0.5 + (os.urandom(1)[0] / 255.0)))
                backoff = min(max(backoff * 2, 0.05), conf["backoff_max"])
                continue
            if self.done_sampling and self.flashlog.unsynced() == 0:
                return
            await self._wait(conf["sync_interval"])

    async def run(self) -> None:
        start_largest = largest_free()
        sampler = asyncio.create_task(self.sample())
        await self.sync()
        await sampler
        self.flashlog.close()
        end_largest = largest_free()
        summary = {
            "device_id": self.conf["device_id"],
            "last_seq": self.flashlog.last_seq,
            "acked": self.flashlog.acked,
            "batches": self.syncer.batches,
            "sync_errors": self.errors,
            "rejected": self.syncer.rejected,
            "refused_frames": self.syncer.refused,
            "largest_free_start": start_largest,
            "largest_free_end": end_largest,
            "min_free": self.min_free,
            "heap_total": gc.mem_free() + gc.mem_alloc(),
            "sent_bytes": self.http.sent,
            "received_bytes": self.http.received,
            "requests": self.http.requests,
        }
        print("SUMMARY " + json.dumps(summary))


def main(
    conf: dict[str, Any],
    argv: list[str],
    buffers: tuple[bytearray, bytearray] | None = None,
) -> int:
    """Run the checked ``conf`` (``edge_mcu.config.load``); the exit code. ``buffers``:
    the payload and answer buffers, allocated early by ``main.py``."""
    if "--check-log" in argv:
        from edge_mcu import tool

        tool.check_log(conf, log)
        return 0
    try:
        app = App(conf, buffers)
    except ValueError as exc:  # an unreadable checkpoint: refuse to start over silently
        print("mcu: cannot start: %s" % exc)
        return 1
    asyncio.run(app.run())
    return 0
