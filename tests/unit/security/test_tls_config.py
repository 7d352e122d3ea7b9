"""TLS contexts from arguments and from edge-security.yaml, and the plain-HTTP policy."""

from __future__ import annotations

import dataclasses
import logging
import ssl
from pathlib import Path

import pytest

from edge_min.config import load_config
from edge_min.config.security import CommunicationSecurity, EncryptionConfig, SecurityConfig
from edge_min.errors import ConfigError
from edge_min.security.certs import init_certs
from edge_min.security.tls import (
    check_plain_http,
    client_context,
    context_for_url,
    context_from_config,
    is_loopback_host,
    server_context,
)

COMM = "encryption.communication"


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return init_certs(tmp_path_factory.mktemp("tls") / "certs", device_id="gw-1")


def _config(certs: dict[str, Path], **changes: object) -> SecurityConfig:
    comm = CommunicationSecurity(
        enabled=True,
        protocol="TLS 1.3",
        certificate_path=str(certs["device_cert"]),
        key_path=str(certs["device_key"]),
        ca_path=str(certs["ca_cert"]),
    )
    comm = dataclasses.replace(comm, **changes)  # type: ignore[arg-type]
    return SecurityConfig(encryption=EncryptionConfig(communication=comm))


def test_server_context_is_mutual_tls13(certs: dict[str, Path]) -> None:
    ctx = server_context(certs["central_cert"], certs["central_key"], certs["ca_cert"])
    assert ctx.minimum_version == ssl.TLSVersion.TLSv1_3
    assert ctx.verify_mode == ssl.CERT_REQUIRED
    lax = server_context(
        certs["central_cert"], certs["central_key"], certs["ca_cert"], require_client_cert=False
    )
    assert lax.verify_mode == ssl.CERT_OPTIONAL
    assert (
        server_context(
            certs["central_cert"], certs["central_key"], None, require_client_cert=False
        ).verify_mode
        == ssl.CERT_NONE
    )
    with pytest.raises(ConfigError, match="needs the CA"):
        server_context(certs["central_cert"], certs["central_key"], None)


def test_client_context_checks_hostname_and_server_cert(certs: dict[str, Path]) -> None:
    ctx = client_context(certs["device_cert"], certs["device_key"], certs["ca_cert"])
    assert ctx.check_hostname is True
    assert ctx.verify_mode == ssl.CERT_REQUIRED
    assert ctx.minimum_version == ssl.TLSVersion.TLSv1_3
    # only the development CA is trusted, not the system store
    assert [c["subject"] for c in ctx.get_ca_certs()] == [
        (
            (("commonName", "edge-min development CA"),),
            (("organizationName", "edge-min development"),),
        )
    ]
    tls12 = client_context(None, None, certs["ca_cert"], protocol="TLS 1.2")
    assert tls12.minimum_version == ssl.TLSVersion.TLSv1_2
    with pytest.raises(ConfigError, match="both cert and key"):
        client_context(certs["device_cert"], None, certs["ca_cert"])
    with pytest.raises(ConfigError, match=r"unsupported TLS protocol 'TLS 1\.1'"):
        client_context(None, None, certs["ca_cert"], protocol="TLS 1.1")


def test_from_config_client_and_server(certs: dict[str, Path]) -> None:
    client = context_from_config(_config(certs))
    assert client is not None
    assert client.check_hostname and client.verify_mode == ssl.CERT_REQUIRED
    assert client.minimum_version == ssl.TLSVersion.TLSv1_3
    server = context_from_config(_config(certs), role="server")
    assert server is not None
    assert server.verify_mode == ssl.CERT_REQUIRED
    assert server.minimum_version == ssl.TLSVersion.TLSv1_3
    # the CommunicationSecurity section alone is accepted too
    comm = _config(certs, protocol="TLS 1.2").encryption.communication
    tls12 = context_from_config(comm, "server")
    assert tls12 is not None and tls12.minimum_version == ssl.TLSVersion.TLSv1_2
    assert context_from_config(_config(certs, enabled=False)) is None
    with pytest.raises(ConfigError, match="role must be"):
        context_from_config(_config(certs), role="peer")


@pytest.mark.parametrize("key", ["certificate_path", "key_path", "ca_path"])
def test_from_config_missing_file_names_file_and_key(
    certs: dict[str, Path], tmp_path: Path, key: str
) -> None:
    missing = tmp_path / "nowhere" / "x.pem"
    with pytest.raises(ConfigError) as info:
        context_from_config(_config(certs, **{key: str(missing)}), file="/etc/edge-security.yaml")
    err = info.value
    assert err.path == f"{COMM}.{key}"
    assert err.file == "/etc/edge-security.yaml"
    assert str(missing) in str(err)
    assert "does not exist" in str(err) and "edge-min init --security" in str(err)


def test_from_config_unset_path_names_the_key(certs: dict[str, Path]) -> None:
    with pytest.raises(ConfigError) as info:
        context_from_config(_config(certs, ca_path=None))
    assert info.value.path == f"{COMM}.ca_path"
    assert "edge-security.yaml" in str(info.value) and "enabled: false" in str(info.value)


