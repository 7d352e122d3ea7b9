"""X.509 certificates made with pycryptodome and ``edge_min.security.pkix``'s DER writer.

``edge_min.security.certs`` (``edge-min certs init``, ``init --security``) makes its
development CA, central and device certificates here, so the gateway binary, which carries
pycryptodome but not ``cryptography``, can make them too. What is written is what strict
verifiers want (OpenSSL's X509_STRICT, ``cryptography``'s verifier; RFC 5280):

- version 3, a random positive 159-bit serial, ecdsa-with-SHA256 over EC P-256 keys;
- a CA: basicConstraints critical ``cA TRUE, pathLen 0``; keyUsage critical keyCertSign and
  cRLSign; subject and authority key identifiers;
- a leaf: basicConstraints critical (not a CA); keyUsage critical digitalSignature;
  extendedKeyUsage serverAuth and/or clientAuth; subjectAltName (DNS names, IP addresses);
  subject and authority key identifiers.

Key identifiers are the SHA-1 of the subjectPublicKey bits (RFC 5280 4.2.1.2, method 1), as
``cryptography`` computes them. Times before 2050 are UTCTime, later ones GeneralizedTime.
"""

from __future__ import annotations

import hashlib
import ipaddress
import secrets
from datetime import UTC, datetime
from typing import Any

from edge_min.security import pkix

OID_ORGANIZATION = "2.5.4.10"
OID_UNIT = "2.5.4.11"
OID_BASIC_CONSTRAINTS = "2.5.29.19"
OID_KEY_USAGE = "2.5.29.15"
OID_EXT_KEY_USAGE = "2.5.29.37"
OID_SAN = "2.5.29.17"
OID_SKI = "2.5.29.14"
OID_AKI = "2.5.29.35"
OID_SERVER_AUTH = "1.3.6.1.5.5.7.3.1"
OID_CLIENT_AUTH = "1.3.6.1.5.5.7.3.2"
BOOLEAN, OCTET_STRING = 0x01, 0x04
EXTENSIONS = 0xA3  # [3] EXPLICIT in a tbsCertificate
DNS_NAME, IP_ADDRESS = 0x82, 0x87  # GeneralName [2] and [7], IMPLICIT
KEY_ID = 0x80  # AuthorityKeyIdentifier's [0] keyIdentifier, IMPLICIT
# keyUsage bits (bit 0 is the first): digitalSignature 0, keyCertSign 5, cRLSign 6.
CA_USAGE = pkix.der(pkix.BIT_STRING, bytes((1, 0b00000110)))  # 7 bits used
LEAF_USAGE = pkix.der(pkix.BIT_STRING, bytes((7, 0b10000000)))  # 1 bit used


def new_key() -> Any:
    """A fresh EC P-256 key (pycryptodome's ``EccKey``)."""
    ECC, _, _ = pkix.pycryptodome("making TLS certificates")
    return ECC.generate(curve="P-256")


def load_key(pem_data: bytes) -> Any:
    """An EC private key from PEM (PKCS#8 or SEC1)."""
    ECC, _, _ = pkix.pycryptodome("reading a CA key")
    try:
        key = ECC.import_key(pem_data)
    except (ValueError, IndexError, TypeError) as exc:
        raise pkix.PkixError(f"not an EC private key: {exc}") from exc
    if not key.has_private():
        raise pkix.PkixError("the key file holds a public key only")
    return key


def key_pem(key: Any) -> bytes:
    """The private key as PKCS#8 PEM."""
    text: str = key.export_key(format="PEM", use_pkcs8=True)
    return (text.strip() + "\n").encode("ascii")


def cert_pem(der: bytes) -> bytes:
    """A certificate's DER as PEM."""
    return pkix.pem("CERTIFICATE", der).encode("ascii")


def name(*attributes: tuple[str, str]) -> bytes:
    """An X.501 Name, one attribute per RDN, each a UTF8String: ``(oid, value)`` pairs."""
    rdns = [
        pkix.der(
            pkix.SET,
            pkix.der_sequence(pkix.der_oid(oid), pkix.der(pkix.UTF8_STRING, value.encode())),
        )
        for oid, value in attributes
    ]
    return pkix.der_sequence(*rdns)


