"""The spec's deployment scripts (infra/scripts/) end to end, over a real SSH server.

The test starts Debian's ``sshd`` on 127.0.0.1 with its own config, host key and
authorized_keys in tmp_path, and "deploys" to that address: the package is built
(``--from-source``, or from the binary ``$EDGE_MIN_BIN`` points at), copied with scp,
installed by setup.sh into a scratch root in tmp_path (no /opt, no /etc, no systemd: the
runtime starts in the background on a free port), updated with a rollback, and managed
through a real ``edge-min central serve``. Needs openssh-server (``sshd``) and
openssh-client; a missing one fails the test with the command that installs it.
"""

from __future__ import annotations

import contextlib
import getpass
import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
SCRIPTS = REPO / "infra" / "scripts"
INSTALL_HINT = "apt-get install -y --no-install-recommends openssh-server openssh-client"
PACKAGE_FILES = {
    "edge-min",
    "meta-agent-edge.service",
    "setup.sh",
    "update.sh",
    "decommission.sh",
    "edgectl.sh",
    "device_common.sh",
    "VERSION",
    "BUILD_INFO",
    "SHA256SUMS",
    "config/edge-config.yaml",
    "config/sync-config.yaml",
    "config/edge-monitoring.yaml",
    "config/edge-security.yaml",
    "config/edge-agent-config.yaml",
}


# -- the SSH server ----------------------------------------------------------------------------


@dataclass
class SshServer:
    """A running sshd on 127.0.0.1 and the client options that reach it."""

    port: int
    user: str
    opts: str


def _tool(name: str, *extra_dirs: str) -> str:
    found = shutil.which(name) or next(
        (f"{d}/{name}" for d in extra_dirs if os.access(f"{d}/{name}", os.X_OK)), None
    )
    if found is None:
        pytest.fail(f"{name} is not installed; install it with `{INSTALL_HINT}` (CI: .ci/run)")
    return found


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def sshd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SshServer]:
    """sshd with a config, host key and authorized_keys of its own, stopped at the end."""
    sshd_bin = _tool("sshd", "/usr/sbin", "/usr/local/sbin")
    keygen = _tool("ssh-keygen")
    ssh = _tool("ssh")
    _tool("scp")
    root = tmp_path_factory.mktemp("sshd")
    for name in ("host_key", "client_key"):
        subprocess.run(
            [keygen, "-q", "-t", "ed25519", "-N", "", "-f", str(root / name)], check=True
        )
    (root / "authorized_keys").write_text((root / "client_key.pub").read_text())
    if os.geteuid() == 0:
        # Privilege separation wants this directory; Debian creates it only at boot.
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
    port = _free_port()
    config = root / "sshd_config"
    config.write_text(
        f"Port {port}\nListenAddress 127.0.0.1\nHostKey {root}/host_key\n"
        f"PidFile {root}/sshd.pid\nAuthorizedKeysFile {root}/authorized_keys\n"
        "PubkeyAuthentication yes\nPasswordAuthentication no\n"
        "KbdInteractiveAuthentication no\nPermitRootLogin prohibit-password\n"
        # tmp_path's modes are not sshd's business here; PAM would need a login setup.
        "StrictModes no\nUsePAM no\n"
        # scp speaks SFTP since OpenSSH 9.
        "Subsystem sftp internal-sftp\nLogLevel ERROR\n"
    )
    subprocess.run([sshd_bin, "-t", "-f", str(config)], check=True)
    user = getpass.getuser()
    opts = (
        f"-F /dev/null -i {root}/client_key -o IdentitiesOnly=yes "
        f"-o UserKnownHostsFile={root}/known_hosts -o StrictHostKeyChecking=accept-new "
        "-o LogLevel=ERROR"
    )
    log = open(root / "sshd.log", "wb")  # noqa: SIM115 (closed at teardown)
    proc = subprocess.Popen([sshd_bin, "-D", "-e", "-f", str(config)], stderr=log)
    try:
        deadline = time.monotonic() + 15
        while True:
            probe = subprocess.run(
                [ssh, *opts.split(), "-p", str(port), "-o", "BatchMode=yes",
                 f"{user}@127.0.0.1", "true"],
                capture_output=True,
                text=True,
            )  # fmt: skip
            if probe.returncode == 0:
                break
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(
                    f"sshd on 127.0.0.1:{port} refused us: {probe.stderr.strip()}\n"
                    f"sshd log: {(root / 'sshd.log').read_text()}"
                )
            time.sleep(0.2)
        yield SshServer(port=port, user=user, opts=opts)
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        log.close()


