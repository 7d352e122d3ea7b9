"""TUF-style signed metadata: the root, targets, snapshot and timestamp roles, Ed25519.

The files follow the TUF specification's shapes (``{"signed": {...}, "signatures": [...]}``,
``_type``, ``spec_version``, ``version``, ``expires``, keys by key id, roles with key ids and
a threshold), so python-tuf's ``Metadata`` API reads them (a test checks it). Each file is
stored as its **canonical JSON** (sorted keys, no spaces, UTF-8) and a file that is not
exactly that is refused: the bytes signed are the bytes stored, so no edit of a file can
keep its signatures valid. Signatures are over the canonical ``signed`` object.

- **root**: the keys and thresholds of every role; a new root must be signed by the
  threshold of the old root's root keys *and* by its own (``verify_root_update``).
- **targets**: the payloads: length, SHA-256 and ``custom.edge_min`` (version, arch, kind,
  and the encoded files that carry it: full or delta).
- **snapshot**: the version of targets.json; **timestamp**: the version, length and hash of
  snapshot.json. Each is checked against the role's keys, threshold and expiry.

Only verification runs on a device (``edge_min.security.ed25519.verify``, pure Python
when no library is installed); signing needs the ``crypto`` extra.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from edge_min.security import ed25519
from edge_min.update.errors import BadBundle, BadSignature, MetadataExpired

__all__ = [
    "ROLES",
    "SPEC_VERSION",
    "Role",
    "Root",
    "canonical",
    "envelope",
    "expires_at",
    "format_expires",
    "key_id",
    "key_object",
    "parse",
    "sign",
    "verify_role",
    "verify_root_update",
]

SPEC_VERSION = "1.0.31"
ROLES = ("root", "targets", "snapshot", "timestamp")
#: The largest metadata file read (a bundle's root chain and targets stay far below it).
MAX_METADATA_BYTES = 1 << 20


def canonical(obj: Any) -> bytes:
    """The canonical JSON of ``obj``: sorted keys, no whitespace, UTF-8, no floats."""
    return json.dumps(
        obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode("utf-8")


def key_object(public: bytes) -> dict[str, Any]:
    """A public key as TUF writes it (``keytype``/``scheme`` ed25519, hex ``keyval``)."""
    return {"keytype": "ed25519", "scheme": "ed25519", "keyval": {"public": public.hex()}}


def key_id(public: bytes) -> str:
    """The key id TUF uses: SHA-256 (hex) of the key object's canonical JSON."""
    return hashlib.sha256(canonical(key_object(public))).hexdigest()


def format_expires(when: float) -> str:
    """``when`` (Unix seconds) as TUF's ``YYYY-MM-DDTHH:MM:SSZ``."""
    return dt.datetime.fromtimestamp(int(when), dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def expires_at(signed: Mapping[str, Any], name: str) -> float:
    """The ``expires`` of a role's signed part as Unix seconds; BadBundle if malformed."""
    text = signed.get("expires")
    try:
        assert isinstance(text, str) and text.endswith("Z")
        when = dt.datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=dt.UTC)
    except (AssertionError, ValueError):
        raise BadBundle(
            f"{name}: expires {text!r} is not a time like 2030-01-31T00:00:00Z: "
            "the file is damaged or was not made by `edge-min update bundle`"
        ) from None
    return when.timestamp()


@dataclass(frozen=True)
class Role:
    """A role's keys (key id -> raw public key) and how many must sign."""

    keys: Mapping[str, bytes]
    threshold: int


