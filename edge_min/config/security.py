"""edge-security.yaml: encryption, access control, attestation and tamper detection.

Mirrors the spec file key for key. Relative certificate paths are resolved against the file's
folder. ``attestation.method`` accepts ``remote`` (the spec's: quotes to a server) and ``local``
(an extension: measure and compare on the device, no server). ``attestation.server`` null (the
default) means the sync central (``sync.central_url``), reached like sync.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from edge_min.config._validate import Reader, join, show
from edge_min.config.runtime import DAY, check_url

ALGORITHMS = ("AES-256-GCM",)
TLS_PROTOCOLS = ("TLS 1.3", "TLS 1.2")
AUTH_METHODS = ("certificate", "token", "any")
POLICIES = ("deny", "allow")
PERMISSIONS = ("read", "write", "execute", "configure")
ATTESTATION_METHODS = ("remote", "local")
TAMPER_CHECKS = ("boot_integrity", "filesystem_integrity", "hardware_integrity")
TAMPER_RESPONSES = ("lockdown", "alert", "log")
_CERTS = "/etc/meta-agent/certs"


@dataclass(frozen=True)
class StorageEncryption:
    """``encryption.storage``: at-rest encryption and key rotation (days)."""

    enabled: bool = True
    algorithm: str = "AES-256-GCM"
    key_rotation_days: int = 30


@dataclass(frozen=True)
class CommunicationSecurity:
    """``encryption.communication``: TLS version and the device's certificate files."""

    enabled: bool = True
    protocol: str = "TLS 1.3"
    certificate_path: str | None = f"{_CERTS}/device.crt"
    key_path: str | None = f"{_CERTS}/device.key"
    ca_path: str | None = f"{_CERTS}/ca.crt"


@dataclass(frozen=True)
class EncryptionConfig:
    """``encryption:``."""

    storage: StorageEncryption = field(default_factory=StorageEncryption)
    communication: CommunicationSecurity = field(default_factory=CommunicationSecurity)


@dataclass(frozen=True)
class AuthenticationConfig:
    """``access_control.authentication``: how callers of the local API prove who they are.

    ``certificate``: client certificates only (the API serves TLS; the spec's value, which
    needs the device's certificate files); ``token``: bearer tokens only (the default, so a
    first start needs no certificates); ``any``: either.
    """

    method: str = "token"
    token_expiry: float = DAY
    # extension: client certificate CN -> role, for callers of the local API over TLS
    certificate_roles: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Role:
    """A named set of permissions."""

    name: str
    permissions: tuple[str, ...]


def default_roles() -> tuple[Role, ...]:
    """The spec's three roles."""
    return (
        Role("admin", PERMISSIONS),
        Role("operator", ("read", "execute")),
        Role("monitor", ("read",)),
    )


@dataclass(frozen=True)
class AuthorizationConfig:
    """``access_control.authorization``: the default policy and the roles."""

    default_policy: str = "deny"
    roles: tuple[Role, ...] = field(default_factory=default_roles)

    def role(self, name: str) -> Role | None:
        """The role called ``name``, if any."""
        return next((r for r in self.roles if r.name == name), None)


@dataclass(frozen=True)
class AccessControlConfig:
    """``access_control:``."""

    authentication: AuthenticationConfig = field(default_factory=AuthenticationConfig)
    authorization: AuthorizationConfig = field(default_factory=AuthorizationConfig)


@dataclass(frozen=True)
class AttestationConfig:
    """``attestation:``: proving the device's integrity, every ``interval`` seconds.

    ``server`` None: the sync central (``sync.central_url``), with sync's TLS and identity.
    """

    enabled: bool = True
    method: str = "remote"
    interval: float = DAY
    server: str | None = None


@dataclass(frozen=True)
class TamperDetectionConfig:
    """``tamper_detection:``: which checks run, how often, and what happens on failure."""

    enabled: bool = True
    checks: tuple[str, ...] = TAMPER_CHECKS
    interval: float = 3600.0
    response: str = "lockdown"


@dataclass(frozen=True)
class SecurityConfig:
    """The whole of edge-security.yaml."""

    encryption: EncryptionConfig = field(default_factory=EncryptionConfig)
    access_control: AccessControlConfig = field(default_factory=AccessControlConfig)
    attestation: AttestationConfig = field(default_factory=AttestationConfig)
    tamper_detection: TamperDetectionConfig = field(default_factory=TamperDetectionConfig)


SECURITY_KEYS = ("encryption", "access_control", "attestation", "tamper_detection")
_ENC_KEYS = ("storage", "communication")
_STORAGE_KEYS = ("enabled", "algorithm", "key_rotation_days")
_COMM_KEYS = ("enabled", "protocol", "certificate_path", "key_path", "ca_path")
_AC_KEYS = ("authentication", "authorization")
_AUTHN_KEYS = ("method", "token_expiry", "certificate_roles")
_AUTHZ_KEYS = ("default_policy", "roles")
_ROLE_KEYS = ("name", "permissions")
_ATTEST_KEYS = ("enabled", "method", "interval", "server")
_TAMPER_KEYS = ("enabled", "checks", "interval", "response")


def parse_security_config(r: Reader, data: dict[str, Any]) -> SecurityConfig:
    """Read edge-security.yaml's data."""
    r.check_keys(data, "", SECURITY_KEYS)
    return SecurityConfig(
        encryption=_encryption(r, data),
        access_control=_access_control(r, data),
        attestation=_attestation(r, data),
        tamper_detection=_tamper(r, data),
    )


