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
        assert wheels == ["cbor2", "edge_min", "pyyaml"]
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

    new = _build(tmp_path / "v2.tar.gz", "--version", old_version + "+2")
    updated = device.run("edge_update.sh", "127.0.0.1", device.user, EDGE_PACKAGE=str(new))
    assert f"updating {old_version} -> {old_version}+2" in updated.stdout
    assert "Edge update complete!" in updated.stdout
    assert (device.prefix / "VERSION").read_text().strip() == old_version + "+2"
    assert (device.prefix / ".previous" / "VERSION").read_text().strip() == old_version
    assert config.read_text().endswith("# tuned for this gateway\n")
    assert (device.conf / "edge-config.yaml.dist").exists()
    assert device.health()["status"] == "ok"
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
