"""Every setting of llm-service, declared once.

Each field of :class:`Settings` is one environment variable (its name upper-cased) with its type,
default, check and help line. ``.env.example`` is generated from this declaration
(``python -m llm_service.config example``) and a test keeps the two equal.

Who calls it: the supervisor at start-up and on SIGHUP, a lone ``llm-worker`` at start-up, and
``llmctl``. Workers under the supervisor receive the already validated values through their
environment, so a worker never sees a config the supervisor rejected.
"""

from __future__ import annotations

import dataclasses
import enum
import io
import math
import os
import re
import sys
import typing
import zoneinfo
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dotenv import dotenv_values

from llm_service.errors import ConfigError
from llm_service.model_settings import parse_context_lengths, parse_fallback_models

SECRET_MASK = "***"
_SECRET_SUFFIXES = ("_KEY", "_PASSWORD", "_TOKEN", "_SECRET")

GIGACHAT_AUTH_URL = "https://ngw.devices.sberbank.ru:9443/api/v2/oauth"
GIGACHAT_API_URL = "https://gigachat.devices.sberbank.ru/api/v1"

Check = Callable[[Any], str | None]

KAFKA_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
SASL_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")


class Reload(enum.Enum):
    """What a change of the setting needs on SIGHUP / ``llmctl reload`` (supervisor/reconfig.py)."""

    IN_PLACE = "in place"  # read by the supervisor only: applied at once
    ROLLING = "rolling"  # workers see it: replaced one at a time
    AT_RESTART = "restart"  # fixed at start (socket, table size, metrics port): old value kept, logged
    REFUSED = "refused"  # old and new workers must never run side by side: the reload is rejected


def setting(default: Any, help: str, *, reload: Reload, check: Check | None = None, group: str = "") -> Any:
    """Declare one setting: its default, one help line, its reload scope and an optional check.

    ``check`` returns an error text for a bad value, or None. The group is the heading under which
    ``.env.example`` lists the variable.
    """
    return field(default=default, metadata={"help": help, "reload": reload, "check": check, "group": group})


def reload_scope(f: dataclasses.Field[Any]) -> Reload:
    """The ``reload=`` a field of Settings was declared with."""
    scope: Reload = f.metadata["reload"]
    return scope


def positive(value: float) -> str | None:
    return None if value > 0 else "must be greater than 0"


def non_negative(value: float) -> str | None:
    return None if value >= 0 else "must be 0 or greater"


def percent(value: float) -> str | None:
    return None if 0 < value <= 100 else "must be a percentage in (0, 100]"


def port(value: int) -> str | None:
    return None if 0 <= value <= 65535 else "must be a TCP port 0-65535"


def one_of(*allowed: str) -> Check:
    def check(value: str) -> str | None:
        return None if value in allowed else f"must be one of {', '.join(allowed)}"

    return check


def parses(parse: Callable[[str], object]) -> Check:
    """A check that the value parses; ``parse`` raises ValueError saying why not."""

    def check(value: str) -> str | None:
        try:
            parse(value)
        except ValueError as exc:
            return str(exc)
        return None

    return check


def host_port(value: str) -> str | None:
    parts = [p.strip() for p in value.split(",")]
    if all(re.fullmatch(r"[A-Za-z0-9._\-\[\]:]+:\d{1,5}", p) for p in parts):
        return None
    return "must be host:port (comma-separated for several)"


def url(value: str) -> str | None:
    return None if re.match(r"https?://[^\s/]+", value) else "must be an http(s):// URL"


def topic_name(value: str) -> str | None:
    return None if re.fullmatch(r"[A-Za-z0-9._-]{1,249}", value) else "is not a valid Kafka topic name"


def bucket_name(value: str) -> str | None:
    if re.fullmatch(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]", value):
        return None
    return "is not a valid S3 bucket name"


def bucket_list(value: tuple[str, ...]) -> str | None:
    bad = [b for b in value if bucket_name(b)]
    return f"has invalid bucket names: {', '.join(bad)}" if bad else None


def log_file_path(value: str) -> str | None:
    # Checked here, not first when the handler opens it: a reload must be refused, not half applied.
    if not value:
        return None
    target = Path(value)
    try:
        if target.is_dir():
            return "is a directory"
        return None if target.parent.is_dir() else f"folder {str(target.parent)!r} does not exist"
    except OSError as exc:  # a folder the service may not search (EACCES): a clear refusal, no traceback
        return f"cannot be checked: {exc.strerror or exc}"


