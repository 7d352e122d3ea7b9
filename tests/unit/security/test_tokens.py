"""Bearer tokens: format, signature, expiry, revocation on a real SQLite store, the key file."""

from __future__ import annotations

import base64
import json
import os
import stat
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge_min.errors import EdgeError
from edge_min.security.tokens import (
    KEY_BYTES,
    Claims,
    RevocationList,
    TokenError,
    TokenExpired,
    TokenInvalid,
    TokenRevoked,
    UnknownRole,
    decode,
    issue,
    key_path,
    load_key,
    revoke_token_or_id,
    verify,
)
from edge_min.store import open_store

KEY = bytes(range(32))
OTHER_KEY = bytes(range(1, 33))
NOW = 1_800_000_000.25


def never(_: str) -> bool:
    return False


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def payload_of(token: str) -> dict[str, object]:
    part = token.split(".")[1]
    return dict(json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))))


def test_issue_then_verify_returns_the_claims() -> None:
    token = issue("operator", 3600, key=KEY, now=NOW, subject="alice")
    prefix, _, signature = token.split(".")
    assert prefix == "em1"
    assert sorted(payload_of(token)) == ["exp", "iat", "jti", "role", "sub"]
    claims = verify(token, key=KEY, now=NOW + 10, revoked=never)
    assert isinstance(claims, Claims)
    assert (claims.role, claims.sub, claims.iat, claims.exp) == (
        "operator",
        "alice",
        int(NOW),
        int(NOW) + 3601,  # ceil(now + ttl): never shorter than asked
    )
    assert len(claims.jti) == 24
    assert len(base64.urlsafe_b64decode(signature + "=")) == 32  # HMAC-SHA256


def test_each_token_gets_its_own_id() -> None:
    ids = {decode(issue("monitor", 60, key=KEY, now=NOW), key=KEY).jti for _ in range(50)}
    assert len(ids) == 50


def test_expiry_is_exact() -> None:
    token = issue("admin", 100, key=KEY, now=1000.0)
    assert verify(token, key=KEY, now=1099.999, revoked=never).role == "admin"
    with pytest.raises(TokenExpired, match=r"expired at .* 1 s ago; issue a new one"):
        verify(token, key=KEY, now=1101.0, revoked=never)
    with pytest.raises(TokenExpired):
        verify(token, key=KEY, now=1100.0, revoked=never)


def test_expired_is_reported_before_revoked() -> None:
    token = issue("admin", 10, key=KEY, now=NOW)
    with pytest.raises(TokenExpired):
        verify(token, key=KEY, now=NOW + 60, revoked=lambda _: True)


def test_revoked_token_is_refused_with_its_id() -> None:
    token = issue("monitor", 60, key=KEY, now=NOW)
    jti = decode(token, key=KEY).jti
    with pytest.raises(TokenRevoked, match=jti):
        verify(token, key=KEY, now=NOW, revoked=lambda j: j == jti)
    other = issue("monitor", 60, key=KEY, now=NOW)
    assert verify(other, key=KEY, now=NOW, revoked=lambda j: j == jti).role == "monitor"


def test_tampered_payload_is_invalid_even_with_a_plausible_role() -> None:
    token = issue("monitor", 60, key=KEY, now=NOW)
    prefix, _, signature = token.split(".")
    claims = payload_of(token)
    claims["role"] = "admin"
    forged = f"{prefix}.{b64(json.dumps(claims, separators=(',', ':')).encode())}.{signature}"
    with pytest.raises(TokenInvalid, match="signature does not match"):
        verify(forged, key=KEY, now=NOW, revoked=never)


def test_token_from_another_key_is_invalid() -> None:
    token = issue("admin", 60, key=OTHER_KEY, now=NOW)
    with pytest.raises(TokenInvalid, match="another device's key"):
        verify(token, key=KEY, now=NOW, revoked=never)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "em1",
        "em1.abc",
        "em2.abc.def",
        "Bearer em1.abc.def",
        "em1.a+b.def",
        "em1.abc.de=f",
        "em1.abc.def.ghi",
        "x" * 5000,
    ],
)
def test_malformed_tokens_are_invalid(text: str) -> None:
    with pytest.raises(TokenInvalid):
        verify(text, key=KEY, now=NOW, revoked=never)


@pytest.mark.parametrize(
    "payload",
    [
        b"not json",
        b"[1, 2]",
        b'{"role": "admin", "iat": 1, "exp": 9999999999}',
        b'{"jti": "a", "role": "admin", "iat": 1, "exp": "never"}',
        b'{"jti": "a", "role": "admin", "iat": true, "exp": 9999999999}',
        b'{"jti": "a", "role": "admin", "sub": 5, "iat": 1, "exp": 9999999999}',
    ],
)
def test_correctly_signed_but_malformed_payloads_are_invalid(payload: bytes) -> None:
    import hashlib
    import hmac

    signing_input = f"em1.{b64(payload)}"
    signature = b64(hmac.new(KEY, signing_input.encode(), hashlib.sha256).digest())
    with pytest.raises(TokenInvalid, match="payload"):
        verify(f"{signing_input}.{signature}", key=KEY, now=NOW, revoked=never)


ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_."
_ONE_TOKEN = issue("operator", 600, key=KEY, now=NOW)


