"""The little PKI a device needs without ``cryptography``: DER, a key, a CSR, a certificate.

The gateway binary ships pycryptodome, not ``cryptography`` (16 MB of OpenSSL bindings it
leaves out), yet ``edge-min enroll`` must make a key and a CSR, sign with a factory key and
read the certificate central answers with. This module does those with a small DER writer
and reader of its own and pycryptodome's ECC, RSA and signatures:

- ``new_key_and_csr(cn)``: a fresh EC P-256 key as PKCS#8 PEM (``BEGIN PRIVATE KEY``, which
  Python's ``ssl`` loads as a TLS client key), a PKCS#10 CSR for it (RFC 2986: subject
  CN = ``cn`` or empty, ecdsa-with-SHA256, a DER signature) as PEM, and the key's
  SubjectPublicKeyInfo DER;
- ``sign_with_pem(key_pem, data)``: ``data`` signed with an unencrypted PEM private key as
  ``edge_min.central.ca.sign_with`` signs (EC: ECDSA SHA-256, DER; RSA: PKCS#1 v1.5
  SHA-256; Ed25519);
- ``parse_certificate(pem_or_der)`` / ``parse_csr(...)``: the parts a device checks (subject,
  SubjectPublicKeyInfo, algorithms); nothing here verifies a certificate's signature, TLS
  does that. ``verify_csr`` checks a CSR's own signature.

The reader needs nothing beyond the stdlib (``certificate_cn`` works on any host); the
signing parts import pycryptodome on first use (``MissingDependency`` names the install).
Anything malformed is ``PkixError`` naming the part that is wrong, never an IndexError.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, NamedTuple

from edge_min.errors import EdgeError, MissingDependency

OID_COMMON_NAME = "2.5.4.3"
OID_EC_PUBLIC_KEY = "1.2.840.10045.2.1"
OID_P256 = "1.2.840.10045.3.1.7"
OID_ECDSA_SHA256 = "1.2.840.10045.4.3.2"

INTEGER, BIT_STRING, OID, SEQUENCE, SET = 0x02, 0x03, 0x06, 0x30, 0x31
UTF8_STRING, UTC_TIME, GENERALIZED_TIME = 0x0C, 0x17, 0x18
CONTEXT_0 = 0xA0  # [0] constructed: a certificate's version, a CSR's attributes
_TAG_NAMES = {
    INTEGER: "INTEGER",
    BIT_STRING: "BIT STRING",
    0x04: "OCTET STRING",
    0x05: "NULL",
    OID: "OBJECT IDENTIFIER",
    SEQUENCE: "SEQUENCE",
    SET: "SET",
    CONTEXT_0: "[0]",
}
# The string types a name attribute may use, and how to read them.
_STRINGS = {
    UTF8_STRING: "utf-8",
    0x13: "ascii",  # PrintableString
    0x16: "ascii",  # IA5String
    0x14: "latin-1",  # TeletexString, as OpenSSL reads it
    0x1E: "utf-16-be",  # BMPString
    0x1C: "utf-32-be",  # UniversalString
}
# What may follow subjectPublicKeyInfo in a tbsCertificate: issuer/subject unique ids, extensions.
_TBS_TAIL = (0x81, 0x82, 0xA3)


class PkixError(EdgeError):
    """A certificate, CSR or key is malformed or of a kind this module does not handle."""

    code = "pkix_error"


class Element(NamedTuple):
    """One DER element: its tag, its content and its whole encoding."""

    tag: int
    content: bytes
    raw: bytes


# -- writing DER ---------------------------------------------------------------------------


def der(tag: int, content: bytes) -> bytes:
    """One DER element (definite, minimal length)."""
    n = len(content)
    if n < 0x80:
        return bytes((tag, n)) + content
    size = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes((tag, 0x80 | len(size))) + size + content


def der_sequence(*parts: bytes) -> bytes:
    return der(SEQUENCE, b"".join(parts))


def der_integer(value: int) -> bytes:
    return der(INTEGER, value.to_bytes(value.bit_length() // 8 + 1, "big", signed=True))


def der_oid(dotted: str) -> bytes:
    arcs = [int(arc) for arc in dotted.split(".")]
    body = bytearray()
    for arc in [arcs[0] * 40 + arcs[1], *arcs[2:]]:
        chunk = [arc & 0x7F]
        arc >>= 7
        while arc:
            chunk.append(0x80 | (arc & 0x7F))
            arc >>= 7
        body += bytes(reversed(chunk))
    return der(OID, bytes(body))


def der_bit_string(data: bytes) -> bytes:
    return der(BIT_STRING, b"\x00" + data)


def der_name(common_name: str | None) -> bytes:
    """An X.501 Name: ``CN=common_name`` (UTF8String), or the empty name."""
    if not common_name:
        return der_sequence()
    attribute = der_sequence(der_oid(OID_COMMON_NAME), der(UTF8_STRING, common_name.encode()))
    return der_sequence(der(SET, attribute))


def pem(label: str, data: bytes) -> str:
    """``data`` as a PEM block (64 base64 characters a line), ending in a newline."""
    text = base64.b64encode(data).decode("ascii")
    lines = [text[i : i + 64] for i in range(0, len(text), 64)]
    return f"-----BEGIN {label}-----\n" + "\n".join(lines) + f"\n-----END {label}-----\n"


# -- reading DER ---------------------------------------------------------------------------


def read_element(data: bytes, at: int, what: str) -> tuple[Element, int]:
    """The DER element starting at byte ``at`` of ``data`` and the offset after it."""
    start = at
    if at + 2 > len(data):
        raise PkixError(f"{what} is truncated: no tag and length at byte {at}")
    tag, first = data[at], data[at + 1]
    at += 2
    if tag & 0x1F == 0x1F:
        raise PkixError(f"{what}: the multi-byte tag at byte {start} is not one X.509 uses")
    if first == 0x80:
        raise PkixError(f"{what}: the indefinite length at byte {start} is BER, not DER")
    length = first
    if first > 0x80:
        size = first & 0x7F
        if size > 4 or at + size > len(data):
            raise PkixError(f"{what} is truncated or corrupt: a {size}-byte length at byte {start}")
        length = int.from_bytes(data[at : at + size], "big")
        if length < 0x80 or data[at] == 0:
            raise PkixError(f"{what}: the length at byte {start} is not minimal (not DER)")
        at += size
    end = at + length
    if end > len(data):
        raise PkixError(
            f"{what} is truncated: {length} bytes announced at byte {start}, {len(data) - at} there"
        )
    return Element(tag, data[at:end], data[start:end]), end


def children(content: bytes, what: str) -> list[Element]:
    """The elements that fill ``content`` exactly (the inside of a SEQUENCE or SET)."""
    out, at = [], 0
    while at < len(content):
        element, at = read_element(content, at, what)
        out.append(element)
    return out


def expect(element: Element, tag: int, what: str) -> Element:
    """``element``, if it has ``tag``; else PkixError naming both."""
    if element.tag != tag:
        raise PkixError(f"{what} is {_tag_name(element.tag)}, not {_tag_name(tag)}")
    return element


def single(data: bytes, tag: int, what: str) -> Element:
    """The one element of tag ``tag`` that ``data`` is, with nothing after it."""
    element, end = read_element(data, 0, what)
    if end != len(data):
        raise PkixError(f"{what} has {len(data) - end} bytes of trailing data")
    return expect(element, tag, what)


def oid_text(element: Element, what: str) -> str:
    """An OBJECT IDENTIFIER as dotted text."""
    body = expect(element, OID, what).content
    if not body or body[-1] & 0x80:
        raise PkixError(f"{what} is not a complete object identifier")
    arcs: list[int] = []
    value, fresh = 0, True
    for byte in body:
        if fresh and byte == 0x80:
            raise PkixError(f"{what}: an object identifier arc is not minimal (not DER)")
        value = value << 7 | (byte & 0x7F)
        fresh = not byte & 0x80
        if fresh:
            arcs.append(value)
            value = 0
    top = min(arcs[0] // 40, 2)
    return ".".join(str(a) for a in [top, arcs[0] - 40 * top, *arcs[1:]])


def integer(element: Element, what: str) -> int:
    body = expect(element, INTEGER, what).content
    if not body:
        raise PkixError(f"{what} is an empty INTEGER")
    return int.from_bytes(body, "big", signed=True)


def bit_string(element: Element, what: str) -> bytes:
    """The bytes of a BIT STRING with no unused bits."""
    body = expect(element, BIT_STRING, what).content
    if not body or body[0] != 0:
        raise PkixError(f"{what} is not a whole number of bytes")
    return body[1:]


def pem_decode(data: str | bytes, label: str) -> bytes:
    """The DER of the first ``label`` PEM block in ``data``."""
    try:
        text = data if isinstance(data, str) else data.decode("ascii")
    except UnicodeDecodeError as exc:
        raise PkixError(f"the {label} PEM is not ASCII text") from exc
    begin, end = f"-----BEGIN {label}-----", f"-----END {label}-----"
    start = text.find(begin)
    if start < 0:
        raise PkixError(f"no {begin} block")
    stop = text.find(end, start)
    if stop < 0:
        raise PkixError(f"the {label} PEM block has no END line (truncated?)")
    try:
        decoded = base64.b64decode("".join(text[start + len(begin) : stop].split()), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise PkixError(f"the {label} PEM block is not valid base64") from exc
    if not decoded:
        raise PkixError(f"the {label} PEM block is empty")
    return decoded


def _tag_name(tag: int) -> str:
    return _TAG_NAMES.get(tag, f"tag 0x{tag:02x}")


def _der_input(data: str | bytes, label: str) -> bytes:
    if isinstance(data, bytes) and b"-----BEGIN" not in data:
        return data
    return pem_decode(data, label)


# -- names, certificates and CSRs ----------------------------------------------------------


def name_attributes(element: Element, what: str) -> tuple[tuple[str, str], ...]:
    """An X.501 Name as (OID, value) pairs in order; a value not a string shows as hex."""
    out: list[tuple[str, str]] = []
    for rdn in children(expect(element, SEQUENCE, what).content, what):
        for attribute in children(expect(rdn, SET, f"{what}'s RDN").content, what):
            parts = children(expect(attribute, SEQUENCE, f"{what}'s attribute").content, what)
            if len(parts) != 2:
                raise PkixError(f"{what}: an attribute has {len(parts)} parts, not 2")
            kind = oid_text(parts[0], f"{what}'s attribute type")
            out.append((kind, _text(parts[1], kind, what)))
    return tuple(out)


def _text(value: Element, kind: str, what: str) -> str:
    codec = _STRINGS.get(value.tag)
    if codec is None:
        if kind == OID_COMMON_NAME:
            raise PkixError(f"{what}: the CN is {_tag_name(value.tag)}, not a string")
        return "#" + value.raw.hex()
    try:
        return value.content.decode(codec)
    except UnicodeDecodeError as exc:
        raise PkixError(f"{what}: an attribute ({kind}) is not valid {codec}") from exc


def _common_name(subject: tuple[tuple[str, str], ...]) -> str | None:
    return next((value for kind, value in subject if kind == OID_COMMON_NAME), None)


def _algorithm(element: Element, what: str) -> str:
    parts = children(expect(element, SEQUENCE, what).content, what)
    if not parts or len(parts) > 2:
        raise PkixError(f"{what} has {len(parts)} parts, not an algorithm and its parameters")
    return oid_text(parts[0], f"{what}'s algorithm")


def _public_key_algorithm(element: Element, what: str) -> str:
    parts = children(expect(element, SEQUENCE, what).content, what)
    if len(parts) != 2:
        raise PkixError(f"{what} has {len(parts)} parts, not an algorithm and a key")
    bit_string(parts[1], f"{what}'s key")
    return _algorithm(parts[0], f"{what}'s algorithm")


@dataclass(frozen=True)
class Certificate:
    """What a device reads from an X.509 certificate. Nothing here verifies its signature."""

    der: bytes
    serial: int
    subject: tuple[tuple[str, str], ...]
    public_key_info: bytes  # subjectPublicKeyInfo, DER
    key_algorithm: str  # dotted OID
    signature_algorithm: str
    subject_der: bytes = b""  # the subject Name as encoded, to issue under it
    not_after: datetime | None = None

    @property
    def common_name(self) -> str | None:
        """The subject's first CN, or None without one."""
        return _common_name(self.subject)