@dataclass(frozen=True)
class Root:
    """A parsed, verified root: its version, expiry and every role's keys and threshold."""

    version: int
    expires: float
    roles: Mapping[str, Role]
    raw: bytes  # the file, exactly as signed

    @classmethod
    def from_signed(cls, signed: Mapping[str, Any], raw: bytes, name: str) -> Root:
        """The root described by ``signed`` (checked for shape, not for signatures)."""
        keys = signed.get("keys")
        roles = signed.get("roles")
        if not isinstance(keys, dict) or not isinstance(roles, dict):
            raise BadBundle(f"{name}: a root needs 'keys' and 'roles' objects")
        public: dict[str, bytes] = {}
        for kid, obj in keys.items():
            raw_key = _public_of(obj, f"{name}: keys.{kid}")
            if key_id(raw_key) != kid:
                raise BadBundle(f"{name}: keys.{kid} is not the id of its key ({key_id(raw_key)})")
            public[kid] = raw_key
        out: dict[str, Role] = {}
        for role in ROLES:
            spec = roles.get(role)
            if not isinstance(spec, dict):
                raise BadBundle(f"{name}: roles.{role} is missing: a root names all four roles")
            ids, threshold = spec.get("keyids"), spec.get("threshold")
            if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
                raise BadBundle(f"{name}: roles.{role}.keyids must be a list of key ids")
            if not isinstance(threshold, int) or isinstance(threshold, bool) or threshold < 1:
                raise BadBundle(f"{name}: roles.{role}.threshold {threshold!r} must be ≥ 1")
            missing = [i for i in ids if i not in public]
            if missing:
                raise BadBundle(f"{name}: roles.{role} names keys not in 'keys': {missing}")
            if threshold > len(set(ids)):
                raise BadBundle(
                    f"{name}: roles.{role}.threshold {threshold} is more than its "
                    f"{len(set(ids))} keys: no set of signatures could ever meet it"
                )
            out[role] = Role({i: public[i] for i in ids}, threshold)
        return cls(_version(signed, name), expires_at(signed, name), out, raw)


def _public_of(obj: Any, where: str) -> bytes:
    if not (
        isinstance(obj, dict)
        and obj.get("keytype") == "ed25519"
        and obj.get("scheme") == "ed25519"
        and isinstance(obj.get("keyval"), dict)
    ):
        raise BadBundle(f"{where}: only ed25519 keys are accepted")
    text = obj["keyval"].get("public")
    raw = _hex(text, f"{where}.keyval.public")
    if len(raw) != ed25519.KEY_BYTES:
        raise BadBundle(f"{where}: an ed25519 public key has 32 bytes, not {len(raw)}")
    return raw


def _hex(text: Any, where: str) -> bytes:
    # Lower-case only: bytes.fromhex also takes "AB", and two spellings of one value would
    # let a byte of the file change while the signature stays valid.
    try:
        assert isinstance(text, str)
        raw = bytes.fromhex(text)
        assert raw.hex() == text
    except (AssertionError, ValueError):
        raise BadBundle(f"{where}: {str(text)[:20]!r} is not lower-case hex") from None
    return raw


