"""Development certificates: a CA, a central server certificate and device client certificates.

``init_certs(DIR)`` (``edge-min certs init DIR``) writes::

    ca.crt ca.key              the development CA (ca.key is kept to issue more devices)
    central.crt central.key    the central server: SAN IP 127.0.0.1, DNS localhost, central_host
    device.crt device.key      one device: CN = device id, usable for TLS client auth

All keys are EC P-256 in PKCS#8 PEM, written 0600. ``issue_device_cert`` signs one more
device certificate with that CA into its own folder (ca.crt, device.crt, device.key: the
three paths of edge-security.yaml's ``encryption.communication``).

These are for development and tests; a fleet gets its certificates from its own PKI. The
extensions follow RFC 5280 closely enough for strict verifiers (OpenSSL's X509_STRICT,
cryptography's verifier): CA key usage critical, SKI/AKI present, leaves not CAs. They are
made with pycryptodome and a small DER writer (``edge_min.security.certbuild``), so the
gateway binary, which has no ``cryptography``, makes them too.
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from edge_min.errors import EdgeError

DEFAULT_DAYS = 365
CA_NAME = "edge-min development CA"
CENTRAL_NAME = "edge-min central"
# Device ids become certificate CNs and DNS SANs: keep them to hostname-safe characters.
DEVICE_ID_RE = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9._-]{0,62}[A-Za-z0-9])?$")
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_HOST_RE = re.compile(rf"^(?=.{{1,253}}$){_LABEL}(?:\.{_LABEL})*$")
# A little backdating so a device whose clock runs slightly behind accepts fresh certificates.
_BACKDATE = timedelta(hours=1)

FILES = {
    "ca_cert": "ca.crt",
    "ca_key": "ca.key",
    "central_cert": "central.crt",
    "central_key": "central.key",
    "device_cert": "device.crt",
    "device_key": "device.key",
}


class CertificateError(EdgeError):
    """Certificates could not be made: files already exist, or the inputs are unusable."""

    code = "certificate_error"


def init_certs(
    directory: str | os.PathLike[str],
    *,
    device_id: str = "device-1",
    central_host: str = "127.0.0.1",
    days: int = DEFAULT_DAYS,
    force: bool = False,
) -> dict[str, Path]:
    """Write a development CA, a central and a device certificate into ``directory``.

    Returns the written paths keyed ``ca_cert``, ``ca_key``, ``central_cert``,
    ``central_key``, ``device_cert``, ``device_key``. Refuses (CertificateError, nothing
    written) if any of them exists, unless ``force``.
    """
    folder = Path(directory)
    paths = {name: folder / file for name, file in FILES.items()}
    return _make_bundle(paths, device_id, central_host, days, force)


def issue_device_cert(
    ca_dir: str | os.PathLike[str],
    device_id: str,
    out_dir: str | os.PathLike[str] | None = None,
    *,
    days: int = DEFAULT_DAYS,
    force: bool = False,
) -> dict[str, Path]:
    """Sign a certificate for one more device with the CA in ``ca_dir``.

    Writes ca.crt, device.crt and device.key into ``out_dir`` (default
    ``ca_dir/devices/<device_id>``); returns them keyed ``ca_cert``, ``device_cert``,
    ``device_key``.
    """
    from edge_min.security import certbuild, pkix

    _check_device_id(device_id)
    _check_days(days)
    source = Path(ca_dir)
    ca_cert_path, ca_key_path = source / FILES["ca_cert"], source / FILES["ca_key"]
    for p in (ca_cert_path, ca_key_path):
        if not p.is_file():
            raise CertificateError(
                f"{p} does not exist; run `edge-min certs init {source}` first to make the CA"
            )
    try:
        ca_cert = pkix.parse_certificate(ca_cert_path.read_bytes())
        ca_key = certbuild.load_key(ca_key_path.read_bytes())
    except pkix.PkixError as exc:
        raise CertificateError(
            f"the CA in {source} cannot be read ({exc.message}); make a new one with "
            f"`edge-min certs init {source} --force`"
        ) from exc
    folder = Path(out_dir) if out_dir is not None else source / "devices" / device_id
    paths = {k: folder / FILES[k] for k in ("ca_cert", "device_cert", "device_key")}
    _refuse_existing(list(paths.values()), force)
    key, cert = _make_leaf(
        ca_key, ca_cert, device_id, "device", _device_names(device_id), True, True, days
    )
    _ensure_dir(folder)
    _write(paths["ca_cert"], ca_cert_path.read_bytes())
    _write(paths["device_key"], certbuild.key_pem(key), secret=True)
    _write(paths["device_cert"], certbuild.cert_pem(cert))
    return paths


def init_for_config(
    communication: Any,
    *,
    device_id: str,
    central_host: str = "127.0.0.1",
    days: int = DEFAULT_DAYS,
    force: bool = False,
) -> dict[str, Path]:
    """Make the files ``encryption.communication`` names: a development CA at ``ca_path``
    (its key ``ca.key`` beside it, to issue more), the device certificate and key at
    ``certificate_path``/``key_path`` and a central certificate beside the CA.

    Refuses (CertificateError, nothing written) when a path is not set or a file exists,
    unless ``force``. Returns the paths keyed as ``init_certs`` does.
    """
    named = {
        "device_cert": communication.certificate_path,
        "device_key": communication.key_path,
        "ca_cert": communication.ca_path,
    }
    unset = [k for k, v in named.items() if not v]
    if unset:
        keys = {"device_cert": "certificate_path", "device_key": "key_path", "ca_cert": "ca_path"}
        raise CertificateError(
            "encryption.communication."
            + ", ".join(keys[k] for k in unset)
            + " not set: say where the files go, then run this again"
        )
    ca_dir = Path(named["ca_cert"]).parent
    paths = {k: Path(v) for k, v in named.items()}
    for name in ("ca_key", "central_cert", "central_key"):
        paths[name] = ca_dir / FILES[name]
    return _make_bundle(paths, device_id, central_host, days, force)


def _make_bundle(
    paths: dict[str, Path], device_id: str, central_host: str, days: int, force: bool
) -> dict[str, Path]:
    """Make a CA, a central and a device certificate and write them to ``paths`` (keyed as
    ``FILES``); nothing is written if an input is bad or a file exists without ``force``."""
    _check_device_id(device_id)
    _check_days(days)
    hosts = _central_names(central_host)
    _refuse_existing(list(paths.values()), force)
    ca_key, ca_cert = _make_ca(days)
    central_key, central_cert = _make_leaf(
        ca_key, ca_cert, CENTRAL_NAME, "central", hosts, server=True, client=False, days=days
    )
    device_key, device_cert = _make_leaf(
        ca_key, ca_cert, device_id, "device", _device_names(device_id), True, True, days
    )
    from edge_min.security.certbuild import cert_pem, key_pem

    for folder in {path.parent for path in paths.values()}:
        _ensure_dir(folder)
    _write(paths["ca_key"], key_pem(ca_key), secret=True)
    _write(paths["ca_cert"], cert_pem(ca_cert.der))
    _write(paths["central_key"], key_pem(central_key), secret=True)
    _write(paths["central_cert"], cert_pem(central_cert))
    _write(paths["device_key"], key_pem(device_key), secret=True)
    _write(paths["device_cert"], cert_pem(device_cert))
    return paths


def certificate_cn(path: str | os.PathLike[str] | None) -> str | None:
    """The CN of the PEM certificate at ``path``; None when absent, unreadable or without one.

    Read with ``edge_min.security.pkix``'s DER reader, so it needs no ``cryptography`` (the
    gateway binary names itself and its own admin certificate by it)."""
    from edge_min.security.pkix import PkixError, parse_certificate

    if not path or not os.path.isfile(path):
        return None
    try:
        return parse_certificate(Path(path).read_bytes()).common_name
    except (OSError, PkixError):
        return None


# -- the CLI: `edge-min certs init DIR [--device-id ID] [--central-host H] [--days N] [--force]`


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add ``certs init``'s arguments to ``parser``."""
    parser.add_argument("dir", help="folder to write ca.crt, central.crt/.key, device.crt/.key")
    parser.add_argument(
        "--device-id", default="device-1", help="the device certificate's CN (default device-1)"
    )
    parser.add_argument(
        "--central-host",
        default="127.0.0.1",
        help="extra host name or IP for the central certificate (default 127.0.0.1; "
        "127.0.0.1 and localhost are always included)",
    )
    parser.add_argument(
        "--days", type=int, default=DEFAULT_DAYS, help=f"validity in days (default {DEFAULT_DAYS})"
    )
    parser.add_argument("--force", action="store_true", help="overwrite existing files")


