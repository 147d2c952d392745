"""docs/reference.md equals the code: each table lists exactly the names the code has, both ways.

Pure: reads the doc and imports the modules that declare the names; no stack. When a test here fails,
either add the new name (with its meaning) to the table the message names, or, for a generated block,
run ``python -m tests.foundation.reference_doc``.
"""

from __future__ import annotations

import configparser
import dataclasses
import re
import signal
import tomllib
from typing import Any

from llm_service import exit_codes, log_lines
from llm_service import socket_protocol as protocol
from llm_service.config import Settings, env_name
from llm_service.errors import PermanentTaskError
from llm_service.signals import DUMP_SIGNAL, SUPERVISOR_HANDLED, WORKER_HANDLED, WORKER_IGNORED
from llm_service.task_status import TaskStatus
from llm_worker import error_codes
from llm_worker.events import Source, dlq_headers, status_event
from llm_worker.gigachat.models import ChatResult
from llm_worker.task_message import ObjectRef, TaskSpec
from llm_worker.task_result import result_object
from supervisor.health import Alert
from supervisor.limits import HostReading
from supervisor.status import status_reply
from tests.foundation import reference_doc as ref
from tests.supervisor.harness import CONTRACT_WORKER_FIELDS

ROOT = ref.ROOT
DOC = ref.REFERENCE.read_text(encoding="utf-8")


def names_under(heading: str) -> set[str]:
    return set(ref.first_column(ref.section(DOC, heading)))


def rows_under(heading: str) -> list[list[str]]:
    return ref.table_rows(ref.section(DOC, heading))


def unquote(cell: str) -> str:
    return cell.strip("`")


def test_generated_blocks_are_current() -> None:
    assert ref.block_names(DOC) == ["flags", "settings"]
    assert ref.regenerated(DOC) == DOC, "run: python -m tests.foundation.reference_doc"


def test_every_setting_is_listed_once() -> None:
    listed = ref.first_column(ref.section(DOC, "Settings", nested=True))
    assert sorted(listed) == sorted(env_name(f) for f in dataclasses.fields(Settings))


def _declared_scripts() -> set[str]:
    """The console scripts as the packaging files declare them (not as installed: a stale venv lies)."""
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    service = {
        line.split("=")[0].strip() for line in cfg["options.entry_points"]["console_scripts"].split("\n")
    }
    dev = tomllib.loads((ROOT / "dev" / "pyproject.toml").read_text())["project"]["scripts"]
    return {s for s in service if s} | set(dev)


def test_commands_table_lists_every_console_script() -> None:
    assert names_under("Commands") == _declared_scripts()
    assert set(ref.console_scripts()) == _declared_scripts()


def test_llmctl_exit_codes_cover_every_subcommand() -> None:
    parser = ref.parser_of(ref.console_scripts()["llmctl"])
    subcommands = {f"llmctl {name}" for name, _, _ in ref._subparsers(parser)}
    assert names_under("Exit codes of llmctl") == subcommands


def test_topics_with_their_defaults() -> None:
    documented = {unquote(r[0]): unquote(r[1]) for r in rows_under("Kafka topics")}
    defaults = Settings()
    code = {
        env_name(f): getattr(defaults, f.name)
        for f in dataclasses.fields(Settings)
        if f.name.endswith("_topic")
    }
    assert documented == code


def test_task_message_fields() -> None:
    source = (ROOT / "llm_worker" / "task_message.py").read_text()
    read = set(re.findall(r'body(?:\.get\(|\[)"(\w+)"', source)) | set(
        re.findall(r'_ref\(body, "(\w+)"', source)
    )
    assert names_under("Task message (on `KAFKA_TASKS_TOPIC`)") == read


def test_status_event_fields() -> None:
    event = status_event(task_id="t", status=TaskStatus.COMPLETED, worker_id="w", attempt=1, metadata=None)
    # "model" joins COMPLETED events in the pipeline (the model that answered); see its row.
    assert names_under("Status event (on `KAFKA_STATUS_TOPIC`)") == set(event) | {"model"}


def test_status_codes() -> None:
    documented = {int(unquote(r[0])): unquote(r[1]) for r in rows_under("Status codes")}
    assert documented == {int(s): s.name for s in TaskStatus}