@settings(max_examples=300, deadline=None)
@given(data=st.data())
def test_any_one_character_change_is_refused(data: st.DataObject) -> None:
    # One token for every example: each issue() has a fresh random jti, and draws that
    # depend on it made Hypothesis' replays differ (FlakyStrategyDefinition).
    token = _ONE_TOKEN
    i = data.draw(st.integers(0, len(token) - 1))
    c = data.draw(st.sampled_from(ALPHABET).filter(lambda ch: ch != token[i]))
    mutated = token[:i] + c + token[i + 1 :]
    with pytest.raises(TokenInvalid):
        verify(mutated, key=KEY, now=NOW, revoked=never)


def test_issue_refuses_unknown_roles_and_bad_lifetimes() -> None:
    with pytest.raises(UnknownRole, match=r"'root' is not defined .* admin, operator, monitor"):
        issue("root", 60, key=KEY, now=NOW)
    assert decode(issue("auditor", 60, key=KEY, now=NOW, roles=["auditor"]), key=KEY).role == (
        "auditor"
    )
    with pytest.raises(UnknownRole):
        issue("admin", 60, key=KEY, now=NOW, roles=["auditor"])
    for ttl in (0, -5, float("nan"), float("inf")):
        with pytest.raises(TokenError, match="positive number of seconds"):
            issue("admin", ttl, key=KEY, now=NOW)
    with pytest.raises(TokenError, match="at least 32 bytes"):
        issue("admin", 60, key=b"short", now=NOW)


def test_errors_are_edge_errors_with_stable_codes() -> None:
    codes = {cls: cls.code for cls in (TokenInvalid, TokenExpired, TokenRevoked, UnknownRole)}
    assert codes == {
        TokenInvalid: "token_invalid",
        TokenExpired: "token_expired",
        TokenRevoked: "token_revoked",
        UnknownRole: "unknown_role",
    }
    assert all(issubclass(cls, TokenError) and issubclass(cls, EdgeError) for cls in codes)


# -- the key file ---------------------------------------------------------------------


def test_key_is_made_once_private_and_reused(tmp_path: Path) -> None:
    path = key_path(tmp_path / "data")
    assert path == tmp_path / "data" / "keys" / "api-token.key"
    key = load_key(path)
    assert len(key) == KEY_BYTES
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert load_key(path) == key
    assert [p.name for p in path.parent.iterdir()] == ["api-token.key"]  # no temp files left
    token = issue("admin", 60, key=key, now=NOW)
    assert verify(token, key=load_key(path), now=NOW, revoked=never).role == "admin"


def test_missing_key_without_create_and_damaged_key_are_errors(tmp_path: Path) -> None:
    path = key_path(tmp_path)
    with pytest.raises(TokenError, match="no API token key at"):
        load_key(path, create=False)
    assert not path.exists()
    path.parent.mkdir(parents=True)
    path.write_bytes(b"x" * 7)
    os.chmod(path, 0o600)
    with pytest.raises(TokenError, match="holds 7 bytes, expected 32; delete it"):
        load_key(path)


# -- revocation in the meta table -------------------------------------------------------


def test_revocation_survives_reopening_the_database(tmp_path: Path) -> None:
    db = tmp_path / "edge.db"
    token = issue("operator", 3600, key=KEY, now=NOW)
    store = open_store(str(db))
    try:
        jti, exp = revoke_token_or_id(token, key=KEY, revocations=RevocationList(store.meta))
        assert store.meta.get(f"token.revoked.{jti}") == str(exp)
    finally:
        store.close()
    store = open_store(str(db))
    try:
        revoked = RevocationList(store.meta)
        with pytest.raises(TokenRevoked):
            verify(token, key=KEY, now=NOW, revoked=revoked)
        fresh = issue("operator", 3600, key=KEY, now=NOW)
        assert verify(fresh, key=KEY, now=NOW, revoked=revoked).role == "operator"
    finally:
        store.close()


def test_revoke_by_bare_id_and_refuse_garbage(tmp_path: Path) -> None:
    store = open_store(str(tmp_path / "edge.db"))
    try:
        revocations = RevocationList(store.meta)
        token = issue("monitor", 60, key=KEY, now=NOW)
        jti = decode(token, key=KEY).jti
        assert revoke_token_or_id(f" {jti}\n", key=KEY, revocations=revocations) == (jti, None)
        assert revocations.is_revoked(jti)
        with pytest.raises(TokenRevoked):
            verify(token, key=KEY, now=NOW, revoked=revocations)
        with pytest.raises(TokenInvalid, match="not a token id"):
            revoke_token_or_id("../etc", key=KEY, revocations=revocations)
        forged = issue("monitor", 60, key=OTHER_KEY, now=NOW)
        with pytest.raises(TokenInvalid, match="signature"):
            revoke_token_or_id(forged, key=KEY, revocations=revocations)
    finally:
        store.close()