def sasl_mechanism(value: str) -> str | None:
    if not value or value in SASL_MECHANISMS:
        return None
    return f"must be one of {', '.join(SASL_MECHANISMS)} (or empty without SASL)"


def existing_file(value: str) -> str | None:
    try:
        return None if not value or Path(value).is_file() else "file does not exist"
    except OSError as exc:  # as in log_file_path
        return f"cannot be checked: {exc.strerror or exc}"


def instance_prefix_text(value: str) -> str | None:
    if re.fullmatch(r"[A-Za-z0-9._-]{0,200}", value):
        return None
    return "must be at most 200 characters of A-Z a-z 0-9 . _ -"


def tenant_budgets(value: str) -> str | None:
    for part in (p.strip() for p in value.split(",") if p.strip()):
        name, _, amount = part.partition("=")
        if not name.strip() or not amount.strip().isdigit():
            return f"{part!r} is not tenant=tokens"
    return None


def time_zone(value: str) -> str | None:
    try:
        zoneinfo.ZoneInfo(value)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        return "is not a known IANA time zone"
    return None


def _default_socket() -> str:
    return str(Path(os.environ.get("RUNTIME_DIRECTORY") or "/tmp") / "llm-supervisor.sock")


@dataclass(frozen=True, kw_only=True)
class Settings:
    """The validated configuration. Frozen: a reload builds a new object and swaps it in whole."""

    # Kafka
    kafka_bootstrap_servers: str = setting(
        "localhost:9092",
        "Kafka brokers, host:port, comma-separated",
        reload=Reload.ROLLING,
        check=host_port,
        group="Kafka",
    )
    kafka_tasks_topic: str = setting(
        "tasks_llm", "Topic tasks are consumed from", reload=Reload.REFUSED, check=topic_name
    )
    kafka_status_topic: str = setting(
        "tasks_llm_status", "Topic status events go to", reload=Reload.ROLLING, check=topic_name
    )
    kafka_dlq_topic: str = setting(
        "tasks_llm_dlq", "Topic failed and invalid tasks go to", reload=Reload.ROLLING, check=topic_name
    )
    kafka_group_id: str = setting(
        "llm-worker-group", "Consumer group shared by all workers", reload=Reload.REFUSED
    )
    kafka_session_timeout_ms: int = setting(
        10000,
        "Consumer session timeout; a dead static member keeps its partitions this long",
        reload=Reload.ROLLING,
        check=positive,
    )
    kafka_max_poll_interval_ms: int = setting(
        300000,
        "Longest gap between polls before the broker drops the consumer",
        reload=Reload.ROLLING,
        check=positive,
    )
    kafka_max_request_bytes: int = setting(
        2 * 1024 * 1024,
        "Largest status/DLQ record the producer sends (DLQ copies of big tasks need the topic to allow it)",
        reload=Reload.ROLLING,
        check=positive,
    )
    kafka_security_protocol: str = setting(
        "PLAINTEXT",
        "Kafka security protocol of every client (workers, lag probe, llmctl)",
        reload=Reload.ROLLING,
        check=one_of(*KAFKA_PROTOCOLS),
    )
    kafka_sasl_mechanism: str = setting(
        "",
        "SASL mechanism with SASL_*: PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512",
        reload=Reload.ROLLING,
        check=sasl_mechanism,
    )
    kafka_sasl_username: str = setting("", "SASL user name (required with SASL_*)", reload=Reload.ROLLING)
    kafka_sasl_password: str = setting("", "SASL password (required with SASL_*)", reload=Reload.ROLLING)
    kafka_ssl_cafile: str = setting(
        "",
        "CA file (PEM) that signed the brokers' certificates, with SSL/SASL_SSL (empty: system CAs)",
        reload=Reload.ROLLING,
        check=existing_file,
    )

    # S3 (MinIO in production)
    minio_endpoint: str = setting(
        "localhost:9000", "S3 endpoint host:port", reload=Reload.ROLLING, check=host_port, group="S3"
    )
    minio_access_key: str = setting("", "S3 access key", reload=Reload.ROLLING)
    minio_secret_key: str = setting("", "S3 secret key", reload=Reload.ROLLING)
    minio_secure: bool = setting(False, "Use HTTPS for S3", reload=Reload.ROLLING)
    minio_ca_file: str = setting(
        "",
        "CA file (PEM) that signed the S3 server's certificate, with MINIO_SECURE (empty: system CAs)",
        reload=Reload.ROLLING,
        check=existing_file,
    )
    minio_region: str = setting(
        "us-east-1", "S3 region (saves a location lookup per bucket)", reload=Reload.ROLLING
    )
    minio_input_bucket: str = setting(
        "llm-input", "Default bucket of task inputs", reload=Reload.ROLLING, check=bucket_name
    )
    minio_output_bucket: str = setting(
        "llm-output", "Default bucket of task results", reload=Reload.ROLLING, check=bucket_name
    )
    minio_output_prefix: str = setting(
        "results/", "Key prefix of default result objects ({prefix}{task_id}.json)", reload=Reload.ROLLING
    )
    minio_allowed_input_buckets: tuple[str, ...] = setting(
        (),
        "Buckets tasks may read inputs from, comma-separated (empty: only MINIO_INPUT_BUCKET)",
        reload=Reload.ROLLING,
        check=bucket_list,
    )
    input_max_bytes: int = setting(
        10 * 1024 * 1024,
        "Largest input object a task may read, in bytes",
        reload=Reload.ROLLING,
        check=positive,
    )

    # GigaChat
    gigachat_auth_url: str = setting(
        GIGACHAT_AUTH_URL, "OAuth endpoint", reload=Reload.ROLLING, check=url, group="GigaChat"
    )
    gigachat_api_url: str = setting(GIGACHAT_API_URL, "REST API base URL", reload=Reload.ROLLING, check=url)
    gigachat_auth_key: str = setting(
        "", "Authorization key (base64 client_id:client_secret)", reload=Reload.ROLLING
    )
    gigachat_scope: str = setting(
        "GIGACHAT_API_PERS",
        "OAuth scope",
        reload=Reload.ROLLING,
        check=one_of("GIGACHAT_API_PERS", "GIGACHAT_API_B2B", "GIGACHAT_API_CORP"),
    )
    gigachat_model: str = setting("GigaChat", "Model used when a task names none", reload=Reload.ROLLING)
    gigachat_ca_bundle: str = setting(
        "", "CA bundle file with the Russian Trusted Root CA (empty: system CAs)", reload=Reload.ROLLING
    )
    gigachat_verify_ssl: bool = setting(
        True, "Verify TLS certificates (keep on outside development)", reload=Reload.ROLLING
    )
    gigachat_timeout_s: float = setting(
        60.0, "Timeout of one HTTP call to GigaChat, seconds", reload=Reload.ROLLING, check=positive
    )
    gigachat_max_concurrency: int = setting(
        8,
        "Model calls in flight across all workers of this host (a personal key allows 1)",
        reload=Reload.ROLLING,
        check=positive,
    )
    gigachat_breaker_fail_max: int = setting(
        5,
        "Consecutive failed model calls that open the circuit breaker",
        reload=Reload.ROLLING,
        check=positive,
    )
    gigachat_breaker_reset_s: float = setting(
        15.0, "Seconds the breaker stays open before a probe call", reload=Reload.ROLLING, check=positive
    )
    gigachat_call_attempts: int = setting(
        4,
        "HTTP attempts per GigaChat call on 429, 5xx, timeouts (within the task deadline)",
        reload=Reload.ROLLING,
        check=positive,
    )
    gigachat_backoff_base_s: float = setting(
        0.5,
        "First retry delay cap of a GigaChat call, seconds; doubles per retry, full jitter",
        reload=Reload.ROLLING,
        check=positive,
    )
    gigachat_backoff_max_s: float = setting(
        10.0,
        "Largest retry delay of a GigaChat call, seconds (a Retry-After header wins)",
        reload=Reload.ROLLING,
        check=positive,
    )
    gigachat_cap_probe_s: float = setting(
        30.0,
        "Seconds after a 429 before the host-wide call cap tries the refused level again",
        reload=Reload.ROLLING,
        check=positive,
    )
    gigachat_fallback_models: str = setting(
        "",
        "Fallback chains on 429/503/open breaker: MODEL=NEXT[,NEXT...];MODEL2=... (empty: none)",
        reload=Reload.ROLLING,
        check=parses(parse_fallback_models),
    )
    gigachat_context_lengths: str = setting(
        "",
        "Context length per model in tokens, MODEL=TOKENS,... over the defaults in docs/gigachat-client.md",
        reload=Reload.ROLLING,
        check=parses(parse_context_lengths),
    )
    gigachat_limiter_dir: str = setting(
        "",
        "Directory of the GigaChat call limiter and spending books (empty: state dir, runtime dir or /tmp)",
        reload=Reload.ROLLING,
    )

    # Token budgets and the account's money (docs/gigachat-client.md, "Budgets and payment")
    gigachat_token_budget_daily: int = setting(
        0,
        "Tokens the whole pool may spend per day (0: no budget); when spent, intake pauses",
        reload=Reload.ROLLING,
        check=non_negative,
        group="Token budgets",
    )
    task_tenant_field: str = setting(
        "",
        "Task field naming its tenant for GIGACHAT_TENANT_BUDGETS, e.g. metadata.team (empty: none)",
        reload=Reload.ROLLING,
    )
    gigachat_tenant_budgets: str = setting(
        "",
        "Daily token budget per tenant, e.g. sales=200000,ops=50000 (a tenant not listed: no budget)",
        reload=Reload.ROLLING,
        check=tenant_budgets,
    )
    gigachat_budget_timezone: str = setting(
        "Europe/Moscow",
        "Time zone whose midnight starts a new budget day (IANA name)",
        reload=Reload.ROLLING,
        check=time_zone,
    )
    gigachat_tenant_held_max: int = setting(
        32,
        "Tasks of spent tenants one worker holds (uncommitted) beside its concurrency before it pauses",
        reload=Reload.ROLLING,
        check=non_negative,
    )
    gigachat_balance_interval_s: float = setting(
        0.0,
        "Seconds between reads of GET /balance (prepaid packages) by one worker of the host (0: off)",
        reload=Reload.ROLLING,
        check=non_negative,
    )
    gigachat_balance_alert_tokens: int = setting(
        100_000,
        "Warn (model_balance_low) when a prepaid package has fewer tokens left",
        reload=Reload.ROLLING,
        check=non_negative,
    )
    gigachat_payment_probe_s: float = setting(
        180.0,
        "After a 402/403 from the model: seconds between probe calls while intake is paused",
        reload=Reload.ROLLING,
        check=positive,
    )

    # Tasks
    task_max_attempts: int = setting(
        5,
        "Attempts at a task on transient errors before it fails",
        reload=Reload.ROLLING,
        check=positive,
        group="Tasks",
    )
    task_timeout_s: float = setting(
        600.0, "Deadline of one task, retries included, seconds", reload=Reload.ROLLING, check=positive
    )
    task_max_message_bytes: int = setting(
        256 * 1024,
        "Largest task message accepted; a larger one fails with MESSAGE_TOO_LARGE",
        reload=Reload.ROLLING,
        check=positive,
    )
    task_retry_backoff_s: float = setting(
        1.0,
        "Pause before the first retry of a task; doubles per attempt, with jitter",
        reload=Reload.ROLLING,
        check=positive,
    )
    task_retry_backoff_max_s: float = setting(
        30.0, "Longest pause between task retries", reload=Reload.ROLLING, check=positive
    )
    task_max_model_calls: int = setting(
        0,
        "Model calls one delivery of a task may make, HTTP retries included "
        "(0: GIGACHAT_CALL_ATTEMPTS x TASK_MAX_ATTEMPTS)",
        reload=Reload.ROLLING,
        check=non_negative,
    )
    worker_bootstrap_attempts: int = setting(
        5,
        "Bootstrap attempts (Kafka, S3, GigaChat) before a worker exits as BOOT_FAILED",
        reload=Reload.ROLLING,
        check=positive,
    )
    worker_bootstrap_backoff_s: float = setting(
        1.0,
        "Pause after the first failed bootstrap attempt; doubles per attempt up to 30 s",
        reload=Reload.ROLLING,
        check=positive,
    )
    worker_revoke_timeout_s: float = setting(
        10.0,
        "Seconds a worker waits for tasks of revoked partitions before handing them back",
        reload=Reload.ROLLING,
        check=positive,
    )

    # Worker pool
    worker_processes: int = setting(
        2, "Worker processes the supervisor runs", reload=Reload.IN_PLACE, check=positive, group="Pool"
    )
    worker_max_concurrent_tasks: int = setting(
        8, "Tasks in flight in one worker process", reload=Reload.ROLLING, check=positive
    )
    # Refused on reload: old and new workers would hold two identities each, unchecked at start-up.
    worker_instance_prefix: str = setting(
        "",
        "Stable part of each slot's Kafka group_instance_id, unique per host (empty: the host name)",
        reload=Reload.REFUSED,
        check=instance_prefix_text,
    )
    worker_heartbeat_timeout: float = setting(
        60.0,
        "Seconds without a heartbeat before a worker is killed and replaced",
        reload=Reload.IN_PLACE,
        check=positive,
    )
    worker_drain_timeout: float = setting(
        120.0,
        "Seconds a stopping worker may take to finish its tasks",
        reload=Reload.IN_PLACE,
        check=positive,
    )
    worker_max_tasks: int = setting(
        0,
        "Recycle a worker after this many tasks, with jitter (0: never)",
        reload=Reload.IN_PLACE,
        check=non_negative,
    )
    worker_rss_soft_mb: int = setting(
        1024, "Worker RSS above which it is recycled gracefully, MiB", reload=Reload.IN_PLACE, check=positive
    )
    worker_rss_hard_mb: int = setting(
        2048, "Worker RSS above which it is killed, MiB", reload=Reload.IN_PLACE, check=positive
    )
    worker_max_processes: int = setting(
        32,
        "Upper bound of WORKER_PROCESSES and `llmctl scale`; sizes the status table",
        reload=Reload.AT_RESTART,
        check=positive,
    )
    worker_kill_grace_s: float = setting(
        5.0,
        "Seconds between the polite signal to a hung or oversized worker and SIGKILL",
        reload=Reload.IN_PLACE,
        check=positive,
    )
    worker_min_uptime_s: float = setting(
        5.0,
        "A worker that exits sooner than this after start counts as a quick failure",
        reload=Reload.IN_PLACE,
        check=non_negative,
    )
    worker_restart_backoff_s: float = setting(
        1.0,
        "First delay before restarting after repeated quick failures; doubles each time",
        reload=Reload.IN_PLACE,
        check=positive,
    )
    worker_restart_backoff_max_s: float = setting(
        30.0, "Longest delay between restarts of a failing worker", reload=Reload.IN_PLACE, check=positive
    )
    worker_max_quick_failures: int = setting(
        5,
        "Quick failures in a row after which a slot goes FATAL and raises an alert",
        reload=Reload.IN_PLACE,
        check=positive,
    )
    worker_fatal_cooloff_s: float = setting(
        300.0, "Seconds a FATAL slot waits before it is tried again", reload=Reload.IN_PLACE, check=positive
    )

    # Limits (the runbook's norms and alert levels)
    limit_cpu_percent: float = setting(
        80.0,
        "Service CPU norm (% of its cgroup limit or the host); above it the pool sheds load",
        reload=Reload.IN_PLACE,
        check=percent,
        group="Limits",
    )
    limit_ram_percent: float = setting(
        80.0,
        "Service RAM norm (% of its cgroup limit or the host); above it the pool sheds load",
        reload=Reload.IN_PLACE,
        check=percent,
    )
    alert_cpu_percent: float = setting(
        90.0,
        "Service CPU level that pauses intake and raises an alert",
        reload=Reload.IN_PLACE,
        check=percent,
    )
    alert_ram_percent: float = setting(
        90.0,
        "Service RAM level that pauses intake and raises an alert",
        reload=Reload.IN_PLACE,
        check=percent,
    )
    limit_disk_free_mb: int = setting(
        1024, "Free disk below which intake pauses, MiB", reload=Reload.IN_PLACE, check=non_negative
    )
    limit_window_s: float = setting(
        30.0, "Window over which CPU and RAM are averaged, seconds", reload=Reload.IN_PLACE, check=positive
    )
    alert_bootstrap_failures: int = setting(
        5,
        "Bootstrap failures in a row of one worker that raise an alert",
        reload=Reload.IN_PLACE,
        check=positive,
    )
    alert_kafka_errors_per_min: float = setting(
        10.0,
        "Kafka connection errors a minute (all workers) that raise an alert",
        reload=Reload.IN_PLACE,
        check=positive,
    )
    alert_avg_processing_s: float = setting(
        120.0,
        "Average task processing time that raises an alert, seconds",
        reload=Reload.IN_PLACE,
        check=positive,
    )
    alert_consumer_lag_s: float = setting(
        600.0,
        "Age of the oldest unprocessed task that raises an alert, seconds",
        reload=Reload.IN_PLACE,
        check=positive,
    )

    # Supervisor
    supervisor_socket: str = setting(
        _default_socket(),
        "Unix status socket of the supervisor",
        reload=Reload.AT_RESTART,
        group="Supervisor",
    )
    supervisor_stop_margin_s: float = setting(
        10.0,
        "Added to WORKER_DRAIN_TIMEOUT: the one deadline of a graceful stop",
        reload=Reload.IN_PLACE,
        check=non_negative,
    )
    supervisor_lag_interval_s: float = setting(
        30.0,
        "Seconds between consumer-lag probes of the Kafka group (0: off)",
        reload=Reload.IN_PLACE,
        check=non_negative,
    )

    # Metrics (docs/metrics.md)
    metrics_port: int = setting(
        0,
        "TCP port of the supervisor's Prometheus endpoint /metrics (0: off)",
        reload=Reload.AT_RESTART,
        check=port,
        group="Metrics",
    )
    metrics_addr: str = setting(
        "0.0.0.0",
        "Address the metrics endpoint binds (0.0.0.0 for a container; 127.0.0.1 for local only)",
        reload=Reload.AT_RESTART,
    )

    # Logging
    log_format: str = setting(
        "text",
        "Log format: text or json",
        reload=Reload.ROLLING,
        check=one_of("text", "json"),
        group="Logging",
    )
    log_level: str = setting(
        "INFO",
        "Log level",
        reload=Reload.ROLLING,
        check=one_of("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"),
    )
    log_file: str = setting(
        "",
        "Also write logs to this file (reopened on SIGUSR1); empty: stdout only",
        reload=Reload.ROLLING,
        check=log_file_path,
    )

    @property
    def model_calls_per_task(self) -> int:
        """TASK_MAX_MODEL_CALLS, or when 0 the product of the two retry levels it caps (docs/worker.md)."""
        return self.task_max_model_calls or self.gigachat_call_attempts * self.task_max_attempts

    def allowed_input_buckets(self) -> frozenset[str]:
        return frozenset(self.minio_allowed_input_buckets or (self.minio_input_bucket,))

    def masked(self) -> dict[str, Any]:
        """The settings by env name, secrets replaced: what may be logged or shown."""
        return {
            env_name(f): (
                SECRET_MASK if is_secret(env_name(f)) and getattr(self, f.name) else getattr(self, f.name)
            )
            for f in dataclasses.fields(self)
        }

    def as_environ(self) -> dict[str, str]:
        """The settings as environment variables, for handing to a child process."""
        return {env_name(f): _render(getattr(self, f.name)) for f in dataclasses.fields(self)}