def _version(signed: Mapping[str, Any], name: str) -> int:
    version = signed.get("version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise BadBundle(f"{name}: version {version!r} must be a whole number ≥ 1")
    return version


def envelope(signed: Mapping[str, Any], signatures: Iterable[tuple[str, bytes]]) -> bytes:
    """The file for ``signed`` with ``(key id, signature)`` pairs, as canonical JSON."""
    sigs = [{"keyid": kid, "sig": sig.hex()} for kid, sig in sorted(signatures)]
    return canonical({"signatures": sigs, "signed": dict(signed)})


def sign(signed: Mapping[str, Any], seeds: Sequence[bytes]) -> bytes:
    """The file for ``signed`` signed by every private key in ``seeds`` (needs ``crypto``)."""
    message = canonical(dict(signed))
    return envelope(
        signed, ((key_id(ed25519.public_key(s)), ed25519.sign(s, message)) for s in seeds)
    )


@dataclass(frozen=True)
class Parsed:
    """A metadata file taken apart: its signed part, its signatures, the signed bytes."""

    name: str
    signed: Mapping[str, Any]
    signatures: Mapping[str, bytes]  # key id -> signature
    message: bytes
    raw: bytes

    @property
    def version(self) -> int:
        """The ``version`` of the signed part."""
        return _version(self.signed, self.name)

    @property
    def expires(self) -> float:
        """The ``expires`` of the signed part, as Unix seconds."""
        return expires_at(self.signed, self.name)


def parse(raw: bytes, name: str, role: str) -> Parsed:
    """``raw`` (the file ``name``) as the metadata of ``role``; BadBundle unless canonical."""
    if len(raw) > MAX_METADATA_BYTES:
        raise BadBundle(f"{name}: {len(raw):,} bytes is more than metadata may have")
    try:
        doc = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as err:
        raise BadBundle(f"{name}: not JSON ({err}): the bundle is damaged or truncated") from None
    if not isinstance(doc, dict) or set(doc) != {"signed", "signatures"}:
        raise BadBundle(f"{name}: metadata is an object of 'signed' and 'signatures' only")
    try:
        again = canonical(doc)
    except ValueError:
        again = b""
    if again != raw:
        raise BadBundle(
            f"{name}: not in canonical JSON (sorted keys, no spaces): it was edited after "
            "signing; use the file `edge-min update bundle` wrote"
        )
    signed, sigs = doc["signed"], doc["signatures"]
    if not isinstance(signed, dict) or signed.get("_type") != role:
        kind = signed.get("_type") if isinstance(signed, dict) else None
        raise BadBundle(f"{name}: _type is {kind!r}, expected {role!r}")
    if not isinstance(sigs, list):
        raise BadBundle(f"{name}: 'signatures' must be a list")
    by_key: dict[str, bytes] = {}
    for i, s in enumerate(sigs):
        if not isinstance(s, dict) or set(s) != {"keyid", "sig"} or not isinstance(s["keyid"], str):
            raise BadBundle(f"{name}: signatures[{i}] must be {{'keyid', 'sig'}}")
        if s["keyid"] in by_key:
            raise BadBundle(f"{name}: two signatures by key {s['keyid'][:16]}")
        _hex(s["keyid"], f"{name}: signatures[{i}].keyid")
        by_key[s["keyid"]] = _hex(s["sig"], f"{name}: signatures[{i}].sig")
    return Parsed(name, signed, by_key, canonical(signed), raw)


def verify_role(parsed: Parsed, role: Role, *, by: str) -> None:
    """BadSignature unless ``role``'s threshold of its keys signed ``parsed``.

    ``by`` names whose keys they are (``"the trusted root v3"``) for the message.
    """
    good = sum(
        1
        for kid, public in role.keys.items()
        if kid in parsed.signatures
        and ed25519.verify(public, parsed.message, parsed.signatures[kid])
    )
    if good < role.threshold:
        raise BadSignature(
            f"{parsed.name}: {good} valid signature(s) by the keys of {by}, "
            f"{role.threshold} required: it was signed with other keys, or changed after "
            "signing; make the bundle with the keys this device trusts (`edge-min update "
            "bundle --keys DIR`), or pin the matching root (`--trust root.json`)"
        )


def check_fresh(parsed: Parsed, now: float) -> float:
    """The expiry of ``parsed``; MetadataExpired if ``now`` is past it."""
    expires = parsed.expires
    if now >= expires:
        raise MetadataExpired(
            f"{parsed.name}: expired at {parsed.signed['expires']} (now "
            f"{format_expires(now)}): an old bundle replayed, or the device clock is wrong; "
            "make a new bundle (`--expires` sets how long it lives) or fix the clock"
        )
    return expires


def verify_root_update(trusted: Root, raw: bytes, name: str) -> Root:
    """The root in ``raw`` if it is the next version, signed by ``trusted``'s root keys
    (their threshold) and by its own; BadSignature, BadBundle or RollbackRefused otherwise."""
    from edge_min.update.errors import RollbackRefused

    parsed = parse(raw, name, "root")
    new = Root.from_signed(parsed.signed, raw, name)
    if new.version != trusted.version + 1:
        raise (RollbackRefused if new.version <= trusted.version else BadBundle)(
            f"{name}: root version {new.version} does not follow the trusted "
            f"{trusted.version}: roots are accepted one version at a time"
        )
    verify_role(parsed, trusted.roles["root"], by=f"the trusted root v{trusted.version}")
    verify_role(parsed, new.roles["root"], by=f"the new root v{new.version} itself")
    return new


def load_root(raw: bytes, name: str = "root.json") -> Root:
    """A root that is signed by its own root keys (a root pinned on first use)."""
    parsed = parse(raw, name, "root")
    root = Root.from_signed(parsed.signed, raw, name)
    verify_role(parsed, root.roles["root"], by=f"root v{root.version} itself")
    return root
