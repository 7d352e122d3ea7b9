"""A firmware image booted under QEMU: start, wait for its API, cut its power, read its disk.

``Guest`` runs ``firmware/qemu.sh`` (which ``exec``s QEMU, so the process *is* QEMU and a
SIGKILL is a power cut), forwards a free host port to the guest's API and keeps the serial
console in a file. ``read_data`` reads files off the image's ``edge-data`` partition without
booting or mounting it: the partition is copied out, its ext4 journal replayed (as the
kernel does at mount) and the files dumped with ``debugfs``.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from tests.conftest import ROOT, free_port

QEMU_SH = ROOT / "firmware" / "qemu.sh"


def copy_image(source: Path, dest: Path) -> Path:
    """A sparse copy of a built image (and its enrolled Secure Boot variables), for one test
    to boot and damage."""
    subprocess.run(["cp", "--sparse=always", str(source), str(dest)], check=True)
    vars_fd = source.with_suffix(".secboot-vars.fd")
    if vars_fd.exists():
        shutil.copy(vars_fd, dest.with_suffix(".secboot-vars.fd"))
    return dest


class Guest:
    """One firmware image and the QEMU process booting it."""

    def __init__(
        self, image: Path, arch: str, *, seed: Path | None = None, secure_boot: bool = True
    ) -> None:
        self.image = image
        self.secure_boot = secure_boot and image.with_suffix(".secboot-vars.fd").exists()
        self.arch = arch
        self.seed = seed
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None
        self.boots = 0
        self.serial = image.with_suffix(".serial")
        self.started = 0.0
        self.token: str | None = None

    # -- power ----------------------------------------------------------------------------

    def start(self) -> None:
        assert self.proc is None or self.proc.poll() is not None, "already running"
        self.boots += 1
        self.serial = self.image.with_name(f"{self.image.stem}.boot{self.boots}.serial")
        argv = ["bash", str(QEMU_SH), str(self.image), "--arch", self.arch,
                "--api-port", str(self.port), "--serial", str(self.serial)]  # fmt: skip
        if self.seed is not None:
            argv += ["--seed", str(self.seed)]
        if self.secure_boot:
            argv.append("--secure-boot")
        self.started = time.monotonic()
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL, start_new_session=True)  # fmt: skip

    def cut(self) -> None:
        """Pull the plug: SIGKILL QEMU (its disk writes stop where they are)."""
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def console(self) -> str:
        try:
            return self.serial.read_text(errors="replace")
        except OSError:
            return ""

    def consoles(self) -> str:
        """Every boot's console so far, in order (for failure messages)."""
        parts = sorted(self.image.parent.glob(f"{self.image.stem}.boot*.serial"),
                       key=lambda p: int(p.suffixes[-2][5:]))  # fmt: skip
        return "\n".join(f"--- {p.name}\n{p.read_text(errors='replace')[-6000:]}" for p in parts)

    # -- the API --------------------------------------------------------------------------

    def request(
        self, method: str, path: str, body: Any = None, timeout: float = 10
    ) -> tuple[int, Any]:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.url + path, data=data, method=method)
        if self.token:
            req.add_header("Authorization", f"Bearer {self.token}")
        if data is not None:
            req.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                raw, status = resp.read(), resp.status
        except urllib.error.HTTPError as err:
            raw, status = err.read(), err.code
        try:
            return status, json.loads(raw)
        except ValueError:
            return status, raw.decode(errors="replace")

    def health(self) -> dict[str, Any] | None:
        try:
            status, body = self.request("GET", "/health", timeout=3)
        except (OSError, ValueError):
            return None
        return body if status in (200, 503) and isinstance(body, dict) else None

    def wait_healthy(self, timeout: float = 240.0, want: str = "healthy") -> float:
        """Seconds from QEMU's start to /health answering ``want``; AssertionError else."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            h = self.health()
            if h is not None and h.get("health") == want:
                return time.monotonic() - self.started
            if not self.alive():
                break
            time.sleep(0.5)
        raise AssertionError(
            f"no {want} /health in {timeout:.0f}s (qemu alive: {self.alive()})\n{self.consoles()}"
        )

    def wait_console(self, text: str, timeout: float = 240.0) -> float:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if text in self.console():
                return time.monotonic() - self.started
            time.sleep(0.5)
        raise AssertionError(f"{text!r} not on the console in {timeout:.0f}s\n{self.consoles()}")

    def status(self) -> dict[str, Any]:
        status, body = self.request("GET", "/status")
        assert status == 200, body
        return dict(body)

    def stop(self) -> None:
        self.cut()


# -- the data partition, read from the host ---------------------------------------------------


def partition(image: Path, name: str) -> tuple[int, int]:
    table = json.loads(subprocess.run(["sfdisk", "-J", str(image)], capture_output=True,
                                      text=True, check=True).stdout)  # fmt: skip
    for part in table["partitiontable"]["partitions"]:
        if part.get("name") == name:
            return int(part["start"]) * 512, int(part["size"]) * 512
    raise AssertionError(f"{image} has no partition {name}")


def extract_data(image: Path, dest: Path) -> Path:
    """The image's edge-data partition as a file, its journal replayed (a mount would)."""
    start, size = partition(image, "edge-data")
    with open(image, "rb") as src, open(dest, "wb") as out:
        src.seek(start)
        left = size
        while left:
            chunk = src.read(min(1 << 22, left))
            if not chunk:
                break
            out.write(chunk)
            left -= len(chunk)
    subprocess.run(["e2fsck", "-E", "journal_only", "-y", str(dest)], capture_output=True)
    check = subprocess.run(["e2fsck", "-fn", str(dest)], capture_output=True, text=True)
    assert check.returncode == 0, f"e2fsck of the data partition: {check.stdout}{check.stderr}"
    return dest


def read_data(partition: Path, path: str) -> bytes | None:
    """A file of an extracted data partition (None if absent)."""
    out = partition.with_name(partition.name + ".dump")
    out.unlink(missing_ok=True)
    subprocess.run(["debugfs", "-R", f"dump {path} {out}", str(partition)],
                   capture_output=True, check=False)  # fmt: skip
    if not out.exists():
        return None
    data = out.read_bytes()
    out.unlink()
    return data


def have_qemu(arch: str) -> str | None:
    """Why this machine cannot boot ``arch`` images, or None."""
    binary = {"x86_64": "qemu-system-x86_64", "aarch64": "qemu-system-aarch64"}[arch]
    if shutil.which(binary) is None:
        return f"{binary} is not installed (firmware/deps.sh)"
    return None
