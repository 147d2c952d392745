"""The service against a broker that requires SASL: a private broker with a SASL_PLAINTEXT listener
(devstack's KafkaBroker with PLAIN users), the real worker, llmctl, the lag probe and the supervisor's
instance-prefix check all connecting through it with the KAFKA_SECURITY_PROTOCOL / KAFKA_SASL_*
settings; a wrong password fails clearly.

S3 and the GigaChat emulator come from the session stack; only Kafka is private to this module.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from devstack.broker import KafkaBroker
from devstack.paths import cache_dir
from devstack.procs import free_port
from llm_service.clients import SASL_HINT
from llm_service.config import load_settings
from llmctl.api import TaskClient
from supervisor.instance_claim import check_prefix
from tests.waiting import wait_until
from tests.worker.harness import Names, WorkerProcess, run_llmctl, worker_env

USER, PASSWORD = "llm-svc", "sasl-test-password"


@pytest.fixture(scope="module")
def sasl_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KafkaBroker]:
    broker = KafkaBroker(
        cache=cache_dir(),
        run_dir=tmp_path_factory.mktemp("sasl-kafka"),
        port=free_port(),
        controller_port=free_port(),
        sasl_port=free_port(),
        sasl_users={USER: PASSWORD, "admin": "admin-password"},
    )
    try:
        broker.start()
        yield broker
    finally:
        broker.stop()


@pytest.fixture
def sasl_env(
    sasl_broker: KafkaBroker, service_env: dict[str, str], unique_name: str, tmp_path: Path
) -> dict[str, str]:
    names = Names.fresh(unique_name)
    sasl_broker.create_topics({names.tasks: 2, names.status: 2, names.dlq: 1})
    return worker_env(
        service_env,
        names,
        tmp_path,
        KAFKA_BOOTSTRAP_SERVERS=sasl_broker.sasl_bootstrap,
        KAFKA_SECURITY_PROTOCOL="SASL_PLAINTEXT",
        KAFKA_SASL_MECHANISM="PLAIN",
        KAFKA_SASL_USERNAME=USER,
        KAFKA_SASL_PASSWORD=PASSWORD,
    )


def test_worker_llmctl_and_lag_probe_work_through_sasl(sasl_env: dict[str, str], tmp_path: Path) -> None:
    worker = WorkerProcess(env=sasl_env, log_path=tmp_path / "worker.log")
    try:
        worker.started()
        settings = load_settings(sasl_env, env_file=None)
        with TaskClient(settings=settings) as client:
            task_id = client.submit(prompt="Скажи привет")
            final = client.wait(task_id, timeout=120)
            assert final.ok, final.event
            body = client.result(final)
            assert body is not None and body["content"]
        stats = run_llmctl(sasl_env, "stats", "--since", "1h", "--json")
        assert stats.returncode == 0, stats.stderr
        figures = json.loads(stats.stdout)
        assert figures["tasks"] == 1 and figures["by_status"]["COMPLETED"] == 1
        audit = run_llmctl(sasl_env, "audit", "--since", "1h")
        assert audit.returncode == 0, audit.stdout + audit.stderr
        wait_until(lambda: _lag(sasl_env)["lag_messages"] == 0, timeout=60, what="group committed the task")
        probe = subprocess.run(
            [sys.executable, "-m", "supervisor.lag_probe", "--timeout", "10"],
            env=sasl_env,
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        assert json.loads(probe.stdout)["lag_messages"] == 0, probe.stdout
    finally:
        assert worker.stop() == 0


def test_the_instance_prefix_check_sees_a_live_holder_through_sasl(
    sasl_env: dict[str, str], tmp_path: Path
) -> None:
    """The check a supervisor makes before it starts (docs/scaling.md) asks the group over SASL too:
    without the security settings it could not connect and would let a duplicate prefix start."""
    env = {**sasl_env, "WORKER_INSTANCE_PREFIX": "sasl-host"}
    settings = load_settings(env, env_file=None)
    worker = WorkerProcess(env=env, log_path=tmp_path / "worker.log", slot=0)
    try:
        worker.started()
        claim = check_prefix(settings, "sasl-host")
        assert claim.skipped == "" and claim.holders == ("llm-worker-sasl-host-0",), claim
        free = check_prefix(settings, "another-host")
        assert free.skipped == "" and not free.refused, free
    finally:
        assert worker.stop() == 0


def _lag(env: dict[str, str]) -> dict[str, object]:
    lag = run_llmctl(env, "lag", "--json")
    assert lag.returncode == 0, lag.stderr
    result: dict[str, object] = json.loads(lag.stdout)
    return result


def test_a_wrong_password_fails_with_a_clear_error(sasl_env: dict[str, str], tmp_path: Path) -> None:
    env = {**sasl_env, "KAFKA_SASL_PASSWORD": "wrong-password", "WORKER_BOOTSTRAP_ATTEMPTS": "1"}
    worker = WorkerProcess(env=env, log_path=tmp_path / "worker.log")
    try:
        wait_until(lambda: worker.proc.poll() is not None, timeout=120, what="worker gives up")
    finally:
        worker.stop()
    log = worker.log_text()
    assert "wrong-password" not in log
    assert "Bootstrap failed" in log or "Failed to initialize interface" in log, log[-2000:]
    assert SASL_HINT in log, log[-2000:]
    lag = run_llmctl(env, "lag")
    assert lag.returncode == 2 and SASL_HINT in lag.stderr, lag.stderr
    assert "wrong-password" not in lag.stderr
