"""TLS contexts for device <-> central traffic, and the plain-HTTP policy.

- ``server_context`` / ``client_context``: TLS 1.3 as the minimum (TLS 1.2 only when the
  config says ``protocol: TLS 1.2``), both sides verify the other against one CA
  (``CERT_REQUIRED`` both ways), the client checks the host name.
- ``context_from_config``: the same, from edge-security.yaml's ``encryption.communication``;
  a missing file is a ConfigError naming the file and the key that points at it.
- ``peer_identity``: the CN of the verified peer certificate (the device id under mTLS).
- ``check_plain_http``: ``http://`` only to loopback, or with an explicit flag that warns.

A server should wrap each accepted connection in the connection's own thread
(``ctx.wrap_socket(conn, server_side=True)``), not the listening socket: with TLS 1.3 a bad
client certificate only fails when the server reads, and a stalled handshake on the
listening socket would block every other client.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import ssl
from typing import Any
from urllib.parse import urlsplit

from edge_min.errors import ConfigError

_log = logging.getLogger("edge_min.security.tls")

PROTOCOLS = {"TLS 1.3": ssl.TLSVersion.TLSv1_3, "TLS 1.2": ssl.TLSVersion.TLSv1_2}
DEFAULT_PROTOCOL = "TLS 1.3"
SECURITY_FILE = "edge-security.yaml"
COMM = "encryption.communication"
# Forward-secret AEAD suites only, for the TLS 1.2 fallback (TLS 1.3 suites are all AEAD).
_TLS12_CIPHERS = "ECDHE+AESGCM:ECDHE+CHACHA20"
_FIX_CERTS = (
    "make them where the config names them with `edge-min init --security` (a development "
    "CA, device certificate and key; a fleet uses its own PKI)"
)

PathLike = str | os.PathLike[str]


def server_context(
    cert: PathLike,
    key: PathLike,
    ca: PathLike | None,
    *,
    require_client_cert: bool = True,
    protocol: str = DEFAULT_PROTOCOL,
) -> ssl.SSLContext:
    """A server context presenting ``cert``/``key``; client certificates must chain to ``ca``.

    With ``require_client_cert=False`` a client may connect without a certificate; one it
    does present must still verify (``peer_identity`` then gives its CN).
    """
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    _harden(ctx, protocol)
    _load_chain(ctx, cert, key, {})
    if ca is not None:
        _load_ca(ctx, ca, None)
        ctx.verify_mode = ssl.CERT_REQUIRED if require_client_cert else ssl.CERT_OPTIONAL
    elif require_client_cert:
        raise ConfigError(
            "a server that requires client certificates needs the CA that signed them; "
            "pass ca (the ca.crt of `edge-min certs init DIR`) or require_client_cert=False",
            path="ca",
        )
    return ctx


def client_context(
    cert: PathLike | None,
    key: PathLike | None,
    ca: PathLike,
    *,
    protocol: str = DEFAULT_PROTOCOL,
    check_hostname: bool = True,
) -> ssl.SSLContext:
    """A client context trusting only ``ca``, presenting ``cert``/``key`` for mutual auth."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    _harden(ctx, protocol)
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.check_hostname = check_hostname
    _load_ca(ctx, ca, None)
    if cert is not None or key is not None:
        if cert is None or key is None:
            raise ConfigError(
                "a client certificate needs both cert and key; pass both or neither",
                path="cert" if cert is None else "key",
            )
        _load_chain(ctx, cert, key, {})
    return ctx