def _encryption(r: Reader, data: dict[str, Any]) -> EncryptionConfig:
    enc = r.section(data, "encryption", "", _ENC_KEYS)
    p = "encryption.storage"
    d = r.section(enc, "storage", "encryption", _STORAGE_KEYS)
    ds = StorageEncryption()
    storage = StorageEncryption(
        enabled=r.boolean(d, "enabled", p, ds.enabled),
        algorithm=r.enum(d, "algorithm", p, ds.algorithm, ALGORITHMS),
        key_rotation_days=r.integer(d, "key_rotation_days", p, ds.key_rotation_days, minimum=1),
    )
    p = "encryption.communication"
    d = r.section(enc, "communication", "encryption", _COMM_KEYS)
    dc = CommunicationSecurity()
    comm = CommunicationSecurity(
        enabled=r.boolean(d, "enabled", p, dc.enabled),
        protocol=r.enum(d, "protocol", p, dc.protocol, TLS_PROTOCOLS),
        certificate_path=r.file_path(d, "certificate_path", p)
        if "certificate_path" in d
        else dc.certificate_path,
        key_path=r.file_path(d, "key_path", p) if "key_path" in d else dc.key_path,
        ca_path=r.file_path(d, "ca_path", p) if "ca_path" in d else dc.ca_path,
    )
    if comm.enabled and (comm.certificate_path is None) != (comm.key_path is None):
        missing = "key_path" if comm.key_path is None else "certificate_path"
        r.fail(
            join(p, missing),
            "is required when the other of certificate_path/key_path is set",
        )
    return EncryptionConfig(storage=storage, communication=comm)


def _access_control(r: Reader, data: dict[str, Any]) -> AccessControlConfig:
    ac = r.section(data, "access_control", "", _AC_KEYS)
    p = "access_control.authentication"
    d = r.section(ac, "authentication", "access_control", _AUTHN_KEYS)
    da = AuthenticationConfig()
    authn = AuthenticationConfig(
        method=r.enum(d, "method", p, da.method, AUTH_METHODS),
        token_expiry=r.duration(d, "token_expiry", p, da.token_expiry),
    )
    p = "access_control.authorization"
    d = r.section(ac, "authorization", "access_control", _AUTHZ_KEYS)
    dz = AuthorizationConfig()
    roles = _roles(r, d, p) if "roles" in d else dz.roles
    authz = AuthorizationConfig(
        default_policy=r.enum(d, "default_policy", p, dz.default_policy, POLICIES),
        roles=roles,
    )
    authn = _certificate_roles(r, ac, authn, {role.name for role in roles})
    return AccessControlConfig(authentication=authn, authorization=authz)


def _certificate_roles(
    r: Reader, ac: dict[str, Any], authn: AuthenticationConfig, roles: set[str]
) -> AuthenticationConfig:
    raw = (ac.get("authentication") or {}).get("certificate_roles")
    if raw is None:
        return authn
    p = "access_control.authentication.certificate_roles"
    if not isinstance(raw, dict):
        r.fail(p, f"expected a mapping of certificate CN to role, got {raw!r}", raw)
        return authn
    mapping: dict[str, str] = {}
    for cn, role in raw.items():
        if not isinstance(role, str) or role not in roles:
            r.fail(
                join(p, str(cn)),
                f"role {role!r} is not one of the configured roles ({', '.join(sorted(roles))})",
                role,
            )
            continue
        mapping[str(cn)] = role
    return AuthenticationConfig(authn.method, authn.token_expiry, mapping)


def _roles(r: Reader, d: dict[str, Any], p: str) -> tuple[Role, ...]:
    out: list[Role] = []
    seen: set[str] = set()
    for i, raw in enumerate(r.items(d, "roles", p)):
        rp = join(join(p, "roles"), i)
        rd = r.mapping(raw, rp)
        r.check_keys(rd, rp, _ROLE_KEYS)
        name = r.required_string(rd, "name", rp, "every role needs a name")
        if name in seen:
            r.fail(join(rp, "name"), f"duplicate role name {show(name)}", name)
        seen.add(name)
        if "permissions" not in rd:
            r.fail(join(rp, "permissions"), "is required: a list of " + ", ".join(PERMISSIONS))
        perms = r.string_list(rd, "permissions", rp, (), choices=PERMISSIONS)
        out.append(Role(name=name, permissions=perms))
    return tuple(out)


def _attestation(r: Reader, data: dict[str, Any]) -> AttestationConfig:
    p = "attestation"
    d = r.section(data, "attestation", "", _ATTEST_KEYS)
    dflt = AttestationConfig()
    server = r.optional_string(d, "server", p) if "server" in d else dflt.server
    if "server" in d and server:
        check_url(r, join(p, "server"), server)
    cfg = AttestationConfig(
        enabled=r.boolean(d, "enabled", p, dflt.enabled),
        method=r.enum(d, "method", p, dflt.method, ATTESTATION_METHODS),
        interval=r.duration(d, "interval", p, dflt.interval),
        server=server,
    )
    if cfg.method == "local" and cfg.server:
        r.fail(
            join(p, "server"),
            "is only used with method remote; remove it, or set method: remote",
            cfg.server,
        )
    return cfg


def _tamper(r: Reader, data: dict[str, Any]) -> TamperDetectionConfig:
    p = "tamper_detection"
    d = r.section(data, "tamper_detection", "", _TAMPER_KEYS)
    dflt = TamperDetectionConfig()
    return TamperDetectionConfig(
        enabled=r.boolean(d, "enabled", p, dflt.enabled),
        checks=r.string_list(d, "checks", p, dflt.checks, choices=TAMPER_CHECKS),
        interval=r.duration(d, "interval", p, dflt.interval),
        response=r.enum(d, "response", p, dflt.response, TAMPER_RESPONSES),
    )