def run(args: argparse.Namespace) -> int:
    """Run ``certs init``: write the files and print how to use them."""
    paths = init_certs(
        args.dir,
        device_id=args.device_id,
        central_host=getattr(args, "central_host", "127.0.0.1"),
        days=getattr(args, "days", DEFAULT_DAYS),
        force=args.force,
    )
    for name in FILES:
        print(f"wrote {paths[name]}")
    print(
        "\n# edge-security.yaml (device side):\n"
        "encryption:\n"
        "  communication:\n"
        "    enabled: true\n"
        "    protocol: TLS 1.3\n"
        f"    certificate_path: {paths['device_cert'].resolve()}\n"
        f"    key_path: {paths['device_key'].resolve()}\n"
        f"    ca_path: {paths['ca_cert'].resolve()}\n"
        "\n# central side:\n"
        f"edge-min central serve --tls-cert {paths['central_cert'].resolve()} "
        f"--tls-key {paths['central_key'].resolve()} --tls-ca {paths['ca_cert'].resolve()}"
    )
    return 0


# -- building certificates


def _make_ca(days: int) -> tuple[Any, Any]:
    """A CA key and its self-signed certificate (``pkix.Certificate``)."""
    from edge_min.security import certbuild, pkix

    key = certbuild.new_key()
    subject = certbuild.name(
        (pkix.OID_COMMON_NAME, CA_NAME), (certbuild.OID_ORGANIZATION, "edge-min development")
    )
    public = bytes(key.public_key().export_key(format="DER"))
    now = datetime.now(UTC)
    der = certbuild.certificate(
        issuer_key=key,
        issuer_name=subject,
        issuer_public=public,
        subject_name=subject,
        subject_key=key,
        not_before=now - _BACKDATE,
        not_after=now + timedelta(days=days),
        ca=True,
    )
    return key, pkix.parse_certificate(der)