@dataclass(frozen=True)
class Csr:
    """A PKCS#10 certificate signing request's parts."""

    der: bytes
    info: bytes  # certificationRequestInfo, DER: what the signature covers
    subject: tuple[tuple[str, str], ...]
    public_key_info: bytes
    key_algorithm: str
    signature_algorithm: str
    signature: bytes

    @property
    def common_name(self) -> str | None:
        return _common_name(self.subject)


def parse_certificate(data: str | bytes) -> Certificate:
    """The subject and public key of a certificate (PEM text, PEM bytes or DER)."""
    raw = _der_input(data, "CERTIFICATE")
    outer = single(raw, SEQUENCE, "the certificate")
    parts = children(outer.content, "the certificate")
    if len(parts) != 3:
        raise PkixError(
            f"the certificate has {len(parts)} parts, not 3 "
            "(tbsCertificate, signatureAlgorithm, signatureValue)"
        )
    tbs, algorithm, signature = parts
    fields = children(expect(tbs, SEQUENCE, "tbsCertificate").content, "tbsCertificate")
    if fields and fields[0].tag == CONTEXT_0:
        version = children(fields[0].content, "the certificate's version")
        if len(version) != 1 or integer(version[0], "the certificate's version") not in (0, 1, 2):
            raise PkixError("the certificate's version is not 1, 2 or 3")
        fields = fields[1:]
    if len(fields) < 6:
        raise PkixError(
            f"tbsCertificate has {len(fields)} fields after its version, not serialNumber, "
            "signature, issuer, validity, subject and subjectPublicKeyInfo"
        )
    serial, inner, issuer, validity, subject, spki = fields[:6]
    for extra in fields[6:]:
        if extra.tag not in _TBS_TAIL:
            raise PkixError(f"tbsCertificate: {_tag_name(extra.tag)} after subjectPublicKeyInfo")
    name_attributes(issuer, "the issuer")
    times = children(expect(validity, SEQUENCE, "the validity").content, "the validity")
    if [t.tag in (UTC_TIME, GENERALIZED_TIME) for t in times] != [True, True]:
        raise PkixError("the validity is not two times (notBefore, notAfter)")
    signed_with = _algorithm(algorithm, "the signatureAlgorithm")
    if _algorithm(inner, "tbsCertificate's signature") != signed_with:
        raise PkixError("tbsCertificate's signature algorithm is not the signatureAlgorithm")
    bit_string(signature, "the signatureValue")
    return Certificate(
        der=raw,
        serial=integer(serial, "the serialNumber"),
        subject=name_attributes(subject, "the subject"),
        public_key_info=spki.raw,
        key_algorithm=_public_key_algorithm(spki, "subjectPublicKeyInfo"),
        signature_algorithm=signed_with,
        subject_der=subject.raw,
        not_after=_time(times[1], "the validity's notAfter"),
    )