def context_from_config(
    security_config: Any,
    role: str = "client",
    *,
    require_client_cert: bool = True,
    file: str | None = None,
) -> ssl.SSLContext | None:
    """The TLS context edge-security.yaml's ``encryption.communication`` describes.

    ``security_config`` is a SecurityConfig (or its CommunicationSecurity); ``role`` is
    ``client`` (the device calling central) or ``server`` (the device serving its API).
    Returns None when communication encryption is disabled. ``file`` names the config file
    in errors (default edge-security.yaml).
    """
    comm = _communication(security_config)
    where = file or SECURITY_FILE
    if role not in ("client", "server"):
        raise ConfigError(f"role must be 'client' or 'server', got {role!r}", value=role)
    if not comm.enabled:
        return None
    protocol = comm.protocol
    if protocol not in PROTOCOLS:
        raise ConfigError(
            f"unsupported protocol {protocol!r}; use one of " + ", ".join(map(repr, PROTOCOLS)),
            file=where,
            path=f"{COMM}.protocol",
            value=protocol,
        )
    names = {"cert": "certificate_path", "key": "key_path", "ca": "ca_path"}
    paths: dict[str, str] = {}
    for arg, key in names.items():
        value = getattr(comm, key)
        if not value:
            raise ConfigError(
                f"is not set; TLS needs it (point {key} at the {arg} file, then {_FIX_CERTS}), "
                f"or set {COMM}.enabled: false to go without TLS",
                file=where,
                path=f"{COMM}.{key}",
            )
        paths[arg] = str(value)
    keys = {arg: (where, f"{COMM}.{key}") for arg, key in names.items()}
    if role == "server":
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        _harden(ctx, protocol)
        ctx.verify_mode = ssl.CERT_REQUIRED if require_client_cert else ssl.CERT_OPTIONAL
    else:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        _harden(ctx, protocol)
        ctx.verify_mode = ssl.CERT_REQUIRED
        ctx.check_hostname = True
    _load_ca(ctx, paths["ca"], keys["ca"])
    _load_chain(ctx, paths["cert"], paths["key"], keys)
    return ctx


def context_for_url(
    url: str,
    security_config: Any,
    *,
    allow_insecure: bool = False,
    key: str | None = "sync.central_url",
    logger: logging.Logger | None = None,
) -> ssl.SSLContext | None:
    """The client context for calling ``url``: TLS for https://, None for allowed http://.

    An https:// URL with communication encryption disabled uses the system's trust store
    (no client certificate) at the configured minimum version.
    """
    check_plain_http(url, allow_insecure, logger, key=key)
    if urlsplit(url).scheme != "https":
        return None
    ctx = context_from_config(security_config, "client")
    if ctx is None:
        ctx = ssl.create_default_context()
        _harden(ctx, _communication(security_config).protocol)
    return ctx


def peer_identity(sock: ssl.SSLSocket | ssl.SSLObject) -> str | None:
    """The verified peer certificate's CN (a device id under mTLS), or None without one."""
    return peer_subject(sock).get("commonName")


def peer_subject(sock: ssl.SSLSocket | ssl.SSLObject) -> dict[str, str]:
    """The verified peer certificate's subject as {attribute: value} (e.g. CN, OU), or {}."""
    try:
        cert: Any = sock.getpeercert()  # typeshed's union hides the subject's shape
    except (ValueError, OSError):  # not connected, or the handshake has not happened
        return {}
    if not cert:
        return {}
    subject: dict[str, str] = {}
    for rdn in cert.get("subject", ()):
        for name, value in rdn:
            subject.setdefault(name, value)
    return subject


def is_loopback_host(host: str | None) -> bool:
    """True for localhost, 127.0.0.0/8 and ::1 (also as an IPv4-mapped address)."""
    if not host:
        return False
    host = host.strip("[]").rstrip(".").lower()
    if host == "localhost":
        return True
    try:
        ip = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped.is_loopback
    return ip.is_loopback