def certificate(
    *,
    issuer_key: Any,
    issuer_name: bytes,
    issuer_public: bytes,
    subject_name: bytes,
    subject_key: Any,
    not_before: datetime,
    not_after: datetime,
    ca: bool,
    server: bool = False,
    client: bool = False,
    names: list[str] | None = None,
) -> bytes:
    """A signed certificate (DER) for ``subject_key``'s public key, issued by ``issuer_key``.

    ``issuer_public`` is the issuer's subjectPublicKeyInfo (DER), for the authority key id;
    for a self-signed CA it is the subject's own."""
    _, DSS, SHA256 = pkix.pycryptodome("signing a certificate")
    public = bytes(subject_key.public_key().export_key(format="DER"))
    extensions = [
        _extension(OID_BASIC_CONSTRAINTS, True, _basic_constraints(ca)),
        _extension(OID_KEY_USAGE, True, CA_USAGE if ca else LEAF_USAGE),
    ]
    usages = [oid for oid, on in ((OID_SERVER_AUTH, server), (OID_CLIENT_AUTH, client)) if on]
    if usages:
        ext_usage = pkix.der_sequence(*(pkix.der_oid(o) for o in usages))
        extensions.append(_extension(OID_EXT_KEY_USAGE, False, ext_usage))
    if names:
        extensions.append(_extension(OID_SAN, False, _general_names(names)))
    extensions.append(_extension(OID_SKI, False, pkix.der(OCTET_STRING, key_id(public))))
    aki = pkix.der_sequence(pkix.der(KEY_ID, key_id(issuer_public)))
    extensions.append(_extension(OID_AKI, False, aki))
    algorithm = pkix.der_sequence(pkix.der_oid(pkix.OID_ECDSA_SHA256))
    tbs = pkix.der_sequence(
        pkix.der(pkix.CONTEXT_0, pkix.der_integer(2)),
        pkix.der_integer(secrets.randbits(159) | 1 << 158),
        algorithm,
        issuer_name,
        pkix.der_sequence(_time(not_before), _time(not_after)),
        subject_name,
        public,
        pkix.der(EXTENSIONS, pkix.der_sequence(*extensions)),
    )
    signature = DSS.new(issuer_key, "fips-186-3", encoding="der").sign(SHA256.new(tbs))
    return pkix.der_sequence(tbs, algorithm, pkix.der_bit_string(signature))


def key_id(public_key_info: bytes) -> bytes:
    """SHA-1 of the subjectPublicKey bits of a subjectPublicKeyInfo (RFC 5280 method 1)."""
    spki = pkix.single(public_key_info, pkix.SEQUENCE, "subjectPublicKeyInfo")
    parts = pkix.children(spki.content, "subjectPublicKeyInfo")
    if len(parts) != 2:
        raise pkix.PkixError("subjectPublicKeyInfo is not (algorithm, subjectPublicKey)")
    bits = pkix.bit_string(parts[1], "the subjectPublicKey")
    return hashlib.sha1(bits, usedforsecurity=False).digest()


def _extension(oid: str, critical: bool, value: bytes) -> bytes:
    flag = pkix.der(BOOLEAN, b"\xff") if critical else b""  # FALSE is the default: left out
    return pkix.der_sequence(pkix.der_oid(oid), flag, pkix.der(OCTET_STRING, value))


def _basic_constraints(ca: bool) -> bytes:
    if not ca:
        return pkix.der_sequence()  # cA FALSE is the default
    return pkix.der_sequence(pkix.der(BOOLEAN, b"\xff"), pkix.der_integer(0))


def _general_names(names: list[str]) -> bytes:
    out: list[bytes] = []
    seen: set[str] = set()
    for entry in names:
        if entry.lower() in seen:
            continue
        seen.add(entry.lower())
        try:
            address = ipaddress.ip_address(entry)
        except ValueError:
            out.append(pkix.der(DNS_NAME, entry.encode("ascii")))
        else:
            out.append(pkix.der(IP_ADDRESS, address.packed))
    return pkix.der_sequence(*out)


def _time(moment: datetime) -> bytes:
    moment = moment.astimezone(UTC).replace(microsecond=0)
    if moment.year < 2050:
        return pkix.der(pkix.UTC_TIME, moment.strftime("%y%m%d%H%M%SZ").encode("ascii"))
    return pkix.der(pkix.GENERALIZED_TIME, moment.strftime("%Y%m%d%H%M%SZ").encode("ascii"))