def _time(element: Element, what: str) -> datetime:
    """A UTCTime (years 1950-2049) or GeneralizedTime ending in Z, as an aware datetime."""
    text = element.content.decode("ascii", "replace")
    form = "%y%m%d%H%M%SZ" if element.tag == UTC_TIME else "%Y%m%d%H%M%SZ"
    try:
        moment = datetime.strptime(text, form).replace(tzinfo=UTC)
    except ValueError:
        raise PkixError(f"{what} {text!r} is not a time in the form {form}") from None
    if element.tag == UTC_TIME and moment.year >= 2050:
        moment = moment.replace(year=moment.year - 100)
    return moment


def parse_csr(data: str | bytes) -> Csr:
    """The parts of a PKCS#10 CSR (PEM text, PEM bytes or DER); its signature unchecked."""
    raw = _der_input(data, "CERTIFICATE REQUEST")
    parts = children(single(raw, SEQUENCE, "the CSR").content, "the CSR")
    if len(parts) != 3:
        raise PkixError(
            f"the CSR has {len(parts)} parts, not 3 "
            "(certificationRequestInfo, signatureAlgorithm, signature)"
        )
    info, algorithm, signature = parts
    fields = children(
        expect(info, SEQUENCE, "certificationRequestInfo").content, "certificationRequestInfo"
    )
    if len(fields) != 4:
        raise PkixError(
            f"certificationRequestInfo has {len(fields)} fields, not 4 "
            "(version, subject, subjectPKInfo, attributes)"
        )
    version, subject, spki, attributes = fields
    if integer(version, "the CSR's version") != 0:
        raise PkixError("the CSR's version is not 0 (PKCS#10 v1)")
    expect(attributes, CONTEXT_0, "the CSR's attributes")
    return Csr(
        der=raw,
        info=info.raw,
        subject=name_attributes(subject, "the CSR's subject"),
        public_key_info=spki.raw,
        key_algorithm=_public_key_algorithm(spki, "the CSR's subjectPKInfo"),
        signature_algorithm=_algorithm(algorithm, "the CSR's signatureAlgorithm"),
        signature=bit_string(signature, "the CSR's signature"),
    )


