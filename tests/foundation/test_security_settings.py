"""Kafka SASL/SSL and S3 TLS settings: validation, masking, and the client options built from them.

The SASL settings are proven against a real broker in tests/worker/test_sasl.py.
"""

from __future__ import annotations

import socket
from pathlib import Path

import certifi
import pytest
from kafka.errors import KafkaTimeoutError, SaslAuthenticationFailedError

from llm_service.clients import SASL_HINT, kafka_failure_hint, kafka_options, minio_client, s3_http_client
from llm_service.config import SECRET_MASK, load_settings
from llm_service.errors import ConfigError

SASL = {
    "KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
    "KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
    "KAFKA_SASL_USERNAME": "svc",
    "KAFKA_SASL_PASSWORD": "s3cret-pw",
}


def test_the_default_is_plaintext_with_no_security_options() -> None:
    settings = load_settings({}, env_file=None)
    assert settings.kafka_security_protocol == "PLAINTEXT"
    assert kafka_options(settings) == {
        "bootstrap_servers": ["localhost:9092"],
        "security_protocol": "PLAINTEXT",
    }


def test_sasl_settings_become_client_options_and_the_password_is_masked(tmp_path: Path) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_text("-----BEGIN CERTIFICATE-----\n")
    settings = load_settings({**SASL, "KAFKA_SECURITY_PROTOCOL": "SASL_SSL", "KAFKA_SSL_CAFILE": str(ca)})
    assert kafka_options(settings) == {
        "bootstrap_servers": ["localhost:9092"],
        "security_protocol": "SASL_SSL",
        "sasl_mechanism": "SCRAM-SHA-512",
        "sasl_plain_username": "svc",
        "sasl_plain_password": "s3cret-pw",
        "ssl_cafile": str(ca),
    }
    shown = settings.masked()
    assert shown["KAFKA_SASL_PASSWORD"] == SECRET_MASK and shown["KAFKA_SASL_USERNAME"] == "svc"
    assert "s3cret-pw" not in repr(shown)


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"KAFKA_SECURITY_PROTOCOL": "TLS"}, "KAFKA_SECURITY_PROTOCOL='TLS': must be one of PLAINTEXT, SSL,"),
        (
            {**SASL, "KAFKA_SASL_MECHANISM": "GSSAPI"},
            "KAFKA_SASL_MECHANISM='GSSAPI': must be one of PLAIN, SCRAM-SHA-256, SCRAM-SHA-512",
        ),
        (
            {**SASL, "KAFKA_SASL_MECHANISM": ""},
            "KAFKA_SASL_MECHANISM must be set when KAFKA_SECURITY_PROTOCOL=SASL_PLAINTEXT",
        ),
        (
            {**SASL, "KAFKA_SASL_USERNAME": ""},
            "KAFKA_SASL_USERNAME must be set when KAFKA_SECURITY_PROTOCOL=SASL_PLAINTEXT",
        ),
        (
            {**SASL, "KAFKA_SASL_PASSWORD": ""},
            "KAFKA_SASL_PASSWORD must be set when KAFKA_SECURITY_PROTOCOL=SASL_PLAINTEXT",
        ),
        (
            {"KAFKA_SSL_CAFILE": "/nonexistent/ca.pem"},
            "KAFKA_SSL_CAFILE='/nonexistent/ca.pem': file does not exist",
        ),
        (
            {"MINIO_CA_FILE": "/nonexistent/ca.pem"},
            "MINIO_CA_FILE='/nonexistent/ca.pem': file does not exist",
        ),
    ],
)
def test_a_bad_security_setting_is_one_line_naming_the_variable(env: dict[str, str], expected: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(env, env_file=None)
    assert str(caught.value).startswith(expected)
    assert "s3cret-pw" not in str(caught.value)


def test_a_password_in_a_bad_value_is_never_shown() -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings({**SASL, "KAFKA_SASL_MECHANISM": "nope", "KAFKA_SASL_PASSWORD": "x" * 5}, env_file=None)
    assert "xxxxx" not in str(caught.value)


def test_s3_over_tls_uses_the_ca_file(tmp_path: Path) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_bytes(Path(certifi.where()).read_bytes())
    settings = load_settings({"MINIO_SECURE": "true", "MINIO_CA_FILE": str(ca)}, env_file=None)
    pool = s3_http_client(settings)
    assert pool.connection_pool_kw["ca_certs"] == str(ca)
    assert pool.connection_pool_kw["cert_reqs"] == "CERT_REQUIRED"
    assert minio_client(settings)._base_url.is_https


def test_the_sasl_hint_names_the_settings_only_when_the_broker_answers_tcp() -> None:
    with socket.socket() as listening:
        listening.bind(("127.0.0.1", 0))
        listening.listen()
        port = listening.getsockname()[1]
        sasl = load_settings({**SASL, "KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{port}"}, env_file=None)
        assert SASL_HINT in kafka_failure_hint(sasl, KafkaTimeoutError("Unable to bootstrap"))
        plain = load_settings({"KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{port}"}, env_file=None)
        assert kafka_failure_hint(plain, KafkaTimeoutError("Unable to bootstrap")) == ""
    assert SASL_HINT in kafka_failure_hint(sasl, SaslAuthenticationFailedError("bad"))
    assert kafka_failure_hint(sasl, KafkaTimeoutError("Unable to bootstrap")) == ""  # nobody listens now
    assert "s3cret-pw" not in kafka_failure_hint(sasl, SaslAuthenticationFailedError("bad"))
