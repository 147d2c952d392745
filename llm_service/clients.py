"""How every process reaches Kafka and S3: one place that turns the settings into client options.

Every Kafka client of the service (the worker's consumer, producer and admin client, the lag probe,
``llmctl submit/wait/lag/stats/audit``) is built with :func:`kafka_options`, so the security
settings (KAFKA_SECURITY_PROTOCOL, KAFKA_SASL_*, KAFKA_SSL_CAFILE) reach all of them or none. The
same holds for S3 and :func:`minio_client` (MINIO_SECURE, MINIO_CA_FILE).

The settings were validated by llm_service/config.py; nothing here checks them again.
"""

from __future__ import annotations

import socket
from typing import Any

import urllib3
from kafka.errors import (
    KafkaConnectionError,
    KafkaTimeoutError,
    SaslAuthenticationFailedError,
)
from minio import Minio

from llm_service.config import Settings

S3_CONNECT_TIMEOUT_S = 5.0
S3_READ_TIMEOUT_S = 30.0
PROBE_TIMEOUT_S = 2.0
SASL_HINT = "check KAFKA_SASL_MECHANISM, KAFKA_SASL_USERNAME and KAFKA_SASL_PASSWORD"
_LOGIN_FAILURES = (KafkaTimeoutError, KafkaConnectionError)


def kafka_options(settings: Settings) -> dict[str, Any]:
    """kafka-python keyword arguments: the bootstrap servers and the security settings."""
    options: dict[str, Any] = {
        "bootstrap_servers": settings.kafka_bootstrap_servers.split(","),
        "security_protocol": settings.kafka_security_protocol,
    }
    if settings.kafka_security_protocol.startswith("SASL_"):
        options.update(
            sasl_mechanism=settings.kafka_sasl_mechanism,
            sasl_plain_username=settings.kafka_sasl_username,
            sasl_plain_password=settings.kafka_sasl_password,
        )
    if settings.kafka_ssl_cafile:
        options["ssl_cafile"] = settings.kafka_ssl_cafile
    return options


def s3_http_client(
    settings: Settings,
    *,
    pool_size: int = 10,
    connect_timeout_s: float = S3_CONNECT_TIMEOUT_S,
    read_timeout_s: float = S3_READ_TIMEOUT_S,
) -> urllib3.PoolManager:
    """The HTTP pool under the minio client: bounded timeouts, a few retries, MINIO_CA_FILE when set."""
    tls: dict[str, Any] = {}
    if settings.minio_ca_file:
        tls = {"cert_reqs": "CERT_REQUIRED", "ca_certs": settings.minio_ca_file}
    return urllib3.PoolManager(
        timeout=urllib3.Timeout(connect=connect_timeout_s, read=read_timeout_s),
        maxsize=pool_size,
        retries=urllib3.Retry(total=2, backoff_factor=0.2, status_forcelist=(500, 502, 503, 504)),
        **tls,
    )


def minio_client(settings: Settings, *, pool_size: int = 10) -> Minio:
    """A minio client for MINIO_ENDPOINT over HTTP or, with MINIO_SECURE, HTTPS."""
    return Minio(
        settings.minio_endpoint,
        access_key=settings.minio_access_key or None,
        secret_key=settings.minio_secret_key or None,
        secure=settings.minio_secure,
        region=settings.minio_region or None,
        http_client=s3_http_client(settings, pool_size=pool_size),
    )


def kafka_failure_hint(settings: Settings, exc: BaseException) -> str:
    """A hint to add to a Kafka connection error under SASL, or "".

    A broker that rejects SASL credentials often just closes the connection (after
    connection.failed.authentication.delay.ms), so the client only sees "Unable to bootstrap". When
    a plain TCP connection to a bootstrap server succeeds, the network is fine and the login is the
    likely cause; say so, naming the settings to check (never their values).
    """
    if not settings.kafka_security_protocol.startswith("SASL_"):
        return ""
    if isinstance(exc, SaslAuthenticationFailedError):
        return f"SASL login rejected by the broker; {SASL_HINT}"
    if isinstance(exc, _LOGIN_FAILURES) and _any_reachable(settings.kafka_bootstrap_servers):
        return f"the broker is reachable but dropped the connection during the SASL login; {SASL_HINT}"
    return ""


def _any_reachable(servers: str) -> bool:
    for server in servers.split(","):
        host, _, port = server.strip().rpartition(":")
        try:
            with socket.create_connection((host.strip("[]"), int(port)), timeout=PROBE_TIMEOUT_S):
                return True
        except (OSError, ValueError):
            continue
    return False