def check_plain_http(
    url: str,
    allow_insecure: bool,
    log: logging.Logger | None = None,
    *,
    key: str | None = None,
) -> None:
    """Allow ``url`` unless it is plain http:// to a host that is not loopback.

    ``allow_insecure`` (an explicit flag) lets it through with a WARNING on ``log``; else a
    ConfigError names the URL and the fix. ``key`` names the config key in the error.
    """
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme == "https":
        return
    if scheme != "http" or not parts.netloc:
        raise ConfigError(
            f"expected an https:// (or loopback http://) URL, got {url!r}", path=key, value=url
        )
    if is_loopback_host(parts.hostname):
        return
    if allow_insecure:
        (log or _log).warning(
            "plain HTTP to %s: traffic is neither encrypted nor authenticated "
            "(allowed by the insecure-HTTP flag); use https:// with certificates",
            url,
        )
        return
    raise ConfigError(
        f"refusing plain http:// to a host that is not loopback: {url}; use https:// with "
        f"certificates (set {COMM} in {SECURITY_FILE}; {_FIX_CERTS}), or allow it "
        "explicitly with the insecure-HTTP flag (--allow-insecure-http), which logs a warning",
        path=key,
        value=url,
    )


# -- internals


def _communication(security_config: Any) -> Any:
    """Accept a SecurityConfig or its CommunicationSecurity."""
    encryption = getattr(security_config, "encryption", None)
    return encryption.communication if encryption is not None else security_config


def _harden(ctx: ssl.SSLContext, protocol: str) -> None:
    if protocol not in PROTOCOLS:
        raise ConfigError(
            f"unsupported TLS protocol {protocol!r}; use one of " + ", ".join(map(repr, PROTOCOLS)),
            path="protocol",
            value=protocol,
        )
    ctx.minimum_version = PROTOCOLS[protocol]
    ctx.options |= ssl.OP_NO_COMPRESSION
    if protocol == "TLS 1.2":
        ctx.set_ciphers(_TLS12_CIPHERS)


def _load_ca(ctx: ssl.SSLContext, ca: PathLike, where: tuple[str, str] | None) -> None:
    _must_exist(ca, "CA certificate", where, "ca")
    try:
        ctx.load_verify_locations(cafile=os.fspath(ca))
    except ssl.SSLError as exc:
        raise _bad_file(ca, "CA certificate", where, "ca", exc) from exc


def _load_chain(
    ctx: ssl.SSLContext,
    cert: PathLike,
    key: PathLike,
    where: dict[str, tuple[str, str]],
) -> None:
    _must_exist(cert, "certificate", where.get("cert"), "cert")
    _must_exist(key, "private key", where.get("key"), "key")
    try:
        ctx.load_cert_chain(certfile=os.fspath(cert), keyfile=os.fspath(key))
    except ssl.SSLError as exc:
        mismatch = "KEY_VALUES_MISMATCH" in str(exc)
        what = "private key (it does not belong to the certificate)" if mismatch else "pair"
        raise ConfigError(
            f"cannot load the certificate {os.fspath(cert)} with the {what} "
            f"{os.fspath(key)}: {exc.reason or exc}; check both are PEM files made together "
            f"({_FIX_CERTS})",
            file=where.get("cert", (None, None))[0],
            path=where.get("key" if mismatch else "cert", (None, "cert"))[1],
            value=os.fspath(key if mismatch else cert),
        ) from exc


def _must_exist(path: PathLike, what: str, where: tuple[str, str] | None, arg: str) -> None:
    if os.path.isfile(path):
        return
    file, key = where if where is not None else (None, arg)
    problem = "is a folder, not a file" if os.path.isdir(path) else "does not exist"
    raise ConfigError(
        f"the {what} file {os.fspath(path)} {problem}; {_FIX_CERTS}, or point {key} at an "
        "existing file",
        file=file,
        path=key,
        value=os.fspath(path),
    )


def _bad_file(
    path: PathLike, what: str, where: tuple[str, str] | None, arg: str, exc: ssl.SSLError
) -> ConfigError:
    file, key = where if where is not None else (None, arg)
    return ConfigError(
        f"the {what} file {os.fspath(path)} is not a PEM certificate ({exc.reason or exc}); "
        f"{_FIX_CERTS}",
        file=file,
        path=key,
        value=os.fspath(path),
    )