def env_name(f: dataclasses.Field[Any]) -> str:
    return f.name.upper()


def is_secret(name: str) -> bool:
    return name.endswith(_SECRET_SUFFIXES)


def _render(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, tuple):
        return ",".join(value)
    return str(value)


_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def _parse(raw: str, kind: Any) -> Any:
    raw = raw.strip()
    if kind is bool:
        if raw.lower() in _TRUE:
            return True
        if raw.lower() in _FALSE:
            return False
        raise ValueError("must be true or false")
    if kind is int:
        return int(raw)
    if kind is float:
        value = float(raw)
        if not math.isfinite(value):  # float() takes "inf" and "nan"; no setting means either
            raise ValueError("must be a finite number")
        return value
    if typing.get_origin(kind) is tuple:
        return tuple(p.strip() for p in raw.split(",") if p.strip())
    return raw


def _field_types() -> dict[str, Any]:
    return typing.get_type_hints(Settings)


def _shown(name: str, raw: str) -> str:
    if is_secret(name):
        return SECRET_MASK
    # One error line stays one readable line even for a value of thousands of characters.
    return repr(raw) if len(raw) <= 80 else f"{raw[:60]!r}... ({len(raw)} characters)"


def load_settings(environ: Mapping[str, str] | None = None, env_file: Path | None = None) -> Settings:
    """Build Settings from a .env file overlaid by the environment; raise ConfigError on any bad value.

    The process environment wins over the file, as with docker compose. An explicit ``env_file``
    must exist; without one, ``./.env`` is read when present.
    """
    environ = os.environ if environ is None else environ
    source: dict[str, str] = {}
    path = env_file if env_file is not None else (Path(".env") if Path(".env").is_file() else None)
    if path is not None:
        source.update(_read_env_file(path))
    source.update(environ)
    return _build(source)


