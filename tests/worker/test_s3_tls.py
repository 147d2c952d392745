"""S3 over TLS with a private CA: a real S3 server (versitygw) serving HTTPS with a certificate signed by
a CA made for the test; the worker and llmctl reach it with MINIO_SECURE=true and MINIO_CA_FILE, and
without the CA file the certificate is refused.

Kafka and the GigaChat emulator come from the session stack; only the S3 server is private here.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from urllib3.exceptions import MaxRetryError, SSLError

from devstack.paths import cache_dir
from devstack.procs import free_port
from devstack.s3 import ACCESS_KEY, SECRET_KEY, S3Server
from devstack.stack import Stack
from llm_service.clients import minio_client
from llm_service.config import load_settings
from llmctl.api import TaskClient
from tests.external_tools import require_tool
from tests.worker.harness import Names, WorkerProcess, create_topics, private_s3, worker_env


def make_ca_and_server_cert(folder: Path) -> tuple[Path, Path, Path]:
    """A CA, and a server certificate for 127.0.0.1 signed by it: (ca.pem, server.pem, server.key)."""
    openssl = require_tool("openssl", hint="apt-get install openssl")

    def run(*args: str) -> None:
        subprocess.run([openssl, *args], cwd=folder, check=True, capture_output=True, timeout=60)

    run(
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "2",
        "-subj",
        "/CN=test-ca",
    )
    run(
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
        "-subj",
        "/CN=127.0.0.1",
    )
    (folder / "san.cnf").write_text("subjectAltName=IP:127.0.0.1\n")
    run(
        "x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
        "-out", "server.pem", "-days", "2", "-extfile", "san.cnf",
    )  # fmt: skip
    return folder / "ca.pem", folder / "server.pem", folder / "server.key"


@pytest.fixture(scope="module")
def tls_s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    folder = tmp_path_factory.mktemp("s3-tls")
    ca, cert, key = make_ca_and_server_cert(folder)
    server = S3Server(cache=cache_dir(), run_dir=folder, port=free_port(), tls=(cert, key), ca_file=ca)
    with private_s3(server):
        yield server


@pytest.fixture
def tls_env(
    stack: Stack, tls_s3: S3Server, service_env: dict[str, str], unique_name: str, tmp_path: Path
) -> dict[str, str]:
    names = Names.fresh(unique_name)
    create_topics(stack, names, partitions=2)
    return worker_env(
        service_env,
        names,
        tmp_path,
        MINIO_ENDPOINT=tls_s3.endpoint,
        MINIO_ACCESS_KEY=ACCESS_KEY,
        MINIO_SECRET_KEY=SECRET_KEY,
        MINIO_SECURE="true",
        MINIO_CA_FILE=str(tls_s3.ca_file),
    )


def test_without_the_ca_file_the_certificate_is_refused(tls_env: dict[str, str]) -> None:
    trusting = minio_client(load_settings(tls_env, env_file=None))
    assert trusting.bucket_exists("llm-output")
    untrusting = minio_client(load_settings({**tls_env, "MINIO_CA_FILE": ""}, env_file=None))
    with pytest.raises((SSLError, MaxRetryError)) as caught:
        untrusting.bucket_exists("llm-output")
    assert "CERTIFICATE_VERIFY_FAILED" in str(caught.value)


def test_a_task_with_input_and_result_over_tls(tls_env: dict[str, str], tmp_path: Path) -> None:
    worker = WorkerProcess(env=tls_env, log_path=tmp_path / "worker.log")
    try:
        worker.started()
        with TaskClient(settings=load_settings(tls_env, env_file=None)) as client:
            ref = client.upload(
                "Текст для пересказа.".encode(), key=f"{tls_env['MINIO_OUTPUT_PREFIX']}in.txt"
            )
            task_id = client.submit(prompt="Перескажи", input=ref)
            final = client.wait(task_id, timeout=120)
            assert final.ok, final.event
            body = client.result(final)
            assert body is not None and body["task_id"] == task_id and body["content"]
    finally:
        assert worker.stop() == 0