def test_from_config_garbage_and_mismatched_files(certs: dict[str, Path], tmp_path: Path) -> None:
    junk = tmp_path / "junk.crt"
    junk.write_text("not a certificate\n")
    with pytest.raises(ConfigError, match="not a PEM certificate") as info:
        context_from_config(_config(certs, ca_path=str(junk)))
    assert info.value.path == f"{COMM}.ca_path"
    with pytest.raises(ConfigError, match="does not belong to the certificate") as info:
        context_from_config(_config(certs, key_path=str(certs["central_key"])))
    assert info.value.path == f"{COMM}.key_path"
    with pytest.raises(ConfigError, match="cannot load the certificate") as info:
        context_from_config(_config(certs, certificate_path=str(junk)))
    assert info.value.path == f"{COMM}.certificate_path"


def test_from_a_real_config_file_with_relative_paths(
    certs: dict[str, Path], tmp_path: Path
) -> None:
    (tmp_path / "certs").symlink_to(certs["ca_cert"].parent)
    (tmp_path / "edge-security.yaml").write_text(
        "encryption:\n"
        "  communication:\n"
        "    enabled: true\n"
        "    protocol: TLS 1.3\n"
        "    certificate_path: certs/device.crt\n"
        "    key_path: certs/device.key\n"
        "    ca_path: certs/missing-ca.crt\n"
    )
    cfg = load_config(tmp_path)
    with pytest.raises(ConfigError) as info:
        context_from_config(cfg.security_config)
    assert info.value.path == f"{COMM}.ca_path"
    assert str(tmp_path / "certs" / "missing-ca.crt") in str(info.value)
    text = (tmp_path / "edge-security.yaml").read_text().replace("missing-ca.crt", "ca.crt")
    (tmp_path / "edge-security.yaml").write_text(text)
    ctx = context_from_config(load_config(tmp_path).security_config)
    assert ctx is not None and ctx.minimum_version == ssl.TLSVersion.TLSv1_3


@pytest.mark.parametrize(
    "host",
    ["localhost", "LOCALHOST", "127.0.0.1", "127.8.9.10", "::1", "[::1]", "::ffff:127.0.0.1"],
)
def test_loopback_hosts(host: str) -> None:
    assert is_loopback_host(host)


@pytest.mark.parametrize(
    "host",
    ["", None, "10.0.0.1", "128.0.0.1", "::2", "localhost.evil.com", "127.0.0.1.nip.io", "0.0.0.0"],
)
def test_not_loopback_hosts(host: str | None) -> None:
    assert not is_loopback_host(host)


@pytest.mark.parametrize(
    "url",
    [
        "https://central.example.com/api",
        "http://127.0.0.1:8080/api/sync",
        "http://127.3.2.1/",
        "http://localhost:9000",
        "http://[::1]:8000/x",
    ],
)
def test_plain_http_allowed_to_loopback_silently(
    url: str, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.DEBUG):
        check_plain_http(url, False, logging.getLogger("t"))
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


@pytest.mark.parametrize(
    "url", ["http://central.example.com/api", "http://10.0.0.7:8080", "http://localhost.evil.com/"]
)
def test_plain_http_elsewhere_is_refused_with_the_fix(url: str) -> None:
    with pytest.raises(ConfigError) as info:
        check_plain_http(url, False, logging.getLogger("t"), key="sync.central_url")
    text = str(info.value)
    assert url in text and "https://" in text and "--allow-insecure-http" in text
    assert info.value.path == "sync.central_url" and info.value.value == url


def test_plain_http_with_the_flag_logs_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="t"):
        check_plain_http("http://10.0.0.7:8080/api", True, logging.getLogger("t"))
    [record] = caplog.records
    assert record.levelno == logging.WARNING and record.name == "t"
    assert "http://10.0.0.7:8080/api" in record.getMessage()


@pytest.mark.parametrize("url", ["ftp://10.0.0.1/x", "central.example.com", "http://"])
def test_not_an_http_url(url: str) -> None:
    with pytest.raises(ConfigError, match="expected an https://"):
        check_plain_http(url, True)


def test_context_for_url(certs: dict[str, Path]) -> None:
    assert context_for_url("http://127.0.0.1:9/", _config(certs)) is None
    with pytest.raises(ConfigError, match="refusing plain http"):
        context_for_url("http://10.0.0.1/", _config(certs))
    ctx = context_for_url("https://central.example/", _config(certs))
    assert (
        ctx is not None and ctx.get_ca_certs()[0]["subject"][0][0][1] == "edge-min development CA"
    )
    # https:// without configured certificates: the system trust store, still TLS 1.3
    plain = context_for_url("https://central.example/", _config(certs, enabled=False))
    assert plain is not None and plain.minimum_version == ssl.TLSVersion.TLSv1_3
    assert plain.check_hostname
