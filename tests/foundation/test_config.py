from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from pathlib import Path

import pytest

from llm_service.config import (
    SECRET_MASK,
    Reload,
    Settings,
    env_example,
    existing_file,
    load_settings,
    log_file_path,
    reload_scope,
)
from llm_service.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]


def test_defaults_match_the_contract() -> None:
    settings = load_settings({}, env_file=None)
    assert settings.kafka_bootstrap_servers == "localhost:9092"
    assert settings.kafka_tasks_topic == "tasks_llm"
    assert settings.kafka_status_topic == "tasks_llm_status"
    assert settings.kafka_dlq_topic == "tasks_llm_dlq"
    assert settings.kafka_group_id == "llm-worker-group"
    assert settings.minio_endpoint == "localhost:9000"
    assert settings.minio_secure is False
    assert (settings.minio_input_bucket, settings.minio_output_bucket) == ("llm-input", "llm-output")
    assert settings.gigachat_scope == "GIGACHAT_API_PERS"
    assert settings.gigachat_model == "GigaChat"
    assert settings.worker_processes == 2
    assert settings.worker_max_concurrent_tasks == 8
    assert (settings.log_format, settings.log_level) == ("text", "INFO")


def test_environment_overrides_the_env_file(tmp_path: Path) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text("WORKER_PROCESSES=5\nLOG_LEVEL=DEBUG\n# comment\nMINIO_SECURE='true'\n")
    settings = load_settings({"WORKER_PROCESSES": "3"}, env_file=env_file)
    assert settings.worker_processes == 3
    assert settings.log_level == "DEBUG"
    assert settings.minio_secure is True


@pytest.mark.parametrize(
    ("name", "value", "expected"),
    [
        ("WORKER_PROCESSES", "two", "WORKER_PROCESSES='two': must be a whole number"),
        ("WORKER_PROCESSES", "0", "WORKER_PROCESSES='0': must be greater than 0"),
        ("LOG_FORMAT", "xml", "LOG_FORMAT='xml': must be one of text, json"),
        ("MINIO_SECURE", "maybe", "MINIO_SECURE='maybe': must be true or false"),
        ("KAFKA_BOOTSTRAP_SERVERS", "localhost", "KAFKA_BOOTSTRAP_SERVERS='localhost': must be host:port"),
        ("GIGACHAT_API_URL", "ftp://x", "GIGACHAT_API_URL='ftp://x': must be an http(s):// URL"),
        (
            "MINIO_INPUT_BUCKET",
            "Bad_Bucket",
            "MINIO_INPUT_BUCKET='Bad_Bucket': is not a valid S3 bucket name",
        ),
        ("TASK_TIMEOUT_S", "inf", "TASK_TIMEOUT_S='inf': must be a finite number"),
        ("LIMIT_WINDOW_S", "nan", "LIMIT_WINDOW_S='nan': must be a finite number"),
        ("GIGACHAT_TIMEOUT_S", "1e400", "GIGACHAT_TIMEOUT_S='1e400': must be a finite number"),
        ("WORKER_PROCESSES", "9" * 5000, "WORKER_PROCESSES='" + "9" * 60 + "'... (5000 characters): must be"),
        (
            "LOG_FILE",
            "/nonexistent-dir/x.log",
            "LOG_FILE='/nonexistent-dir/x.log': folder '/nonexistent-dir'",
        ),
        ("LOG_FILE", "/tmp", "LOG_FILE='/tmp': is a directory"),
    ],
)
def test_a_bad_value_is_one_line_naming_the_variable(name: str, value: str, expected: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings({name: value}, env_file=None)
    assert str(caught.value).startswith(expected)
    assert "\n" not in str(caught.value)


def test_secrets_never_appear_in_errors_or_masked_output() -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings({"GIGACHAT_AUTH_KEY": "s3cr3t-key", "WORKER_PROCESSES": "x"}, env_file=None)
    assert "s3cr3t-key" not in str(caught.value)
    settings = load_settings(
        {"GIGACHAT_AUTH_KEY": "s3cr3t-key", "MINIO_SECRET_KEY": "hunter2"}, env_file=None
    )
    shown = settings.masked()
    assert shown["GIGACHAT_AUTH_KEY"] == SECRET_MASK
    assert shown["MINIO_SECRET_KEY"] == SECRET_MASK
    assert "s3cr3t-key" not in repr(shown) and "hunter2" not in repr(shown)


def test_an_env_file_that_is_not_utf8_is_one_config_error(tmp_path: Path) -> None:
    env_file = tmp_path / "bad.env"
    env_file.write_bytes(b"WORKER_PROCESSES=2\nGIGACHAT_MODEL=Giga\xffChat\n")
    with pytest.raises(ConfigError, match=r"bad.env is not UTF-8 \(byte 38\)"):
        load_settings({}, env_file=env_file)


def test_missing_explicit_env_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings({}, env_file=tmp_path / "nope.env")


def test_env_example_is_generated_from_the_declaration() -> None:
    committed = (REPO / ".env.example").read_text()
    assert committed == env_example(), "run: python -m llm_service.config example > .env.example"


def test_every_setting_declares_its_reload_scope_and_the_example_shows_it() -> None:
    example = env_example()
    for f in dataclasses.fields(Settings):
        assert isinstance(reload_scope(f), Reload), f.name
        assert f"{f.metadata['help']} [reload: {reload_scope(f).value}]\n{f.name.upper()}=" in example


def test_env_example_loads_as_a_valid_config(tmp_path: Path) -> None:
    settings = load_settings({}, env_file=REPO / ".env.example")
    assert settings.kafka_tasks_topic == "tasks_llm"


def test_as_environ_round_trips() -> None:
    settings = load_settings(
        {"MINIO_ALLOWED_INPUT_BUCKETS": "a-in,b-in", "WORKER_PROCESSES": "4"}, env_file=None
    )
    assert load_settings(settings.as_environ(), env_file=None) == settings


def test_config_check_command_reports_a_bad_value(tmp_path: Path) -> None:
    bad = tmp_path / "bad.env"
    bad.write_text("WORKER_MAX_CONCURRENT_TASKS=-1\nGIGACHAT_AUTH_KEY=topsecret\n")
    done = subprocess.run(
        [sys.executable, "-m", "llm_service.config", "check", str(bad)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 2
    assert done.stderr.strip() == "config error: WORKER_MAX_CONCURRENT_TASKS='-1': must be greater than 0"
    assert "topsecret" not in done.stdout + done.stderr


def test_a_path_that_cannot_even_be_checked_is_refused_not_raised(monkeypatch: pytest.MonkeyPatch) -> None:
    """EACCES on a folder the service may not search (root cannot provoke it, so stat is made to)."""

    def denied(self: Path, *, follow_symlinks: bool = True) -> os.stat_result:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(Path, "stat", denied)
    assert log_file_path("/srv/locked/app.log") == "cannot be checked: Permission denied"
    assert existing_file("/srv/locked/ca.pem") == "cannot be checked: Permission denied"