# -- keys and signatures (pycryptodome) ----------------------------------------------------


def pycryptodome(purpose: str) -> Any:
    """pycryptodome's ECC, DSS and SHA256 modules, imported on first use."""
    try:
        from Crypto.Hash import SHA256
        from Crypto.PublicKey import ECC
        from Crypto.Signature import DSS
    except ImportError:
        raise MissingDependency("pycryptodome", "crypto", purpose) from None
    return ECC, DSS, SHA256


def new_key_and_csr(common_name: str | None) -> tuple[bytes, str, bytes]:
    """(key PEM, CSR PEM, SubjectPublicKeyInfo DER) of a fresh EC P-256 key."""
    ECC, DSS, SHA256 = pycryptodome("making the device's key and CSR")
    key = ECC.generate(curve="P-256")
    public = bytes(key.public_key().export_key(format="DER"))
    info = der_sequence(der_integer(0), der_name(common_name), public, der(CONTEXT_0, b""))
    signature = DSS.new(key, "deterministic-rfc6979", encoding="der").sign(SHA256.new(info))
    csr = der_sequence(info, der_sequence(der_oid(OID_ECDSA_SHA256)), der_bit_string(signature))
    key_pem = key.export_key(format="PEM", use_pkcs8=True).strip() + "\n"
    return key_pem.encode("ascii"), pem("CERTIFICATE REQUEST", csr), public