def _make_leaf(
    ca_key: Any,
    ca_cert: Any,
    common_name: str,
    unit: str,
    names: list[str],
    server: bool,
    client: bool,
    days: int,
) -> tuple[Any, bytes]:
    """A leaf key and certificate (DER) under ``ca_cert`` (``pkix.Certificate``); ``unit``
    (OU) says what the holder is (central, device)."""
    from edge_min.security import certbuild, pkix

    key = certbuild.new_key()
    now = datetime.now(UTC)
    not_after = now + timedelta(days=days)
    if ca_cert.not_after is not None:
        not_after = min(not_after, ca_cert.not_after)
    der = certbuild.certificate(
        issuer_key=ca_key,
        issuer_name=ca_cert.subject_der,
        issuer_public=ca_cert.public_key_info,
        subject_name=certbuild.name(
            (pkix.OID_COMMON_NAME, common_name), (certbuild.OID_UNIT, unit)
        ),
        subject_key=key,
        not_before=now - _BACKDATE,
        not_after=not_after,
        ca=False,
        server=server,
        client=client,
        names=names,
    )
    return key, der


def _central_names(central_host: str) -> list[str]:
    host = central_host.strip().strip("[]")
    if _as_ip(host) is None and not _HOST_RE.match(host):
        raise CertificateError(
            f"--central-host {central_host!r} is neither an IP address nor a host name; "
            "give the name or address devices use in central_url (e.g. central.example.com)"
        )
    return ["127.0.0.1", "localhost", host]


def _device_names(device_id: str) -> list[str]:
    # The device cert doubles as the local API's server certificate, so it names loopback too.
    names = ["localhost", "127.0.0.1"]
    if _HOST_RE.match(device_id) and not device_id.endswith("."):
        names.insert(0, device_id)
    return names


def _as_ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def _check_device_id(device_id: str) -> None:
    if not DEVICE_ID_RE.match(device_id):
        raise CertificateError(
            f"device id {device_id!r} cannot be a certificate name: use 1-64 letters, digits, "
            "'.', '_' or '-', starting and ending with a letter or digit (e.g. gateway-17)"
        )


def _check_days(days: int) -> None:
    if not isinstance(days, int) or days < 1:
        raise CertificateError(f"days must be a whole number of at least 1, got {days!r}")


# -- files


def _refuse_existing(paths: list[Path], force: bool) -> None:
    existing = [p for p in paths if p.exists()]
    if existing and not force:
        shown = ", ".join(str(p) for p in existing)
        raise CertificateError(
            f"refusing to overwrite existing {shown}; pass --force (force=True) to replace "
            "them, or choose another folder"
        )


def _ensure_dir(folder: Path) -> None:
    if not folder.exists():
        # The folder holds private keys: only the owner may list it.
        folder.mkdir(mode=0o700, parents=True)


def _write(path: Path, data: bytes, *, secret: bool = False) -> None:
    """Write ``path`` whole or not at all; a key is 0600 from its first byte."""
    mode = 0o600 if secret else 0o644
    tmp = path.with_name(f".{path.name}.tmp")
    if tmp.exists():
        tmp.unlink()
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    with os.fdopen(fd, "wb") as f:
        os.fchmod(f.fileno(), mode)  # the umask may have taken bits away from a certificate
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
