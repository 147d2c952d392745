"""deploy/docker-compose.yml, validated by ``podman-compose config`` (dev extra) and read back.

No registry is reachable from the test machines, so the Kafka and MinIO images cannot be pulled and the
file is not brought up here; the image of the llm-service service is tested by test_image.py.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from llm_service.config import Settings
from tests.external_tools import require_tool

REPO = Path(__file__).resolve().parents[2]
COMPOSE = REPO / "deploy" / "docker-compose.yml"
LONG_RUNNING = ("llm-service", "kafka", "minio")


def _config(tmp_path: Path, env_text: str) -> subprocess.CompletedProcess[str]:
    """``podman-compose config`` on a copy laid out like the repository: deploy/ next to .env."""
    compose = require_tool("podman-compose", hint="pip install podman-compose, part of `make install`")
    (tmp_path / "deploy").mkdir()
    shutil.copy2(COMPOSE, tmp_path / "deploy" / COMPOSE.name)
    env_file = tmp_path / ".env"
    env_file.write_text(env_text)
    return subprocess.run(
        [compose, "--env-file", str(env_file), "-f", str(tmp_path / "deploy" / COMPOSE.name), "config"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        check=False,
    )


def _example_env(**values: str) -> str:
    text = (REPO / ".env.example").read_text()
    for name, value in values.items():
        text = re.sub(rf"^{name}=.*$", f"{name}={value}", text, flags=re.MULTILINE)
    return text


@pytest.fixture
def services(tmp_path: Path) -> dict[str, Any]:
    done = _config(tmp_path, _example_env(MINIO_ACCESS_KEY="operator", MINIO_SECRET_KEY="s3cret-value"))
    assert done.returncode == 0, done.stderr[-3000:]
    parsed: dict[str, Any] = yaml.safe_load(done.stdout)
    return dict(parsed["services"])


def _seconds(duration: str) -> float:
    match = re.fullmatch(r"(?:(\d+)m)?(?:(\d+)s)?", duration)
    assert match and duration, f"unexpected duration {duration!r}"
    return int(match[1] or 0) * 60 + int(match[2] or 0)


def test_the_service_is_named_as_the_runbook_uses_it(services: dict[str, Any]) -> None:
    service = services["llm-service"]
    assert service["container_name"] == "llm-service"
    assert service["env_file"] == ["../.env"]
    assert service["environment"]["KAFKA_BOOTSTRAP_SERVERS"] == "kafka:9092"


def test_stop_grace_period_outlasts_the_drain_deadline(services: dict[str, Any]) -> None:
    defaults = Settings()
    deadline = defaults.worker_drain_timeout + defaults.supervisor_stop_margin_s
    assert _seconds(services["llm-service"]["stop_grace_period"]) > deadline


def test_long_running_services_have_health_checks(services: dict[str, Any]) -> None:
    for name in LONG_RUNNING:
        assert services[name]["healthcheck"]["test"], f"{name} has no health check"


def test_kafka_runs_in_kraft_mode(services: dict[str, Any]) -> None:
    kafka = services["kafka"]["environment"]
    assert set(kafka["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}
    assert "zookeeper" not in str(services).lower()


def test_missing_s3_credentials_stop_the_config_with_a_clear_line(tmp_path: Path) -> None:
    done = _config(tmp_path, _example_env(MINIO_ACCESS_KEY="", MINIO_SECRET_KEY=""))
    assert done.returncode != 0
    assert "set MINIO_ACCESS_KEY in .env" in done.stderr