def verify_csr(csr: Csr) -> None:
    """PkixError unless ``csr`` is signed ecdsa-with-SHA256 by its own EC key."""
    ECC, DSS, SHA256 = pycryptodome("checking a CSR")
    if csr.signature_algorithm != OID_ECDSA_SHA256:
        raise PkixError(f"the CSR is signed with {csr.signature_algorithm}, not ecdsa-with-SHA256")
    if csr.key_algorithm != OID_EC_PUBLIC_KEY:
        raise PkixError(f"the CSR's key is {csr.key_algorithm}, not an EC key")
    try:
        key = ECC.import_key(csr.public_key_info)
        DSS.new(key, "fips-186-3", encoding="der").verify(SHA256.new(csr.info), csr.signature)
    except (ValueError, TypeError, IndexError) as exc:
        raise PkixError(f"the CSR's signature does not verify ({exc})") from exc


def sign_with_pem(key_pem: bytes, data: bytes) -> bytes:
    """``data`` signed by an unencrypted PEM private key: EC (ECDSA SHA-256, DER), RSA
    (PKCS#1 v1.5 SHA-256) or Ed25519, as ``edge_min.central.ca.sign_with`` signs."""
    ECC, DSS, SHA256 = pycryptodome("signing with the factory key")
    if b"ENCRYPTED" in key_pem:
        raise PkixError("the key is encrypted; give it unencrypted (PKCS#8 or SEC1/PKCS#1 PEM)")
    try:
        key = ECC.import_key(key_pem)
    except (ValueError, TypeError, IndexError):
        return _sign_rsa(key_pem, data)
    if not key.has_private():
        raise PkixError("the key file holds a public key; signing needs the private key")
    if key.curve == "Ed25519":
        from Crypto.Signature import eddsa

        return bytes(eddsa.new(key, "rfc8032").sign(data))
    if key.curve in ("NIST P-256", "NIST P-384", "NIST P-521"):
        # RFC 6979 nonces: no random number needed, and no library refuses SHA-256 on P-384.
        signer = DSS.new(key, "deterministic-rfc6979", encoding="der")
        return bytes(signer.sign(SHA256.new(data)))
    raise PkixError(f"a key on {key.curve} cannot sign here; use EC P-256/P-384, RSA or Ed25519")


def _sign_rsa(key_pem: bytes, data: bytes) -> bytes:
    try:
        from Crypto.PublicKey import RSA
        from Crypto.Signature import pkcs1_15
    except ImportError:
        raise MissingDependency("pycryptodome", "crypto", "signing with an RSA key") from None
    SHA256 = pycryptodome("signing with an RSA key")[2]
    try:
        key = RSA.import_key(key_pem)
    except (ValueError, TypeError, IndexError) as exc:
        raise PkixError(
            "the key is not a PEM private key that can sign (EC P-256/P-384, RSA or Ed25519)"
        ) from exc
    if not key.has_private():
        raise PkixError("the key file holds a public key; signing needs the private key")
    return bytes(pkcs1_15.new(key).sign(SHA256.new(data)))