def test_error_codes() -> None:
    heading = "Error codes (`error.code` of status 4, `error_code` header of a dead letter)"
    listed = ref.first_column(ref.section(DOC, heading))
    assert sorted(listed) == sorted(c for c in error_codes.COUNTED if c != error_codes.OTHER)


def test_dead_letter_headers() -> None:
    headers = dlq_headers(
        error=PermanentTaskError("x", code="INTERNAL"),
        source=Source("t", 0, 0),
        worker_id="w",
        task_id="t",
    )
    added_when_cut = {"truncated", "original_size"}  # llm_worker/events.py adds them to a cut value
    events_source = (ROOT / "llm_worker" / "events.py").read_text()
    assert all(f'("{h}"' in events_source for h in added_when_cut)
    assert names_under("Dead letter (on `KAFKA_DLQ_TOPIC`)") == {h for h, _ in headers} | added_when_cut


def test_result_object_fields() -> None:
    spec = TaskSpec(
        task_id="t",
        prompt="p",
        messages=(),
        input=None,
        model="m",
        params={},
        output=ObjectRef("b", "k"),
    )
    body = {"choices": [{"message": {"content": "c"}, "finish_reason": "stop"}], "model": "m", "usage": {}}
    chat = ChatResult.from_response(body, requested_model="m")
    obj = result_object(spec, chat, worker_id="w", processing_ms=1.0, created_at="now")
    assert names_under("Result object (at the task's `output`)") == set(obj)


def test_socket_commands() -> None:
    assert [unquote(r[0]) for r in rows_under("Status socket")] == list(protocol.COMMANDS)


def _status_reply() -> dict[str, Any]:
    host = HostReading(cpu_percent=1.0, ram_percent=1.0, disk_free_mb=1.0)
    return status_reply(workers=[], snapshots=[], alerts=[], host=host, settings=Settings(), supervisor={})


def test_status_reply_parts_and_fields() -> None:
    reply = _status_reply()
    rows = rows_under("The status reply")
    assert {unquote(r[0]) for r in rows} == set(reply)
    fields = {unquote(r[0]): set(re.findall(r"`(\w+)`", r[1])) for r in rows}
    assert fields["system"] - {"cgroup", "host"} == set(reply["system"])
    assert fields["totals"] == set(reply["totals"])
    alert = Alert(name="n", level="warning", message="m", since=0.0)
    assert fields["alerts"] == set(alert.as_dict())
    assert fields["workers"] == CONTRACT_WORKER_FIELDS  # tests/supervisor check real replies carry them


def test_health_and_its_exit_codes() -> None:
    documented = {unquote(r[0]): int(r[2]) for r in rows_under("Health")}
    assert documented == protocol.HEALTH_EXIT_CODES


def _alerts_in_code() -> dict[str, str]:
    """Every alert the supervisor can raise: ``found["name"] = (LEVEL, ...`` in supervisor/."""
    found: dict[str, str] = {}
    for path in (ROOT / "supervisor").glob("*.py"):
        for name, level in re.findall(r'found\["(\w+)"\] = \(\s*(CRITICAL|WARNING)', path.read_text()):
            found[name] = level.lower()
    return found


def test_alerts_with_their_levels() -> None:
    documented = {unquote(r[0]): r[1] for r in rows_under("Alerts")}
    assert documented == _alerts_in_code()


def test_supervisor_signals() -> None:
    assert names_under("To the supervisor") == {s.name for s in SUPERVISOR_HANDLED}


def test_worker_signals_are_the_ones_a_worker_handles() -> None:
    documented = {n.split()[-1] for n in names_under("To a worker")}
    assert all(isinstance(getattr(signal, n), signal.Signals) for n in documented)
    handled = {s.name for s in WORKER_HANDLED}
    ignored = {s.name for s in WORKER_IGNORED}
    assert {n for n in documented if n != DUMP_SIGNAL.name} == handled | (ignored & documented)


def test_exit_codes() -> None:
    documented = {unquote(r[0]): int(r[1]) for r in rows_under("Exit codes")}
    code = {k: v for k, v in vars(exit_codes).items() if k.isupper() and isinstance(v, int)}
    assert documented == code


def test_log_lines_word_for_word() -> None:
    documented = {unquote(r[0]): unquote(r[1]) for r in rows_under("Log lines")}
    code = {k: v for k, v in vars(log_lines).items() if k.isupper() and isinstance(v, str)}
    assert documented == code