def _read_env_file(path: Path) -> dict[str, str]:
    """The file's variables; ConfigError when it is missing, unreadable or not UTF-8 (never a crash)."""
    if not path.is_file():
        raise ConfigError(f"env file {path} does not exist")
    try:
        text = path.read_bytes().decode("utf-8")
    except OSError as exc:
        raise ConfigError(f"env file {path} cannot be read: {exc.strerror}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"env file {path} is not UTF-8 (byte {exc.start})") from None
    return {k: v for k, v in dotenv_values(stream=io.StringIO(text)).items() if v is not None}


def _build(source: Mapping[str, str]) -> Settings:
    types_ = _field_types()
    values: dict[str, Any] = {}
    for f in dataclasses.fields(Settings):
        name = env_name(f)
        if name not in source:
            continue
        raw = source[name]
        try:
            values[f.name] = _parse(raw, types_[f.name])
        except ValueError as exc:
            reason = str(exc) if "must be" in str(exc) else f"must be {_kind_name(types_[f.name])}"
            raise ConfigError(f"{name}={_shown(name, raw)}: {reason}") from None
    settings = Settings(**values)
    _check(settings)
    return settings


def _kind_name(kind: Any) -> str:
    return {int: "a whole number", float: "a number"}.get(kind, "valid")


def _check(settings: Settings) -> None:
    for f in dataclasses.fields(settings):
        check: Check | None = f.metadata.get("check")
        value = getattr(settings, f.name)
        problem = check(value) if check else None
        if problem:
            name = env_name(f)
            raise ConfigError(f"{name}={_shown(name, _render(value))}: {problem}")
    if settings.worker_rss_soft_mb > settings.worker_rss_hard_mb:
        raise ConfigError("WORKER_RSS_SOFT_MB must not exceed WORKER_RSS_HARD_MB")
    if settings.worker_processes > settings.worker_max_processes:
        raise ConfigError("WORKER_PROCESSES must not exceed WORKER_MAX_PROCESSES")
    _check_kafka_sasl(settings)


def _check_kafka_sasl(settings: Settings) -> None:
    """SASL needs a mechanism and credentials; each missing one is named, the password never shown."""
    if not settings.kafka_security_protocol.startswith("SASL_"):
        return
    for name in ("KAFKA_SASL_MECHANISM", "KAFKA_SASL_USERNAME", "KAFKA_SASL_PASSWORD"):
        if not getattr(settings, name.lower()):
            raise ConfigError(
                f"{name} must be set when KAFKA_SECURITY_PROTOCOL={settings.kafka_security_protocol}"
            )


def env_example() -> str:
    """The text of .env.example: every variable with its default and help line, grouped."""
    lines = [
        "# llm-service configuration. Generated by `python -m llm_service.config example`;",
        "# a test keeps it equal to llm_service/config.py. Values shown are the defaults.",
        "# [reload: ...] is what a change needs on SIGHUP / `llmctl reload`: in place (applied at once),",
        "# rolling (workers replaced one at a time), restart (old value kept until the supervisor",
        "# restarts), refused (the reload is rejected; restart the supervisor to change it).",
    ]
    for f in dataclasses.fields(Settings):
        if f.metadata["group"]:
            lines += ["", f"# --- {f.metadata['group']} ---"]
        default = f.default if f.name != "supervisor_socket" else "/tmp/llm-supervisor.sock"
        lines.append(f"# {f.metadata['help']} [reload: {reload_scope(f).value}]")
        lines.append(f"{env_name(f)}={_render(default)}")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    """``python -m llm_service.config example|check``: print .env.example, or validate the current config."""
    args = sys.argv[1:] if argv is None else argv
    if args[:1] == ["example"]:
        sys.stdout.write(env_example())
        return 0
    if args[:1] == ["check"]:
        try:
            settings = load_settings(env_file=Path(args[1]) if len(args) > 1 else None)
        except ConfigError as exc:
            print(f"config error: {exc}", file=sys.stderr)
            return 2
        for name, value in settings.masked().items():
            print(f"{name}={_render(value)}")
        return 0
    print("usage: python -m llm_service.config example|check [ENV_FILE]", file=sys.stderr)
    return 2


if __name__ == "__main__":
    raise SystemExit(main())