# -- packages ----------------------------------------------------------------------------------


def _build(out: Path, *args: str) -> Path:
    """build_edge_package.sh into ``out``: from the $EDGE_MIN_BIN binary, else --from-source."""
    binary = os.environ.get("EDGE_MIN_BIN")
    source = ["--binary", binary] if binary else ["--from-source"]
    started = time.monotonic()
    result = subprocess.run(
        [str(SCRIPTS / "build_edge_package.sh"), *source, *args, "--output", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    print(f"built {out.name} in {time.monotonic() - started:.1f}s: {result.stdout.strip()}")
    return out


@pytest.fixture(scope="module")
def package(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The package under test, built once."""
    return _build(tmp_path_factory.mktemp("pkg") / "meta-agent-edge.tar.gz")


def _broken_package(tmp_path: Path) -> Path:
    """A package whose edge-min passes ``config check`` but crashes on ``run``."""
    binary = tmp_path / "edge-min-broken"
    binary.write_text(
        '#!/bin/sh\ncase " $* " in *" run "*) echo "broken build" >&2; exit 3 ;; esac\nexit 0\n'
    )
    binary.chmod(0o755)
    out = tmp_path / "broken.tar.gz"
    result = subprocess.run(
        [str(SCRIPTS / "build_edge_package.sh"), "--binary", str(binary), "--version",
         "9.9.9-broken", "--output", str(out)],
        capture_output=True,
        text=True,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    return out


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _check_sums(folder: Path) -> list[str]:
    """Every file SHA256SUMS in ``folder`` names, checked here (not by the scripts)."""
    lines = (folder / "SHA256SUMS").read_text().splitlines()
    names = []
    for line in lines:
        digest, name = line.split(maxsplit=1)
        assert _sha256(folder / name) == digest, f"{name} does not match SHA256SUMS"
        names.append(name)
    return names


# -- a device: a scratch install root reached over ssh -----------------------------------------


@dataclass
class Device:
    """Where the scripts install, and the environment that tells them so."""

    prefix: Path
    conf: Path
    data: Path
    remote_tmp: Path
    env: dict[str, str]
    user: str

    def run(self, script: str, *args: str, ok: bool = True, **env: str) -> Any:
        """Run one of infra/scripts with this device's environment."""
        started = time.monotonic()
        result = subprocess.run(
            [str(SCRIPTS / script), *args],
            env={**self.env, **env},
            capture_output=True,
            text=True,
            timeout=300,
        )
        result.seconds = time.monotonic() - started
        print(f"{script} {' '.join(args)}: rc {result.returncode} in {result.seconds:.1f}s")
        if ok:
            assert result.returncode == 0, result.stdout + result.stderr
        return result

    def url(self) -> str:
        """The running runtime's base URL, from runtime.json."""
        return str(json.loads((self.data / "runtime.json").read_text())["url"])

    def health(self) -> dict[str, Any]:
        """GET /health of the installed runtime."""
        with urllib.request.urlopen(self.url() + "/health", timeout=10) as resp:
            assert resp.status == 200
            return dict(json.loads(resp.read()))

    def edge_min(self, *argv: str) -> Any:
        """The installed package's own ``edge-min`` with this device's config and data."""
        cmd = [str(self.prefix / "edge-min"), "--config", str(self.conf / "edge-config.yaml")]
        cmd += ["--data-dir", str(self.data), *argv]
        result = subprocess.run(cmd, env=self.env, capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, result.stdout + result.stderr
        return result

    def tamper_state(self) -> str:
        """The running runtime's tamper state (``security status``)."""
        return str(json.loads(self.edge_min("security", "status", "--json").stdout)["state"])

    def pid(self) -> int:
        """The background runtime's pid, which must be alive."""
        pid = int((self.data / "edge-min.pid").read_text())
        os.kill(pid, 0)
        return pid


@pytest.fixture
def device(sshd: SshServer, package: Path, tmp_path: Path) -> Iterator[Device]:
    """A scratch install root; whatever runtime the test started there is stopped after."""
    root = tmp_path / "device"
    remote_tmp = root / "tmp"
    remote_tmp.mkdir(parents=True)
    dev = Device(
        prefix=root / "opt" / "meta-agent",
        conf=root / "etc" / "meta-agent",
        data=root / "data",
        remote_tmp=remote_tmp,
        user=sshd.user,
        env={
            **os.environ,
            "EDGE_SSH_PORT": str(sshd.port),
            "EDGE_SSH_OPTS": sshd.opts,
            "EDGE_PACKAGE": str(package),
            "EDGE_SKIP_BUILD": "1",
            "EDGE_REMOTE_TMP": str(remote_tmp),
            "EDGE_PREFIX": str(root / "opt" / "meta-agent"),
            "EDGE_CONF_DIR": str(root / "etc" / "meta-agent"),
            "EDGE_DATA_DIR": str(root / "data"),
            "EDGE_START": "background",
            "EDGE_API_PORT": "0",
            "EDGE_HEALTH_TIMEOUT": "60",
        },
    )
    try:
        yield dev
    finally:
        if (dev.prefix / "edgectl.sh").exists():
            subprocess.run([str(dev.prefix / "edgectl.sh"), "stop"], capture_output=True)
        pid_file = dev.data / "edge-min.pid"
        if pid_file.exists():  # edgectl.sh is gone or failed: do not leave a runtime behind
            with contextlib.suppress(OSError, ValueError):
                os.kill(int(pid_file.read_text()), signal.SIGKILL)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is dead for our purpose (the background runtime is not our child, but be safe).
    status = Path(f"/proc/{pid}/status")
    return not (status.exists() and "\nState:\tZ" in status.read_text())


def _wait_dead(pid: int, timeout: float = 15) -> bool:
    deadline = time.monotonic() + timeout
    while _alive(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


# -- the tests ---------------------------------------------------------------------------------


def test_package_holds_everything_and_setup_refuses_a_tampered_one(
    package: Path, tmp_path: Path
) -> None:
    """The tarball's files, checksums that match, and setup.sh verifying them first."""
    unpacked = tmp_path / "pkg"
    with tarfile.open(package) as tar:
        # The "data" filter where this Python has it (3.11.4+; Debian 12 ships 3.11.2).
        safe = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
        tar.extractall(unpacked, **safe)
    names = set(_check_sums(unpacked))
    assert names | {"SHA256SUMS"} >= PACKAGE_FILES
    info = dict(line.split("=", 1) for line in (unpacked / "BUILD_INFO").read_text().split())
    assert info["version"] == (unpacked / "VERSION").read_text().strip()
    if info["kind"] == "source":
        wheels = sorted(n.split("/")[-1].split("-")[0].lower() for n in names if "wheels" in n)
        # pycryptodome too: encryption at rest is on by default, and the device's Python
        # may have nothing but the standard library (a fresh Debian 12 has not).
        assert wheels == ["cbor2", "edge_min", "pycryptodome", "pyyaml"]
    assert (unpacked / "config" / "edge-config.yaml").read_bytes() == (
        REPO / "edge_min" / "defaults" / "edge-config.yaml"
    ).read_bytes()

    # Install only (EDGE_START=none) into a scratch PREFIX: files, configs, nothing started.
    env = {
        **os.environ,
        "PREFIX": str(tmp_path / "opt"),
        "CONF_DIR": str(tmp_path / "etc"),
        "DATA_DIR": str(tmp_path / "data"),
        "EDGE_START": "none",
    }
    done = subprocess.run(
        [str(unpacked / "setup.sh")], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "not started (EDGE_START=none)" in done.stdout
    _check_sums(tmp_path / "opt")
    assert sorted(p.name for p in (tmp_path / "etc").iterdir()) == sorted(
        p.name for p in (unpacked / "config").iterdir()
    )
    assert not (tmp_path / "data" / "edge-min.pid").exists()
    version = subprocess.run(
        [str(tmp_path / "opt" / "edge-min"), "version"], capture_output=True, text=True
    )
    assert version.stdout.split() == ["edge-min", info["version"]], version.stderr

    # The unit as systemd would get it: this install's paths; notify only from the binary.
    unit = subprocess.run(
        [str(unpacked / "setup.sh"), "--print-unit"], env=env, capture_output=True, text=True
    )
    assert unit.returncode == 0, unit.stderr
    lines = unit.stdout.splitlines()
    assert (
        f"ExecStart={tmp_path}/opt/edge-min --config {tmp_path}/etc/edge-config.yaml "
        f"--data-dir {tmp_path}/data run"
    ) in lines
    assert f"ReadWritePaths={tmp_path}/data" in lines
    if info["kind"] == "source":
        assert "Type=exec" in lines
        assert not any(line.startswith("WatchdogSec=") for line in lines)
    else:
        assert "Type=notify" in lines

    # One changed byte: setup.sh refuses before it copies anything.
    tampered = unpacked / "config" / "edge-security.yaml"
    tampered.write_text(tampered.read_text() + "# changed\n")
    env["PREFIX"] = str(tmp_path / "opt2")
    refused = subprocess.run(
        [str(unpacked / "setup.sh")], env=env, capture_output=True, text=True, timeout=60
    )
    assert refused.returncode == 1
    assert "config/edge-security.yaml does not match SHA256SUMS" in refused.stdout
    assert "refusing to install" in refused.stderr
    assert not (tmp_path / "opt2").exists()


def test_deploy_over_ssh_installs_starts_and_answers_health(device: Device) -> None:
    """edge_deploy.sh: scp + ssh + setup.sh; then edge_monitor.sh and edge_sync.sh."""
    deployed = device.run("edge_deploy.sh", "127.0.0.1", device.user)
    assert "Edge deployment complete!" in deployed.stdout
    assert "checksums OK" in deployed.stdout
    installed = _check_sums(device.prefix)
    assert set(installed) | {"SHA256SUMS"} >= PACKAGE_FILES
    for name in installed:
        if name.startswith("config/"):
            assert (device.conf / name.removeprefix("config/")).read_bytes() == (
                device.prefix / name
            ).read_bytes()
    assert not (device.remote_tmp / "meta-agent-edge.tar.gz").exists()
    pid = device.pid()
    view = device.health()
    assert view["status"] == "ok"
    assert view["version"] == (device.prefix / "VERSION").read_text().strip()
    assert (device.data / "meta-agent-edge.db").exists()
    if (device.prefix / "lib" / "wheels").is_dir():  # from source: what encryption needs
        assert (device.prefix / "lib" / "python" / "Crypto" / "Cipher").is_dir()

    monitor = device.run("edge_monitor.sh", "127.0.0.1", device.user)
    assert f"running (pid {pid}, background)" in monitor.stdout
    assert "health: healthy" in monitor.stdout
    as_json = device.run("edge_monitor.sh", "127.0.0.1", device.user, "--json")
    assert json.loads(as_json.stdout)["status"] == "ok"

    synced = device.run("edge_sync.sh", "127.0.0.1", device.user, ok=False)
    has_sync = (
        subprocess.run(
            [str(device.prefix / "edge-min"), "sync", "--help"], capture_output=True
        ).returncode
        == 0
    )
    assert has_sync
    # No central answers this device's central_url: the sync fails at once and says why.
    assert synced.returncode == 1, synced.stdout + synced.stderr
    assert "cannot sync now" in synced.stdout and "central" in synced.stdout

    # A stopped runtime is reported as such (3), not as healthy.
    subprocess.run([str(device.prefix / "edgectl.sh"), "stop"], check=True, capture_output=True)
    assert _wait_dead(pid)
    down = device.run("edge_monitor.sh", "127.0.0.1", device.user, ok=False)
    assert down.returncode == 3
    assert "not running" in down.stdout


def test_update_keeps_configs_and_rolls_back_a_version_that_does_not_start(
    device: Device, tmp_path: Path
) -> None:
    """edge_update.sh: a good update, then a broken one that update.sh undoes."""
    device.run("edge_deploy.sh", "127.0.0.1", device.user)
    old_version = (device.prefix / "VERSION").read_text().strip()
    # The operator's change must survive updates.
    config = device.conf / "edge-config.yaml"
    config.write_text(config.read_text() + "# tuned for this gateway\n")
    # ... and is accepted as an operator does, or tamper detection locks the device down.
    assert device.edge_min("security", "accept", "--check", "filesystem_integrity").returncode == 0

    new = _build(tmp_path / "v2.tar.gz", "--version", old_version + "+2")
    updated = device.run("edge_update.sh", "127.0.0.1", device.user, EDGE_PACKAGE=str(new))
    assert f"updating {old_version} -> {old_version}+2" in updated.stdout
    assert "Edge update complete!" in updated.stdout
    assert (device.prefix / "VERSION").read_text().strip() == old_version + "+2"
    assert (device.prefix / ".previous" / "VERSION").read_text().strip() == old_version
    assert config.read_text().endswith("# tuned for this gateway\n")
    assert (device.conf / "edge-config.yaml.dist").exists()
    assert device.health()["status"] == "ok"
    assert device.tamper_state() == "ok"  # an update is no tampering; the edit was accepted
    good_pid = device.pid()

    broken = device.run(
        "edge_update.sh",
        "127.0.0.1",
        device.user,
        ok=False,
        EDGE_PACKAGE=str(_broken_package(tmp_path)),
        EDGE_HEALTH_TIMEOUT="20",
    )
    assert broken.returncode == 1, broken.stdout + broken.stderr
    assert "rolling back" in broken.stdout
    assert "Edge update NOT applied" in broken.stderr
    assert (device.prefix / "VERSION").read_text().strip() == old_version + "+2"
    assert (device.prefix / ".failed" / "VERSION").read_text().strip() == "9.9.9-broken"
    _check_sums(device.prefix)
    assert _wait_dead(good_pid)
    assert device.pid() != good_pid
    assert device.health()["status"] == "ok"
    assert device.tamper_state() == "ok"


def _local_cli(*argv: str) -> subprocess.CompletedProcess[str]:
    """This repository's ``edge-min`` on the build machine (keys and bundles are made there)."""
    done = subprocess.run(
        [sys.executable, "-m", "edge_min.cli", *argv],
        capture_output=True, text=True, cwd=REPO, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    return done


def test_a_signed_bundle_updates_over_ssh_and_an_altered_one_changes_nothing(
    device: Device, tmp_path: Path
) -> None:
    """edge_update.sh with a bundle: update.sh verifies it against the pinned root first."""
    device.run("edge_deploy.sh", "127.0.0.1", device.user)
    old_version = (device.prefix / "VERSION").read_text().strip()
    keys = tmp_path / "keys"
    _local_cli("update", "keys", "init", str(keys))
    device.edge_min("update", "trust", str(keys / "root.json"))  # at provisioning
    package = _build(tmp_path / "v9.tar.gz", "--version", "9.0.0")
    bundle = tmp_path / "edge-min-9.0.0.emub"
    _local_cli("update", "bundle", str(package), "--version", "9.0.0", "--keys", str(keys),
               "-o", str(bundle))  # fmt: skip
    pid = device.pid()

    altered = tmp_path / "altered" / bundle.name  # one byte of the payload changed
    altered.parent.mkdir()
    data = bytearray(bundle.read_bytes())
    data[-200] ^= 0x01
    altered.write_bytes(bytes(data))
    refused = device.run("edge_update.sh", "127.0.0.1", device.user, ok=False,
                         EDGE_PACKAGE=str(altered))  # fmt: skip
    assert refused.returncode == 1, refused.stdout + refused.stderr
    assert "failed its verification; nothing was changed" in refused.stdout + refused.stderr
    assert (device.prefix / "VERSION").read_text().strip() == old_version
    assert device.pid() == pid  # never stopped

    updated = device.run("edge_update.sh", "127.0.0.1", device.user, EDGE_PACKAGE=str(bundle))
    assert "(signed, newer than" in updated.stdout, updated.stdout
    assert f"updating {old_version} -> 9.0.0" in updated.stdout
    assert (device.prefix / "VERSION").read_text().strip() == "9.0.0"
    assert device.health()["status"] == "ok"
    trusted = json.loads((device.data / "update" / "trust" / "state.json").read_text())
    assert trusted["installed"]["version"] == "9.0.0"  # older bundles are refused from now on


@pytest.fixture
def central(tmp_path: Path) -> Iterator[str]:
    """A real ``edge-min central serve`` on a free port; yields its URL."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "edge_min.cli", "--data-dir", str(tmp_path / "central"),
         "central", "serve", "--host", "127.0.0.1", "--port", "0"],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert "serving on " in line, line + proc.stdout.read()
        yield line.rsplit("serving on ", 1)[1].strip()
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def _central(method: str, url: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(
        url, data=data, method=method, headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=10) as resp:
        return dict(json.loads(resp.read()))


def test_manage_edge_device_lifecycle_against_the_central(device: Device, central: str) -> None:
    """manage_edge_device.sh provision, update, restart, decommission with a real central."""
    device_url = f"{central}/api/devices/gw-test"
    # The inventory: an operator registers the device's address first.
    inventory = {"ip_address": "127.0.0.1", "ssh_user": device.user}
    _central("POST", device_url + "/provision", inventory)
    env = {"CENTRAL_URL": central}

    provisioned = device.run("manage_edge_device.sh", "provision", "gw-test", **env)
    assert "Edge deployment complete!" in provisioned.stdout
    assert "Action provision completed for device gw-test" in provisioned.stdout
    record = _central("GET", device_url)
    version = (device.prefix / "VERSION").read_text().strip()
    assert (record["status"], record["last_action"]) == ("provisioned", "provision")
    assert record["details"]["version"] == version
    assert device.health()["status"] == "ok"

    device.run("manage_edge_device.sh", "update", "gw-test", **env)
    assert _central("GET", device_url)["last_action"] == "update"
    assert device.health()["status"] == "ok"

    before = device.pid()
    device.run("manage_edge_device.sh", "restart", "gw-test", **env)
    assert _wait_dead(before)
    assert device.pid() != before
    assert device.health()["status"] == "ok"
    assert _central("GET", device_url)["last_action"] == "restart"

    last = device.pid()
    gone = device.run("manage_edge_device.sh", "decommission", "gw-test", **env)
    assert "is decommissioned" in gone.stdout
    assert _wait_dead(last)
    for path in (device.prefix, device.conf, device.data):
        assert not path.exists(), f"{path} survived decommissioning"
    assert _central("GET", device_url)["status"] == "decommissioned"

    unknown = device.run("manage_edge_device.sh", "restart", "gw-nobody", ok=False, **env)
    assert unknown.returncode == 1
    assert "answered 404" in unknown.stderr
    with pytest.raises(urllib.error.HTTPError):
        _central("GET", f"{central}/api/devices/gw-nobody")


# -- A/B slots over SSH (EDGE_SLOTS=1) ---------------------------------------------------------

# Short trials: a healthy runtime commits after 2 s; a try that has not committed in 20 s fails.
SHORT_TRIALS = "update:\n  commit_after: 2\n  health_timeout: 20\n"


@pytest.fixture
def slots(device: Device) -> Device:
    """The device, deployed with EDGE_SLOTS=1 and short trials in its edge-config.yaml.

    The config is put in place before the deploy, as an operator's: setup.sh keeps it (and
    writes the package's beside it as edge-config.yaml.dist).
    """
    device.env["EDGE_SLOTS"] = "1"
    device.conf.mkdir(parents=True)
    defaults = (REPO / "edge_min" / "defaults" / "edge-config.yaml").read_text()
    assert "\nupdate:" not in defaults
    (device.conf / "edge-config.yaml").write_text(defaults + SHORT_TRIALS)
    deployed = device.run("edge_deploy.sh", "127.0.0.1", device.user)
    assert "installed " in deployed.stdout and "into slot a of" in deployed.stdout
    assert "under the supervisor" in deployed.stdout
    return device


def _update_root(device: Device) -> Path:
    return device.prefix / "update"


def _slots_state(device: Device) -> dict[str, Any]:
    """update-state.json of the device's slots."""
    return dict(json.loads((_update_root(device) / "update-state.json").read_text()))


def _supervised(device: Device) -> dict[str, Any]:
    """supervisor.json: what the supervisor runs (its pid, the slot, the runtime's pid)."""
    return dict(json.loads((_update_root(device) / "supervisor.json").read_text()))


def _slots_status(device: Device) -> dict[str, Any]:
    """``edge-min update status --json`` of the device."""
    out = device.edge_min("update", "status", "--json", "--root", str(_update_root(device)))
    return dict(json.loads(out.stdout))


def _wait(what: Any, timeout: float = 60.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError, ValueError, KeyError, AssertionError):
            value = what()
            if value:
                return value
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def _unhealthy_package(tmp_path: Path, device: Device, version: str) -> Path:
    """A package whose runtime starts, then fails its health checks: its ``edge-min`` runs
    this repository's code with a config folder of its own, whose one check (``false``)
    fails at once; tamper detection off there, since other configs are tampering."""
    bad = tmp_path / "bad-config"
    bad.mkdir()
    for conf in device.conf.glob("*.yaml"):
        shutil.copy(conf, bad / conf.name)
    (bad / "edge-monitoring.yaml").write_text(
        'health_checks:\n  - name: broken_driver\n    interval: 1\n    command: "false"\n'
        "    timeout: 1\nalerts: []\n"
    )
    (bad / "edge-security.yaml").write_text("tamper_detection:\n  enabled: false\n")
    script = tmp_path / "edge-min-unhealthy"
    script.write_text(
        f"#!/bin/sh\n# {version}: a runtime whose health check broken_driver fails\n"
        '[ "$1" = --config ] && shift 2\n'
        f"PYTHONPATH={REPO} exec {sys.executable} -m edge_min.cli "
        f'--config {bad}/edge-config.yaml "$@"\n'
    )
    script.chmod(0o755)
    out = tmp_path / f"unhealthy-{version}.tar.gz"
    result = subprocess.run(
        [str(SCRIPTS / "build_edge_package.sh"), "--binary", str(script), "--version", version,
         "--output", str(out)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    return out


def _signed(tmp_path: Path, package: Path, version: str) -> tuple[Path, Path]:
    """Signing keys made here and a bundle of ``package``: (keys folder, bundle)."""
    keys = tmp_path / "keys"
    if not keys.exists():
        _local_cli("update", "keys", "init", str(keys))
    bundle = tmp_path / f"edge-min-{version}.emub"
    _local_cli("update", "bundle", str(package), "--version", version, "--keys", str(keys),
               "-o", str(bundle))  # fmt: skip
    return keys, bundle


def test_a_slots_install_over_ssh_runs_the_supervisor_and_answers_health(slots: Device) -> None:
    """EDGE_SLOTS=1: slot a committed, the supervisor as the service, stop takes both."""
    version = (slots.prefix / "VERSION").read_text().strip()
    st = _slots_state(slots)
    assert st["active"] == "a" and st["trying"] is None
    assert (st["slots"]["a"]["state"], st["slots"]["a"]["version"]) == ("good", version)
    assert st["slots"]["b"]["state"] == "empty"
    assert "EDGE_SLOTS='1'" in (slots.prefix / "install.env").read_text()
    supervisor = slots.pid()  # the pid file names the supervisor ...
    running = _supervised(slots)
    assert running["pid"] == supervisor and running["slot"] == "a"
    child = running["child_pid"]  # ... which runs slot a's `edge-min run`
    cmdline = Path(f"/proc/{child}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    assert " run " in cmdline + " " and "--port 0" in cmdline
    assert slots.health()["status"] == "ok"
    assert slots.tamper_state() == "ok"

    monitor = slots.run("edge_monitor.sh", "127.0.0.1", slots.user)
    assert f"{version}: running (pid {supervisor}, background, slot a (runtime pid {child})" in (
        monitor.stdout
    )
    assert "health: healthy" in monitor.stdout

    # The unit systemd would get: the supervisor, which writes the update root; no notify.
    unit = subprocess.run(
        [str(slots.prefix / "setup.sh"), "--print-unit"], capture_output=True, text=True,
        env={k: v for k, v in os.environ.items() if k not in ("PREFIX", "EDGE_SLOTS")},
    )  # fmt: skip
    assert unit.returncode == 0, unit.stderr
    lines = unit.stdout.splitlines()
    assert (
        f"ExecStart={slots.prefix}/edge-min --config {slots.conf}/edge-config.yaml "
        f"--data-dir {slots.data} update supervise --root {slots.prefix}/update"
    ) in lines
    assert f"ReadWritePaths={slots.data} {slots.prefix}/update" in lines
    assert "Type=exec" in lines
    assert not [line for line in lines if line.startswith(("WatchdogSec=", "NotifyAccess="))]

    subprocess.run([str(slots.prefix / "edgectl.sh"), "stop"], check=True, capture_output=True)
    assert _wait_dead(supervisor) and _wait_dead(child)
    assert not (_update_root(slots) / "supervisor.json").exists()


def test_a_signed_bundle_over_ssh_goes_into_the_other_slot_and_commits(
    slots: Device, tmp_path: Path
) -> None:
    """An altered bundle writes no slot; a good one is tried in slot b and commits there;
    a plain package is tried the same way (into slot a again)."""
    old = (slots.prefix / "VERSION").read_text().strip()
    keys, bundle = _signed(tmp_path, _build(tmp_path / "v9.tar.gz", "--version", "9.0.0"), "9.0.0")
    slots.edge_min("update", "trust", str(keys / "root.json"))  # at provisioning
    before = (_update_root(slots) / "update-state.json").read_bytes()
    running = _supervised(slots)

    altered = tmp_path / "altered" / bundle.name  # one byte of the payload changed
    altered.parent.mkdir()
    data = bytearray(bundle.read_bytes())
    data[-200] ^= 0x01
    altered.write_bytes(bytes(data))
    refused = slots.run("edge_update.sh", "127.0.0.1", slots.user, ok=False,
                        EDGE_PACKAGE=str(altered))  # fmt: skip
    assert refused.returncode == 1, refused.stdout + refused.stderr
    assert "failed its verification; nothing was changed" in refused.stderr
    assert "Edge update NOT applied" in refused.stderr
    assert (_update_root(slots) / "update-state.json").read_bytes() == before
    assert not (_update_root(slots) / "slots" / "b").exists()
    assert not (_update_root(slots) / "staging").exists()
    assert _supervised(slots) == running  # nothing was stopped

    updated = slots.run("edge_update.sh", "127.0.0.1", slots.user, EDGE_PACKAGE=str(bundle))
    assert "(signed, newer than" in updated.stdout, updated.stdout
    assert f"updating {old} -> 9.0.0 (slot b, on trial" in updated.stdout
    assert f"updated to 9.0.0: slot b (9.0.0) committed; {old} is kept in slot a" in (
        updated.stdout
    )
    assert "Edge update complete!" in updated.stdout
    print(f"bundle update over ssh, trial and commit: {updated.seconds:.1f}s")
    view = _slots_status(slots)
    assert view["active"] == "b" and view["trying"] is None
    assert (view["slots"]["b"]["state"], view["slots"]["b"]["version"]) == ("good", "9.0.0")
    assert (view["slots"]["a"]["state"], view["slots"]["a"]["version"]) == ("good", old)
    assert view["running"]["slot"] == "b" and view["running"]["pid"] == running["pid"]
    assert not _alive(running["child_pid"])  # the old runtime was stopped for the new one
    assert slots.health()["status"] == "ok"
    assert slots.tamper_state() == "ok"
    trusted = slots.data / "update" / "trust" / "state.json"  # recorded at the commit
    _wait(lambda: json.loads(trusted.read_text())["installed"]["version"] == "9.0.0", 30)
    version = slots.run("edge_monitor.sh", "127.0.0.1", slots.user)
    assert "meta-agent-edge 9.0.0: running" in version.stdout
    assert (slots.prefix / "VERSION").read_text().strip() == old  # $PREFIX: setup.sh's

    # A plain package (SHA256SUMS, no signature) goes through a trial all the same.
    plain = slots.run("edge_update.sh", "127.0.0.1", slots.user)  # the first package again
    assert "a plain package: not signed" in plain.stdout
    assert f"updated to {old}: slot a ({old}) committed; 9.0.0 is kept in slot b" in plain.stdout
    view = _slots_status(slots)
    assert view["active"] == "a" and view["running"]["slot"] == "a"
    assert slots.health()["status"] == "ok"


def test_a_bundle_that_fails_health_is_given_up_and_the_old_slot_runs_again(
    slots: Device, tmp_path: Path
) -> None:
    """3 unhealthy tries: the supervisor goes back to slot a by itself; update.sh exits 1
    with its reason. Then decommission.sh stops the supervisor and its runtime."""
    old = (slots.prefix / "VERSION").read_text().strip()
    keys, bundle = _signed(tmp_path, _unhealthy_package(tmp_path, slots, "9.1.0"), "9.1.0")
    slots.edge_min("update", "trust", str(keys / "root.json"))
    supervisor = slots.pid()

    failed = slots.run("edge_update.sh", "127.0.0.1", slots.user, ok=False,
                       EDGE_PACKAGE=str(bundle))  # fmt: skip
    print(f"unhealthy bundle over ssh, 3 tries and the fallback: {failed.seconds:.1f}s")
    assert failed.returncode == 1, failed.stdout + failed.stderr
    verdict = (
        "9.1.0 was NOT applied: slot b (9.1.0) was given up: 3 failed starts; the last: "
        "health failed: broken_driver"
    )
    assert verdict in failed.stdout, failed.stdout
    assert f"rolled back: {old} runs again (slot a)" in failed.stdout
    assert "Edge update NOT applied: the previous version runs" in failed.stderr
    st = _slots_state(slots)
    assert st["active"] == "a" and st["trying"] is None
    assert (st["slots"]["a"]["state"], st["slots"]["a"]["version"]) == ("good", old)
    assert st["slots"]["b"]["state"] == "bad"
    assert st["report"]["kind"] == "fallback" and st["report"]["to_version"] == old
    running = _supervised(slots)
    assert running["slot"] == "a" and running["pid"] == supervisor
    assert slots.health()["status"] == "ok"
    assert slots.tamper_state() == "ok"
    log = (slots.data / "logs" / "edge-min.out").read_text()
    assert all(f"started try {n} of slot b (9.1.0)" in log for n in (1, 2, 3))
    # Not recorded as installed: the trust still takes a 9.0.0 (older than 9.1.0) later.
    trusted = json.loads((slots.data / "update" / "trust" / "state.json").read_text())
    assert (trusted.get("installed") or {}).get("version") != "9.1.0"

    child = running["child_pid"]
    gone = subprocess.run(
        [str(slots.prefix / "decommission.sh")], capture_output=True, text=True, timeout=120,
        env={**os.environ, "EDGE_DECOMMISSION_OFFLINE": "1"},
    )  # fmt: skip
    assert gone.returncode == 0, gone.stdout + gone.stderr
    assert "is decommissioned" in gone.stdout
    assert _wait_dead(supervisor) and _wait_dead(child)
    for path in (slots.prefix, slots.conf, slots.data):
        assert not path.exists(), f"{path} survived decommissioning"
