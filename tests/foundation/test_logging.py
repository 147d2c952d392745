from __future__ import annotations

import json
import logging
import re
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest

from llm_service import __version__, log_lines
from llm_service.logs import configure_logging, iso_timestamp

TEXT_LINE = re.compile(
    r"^(?P<version>\S+) - (?P<logger>\S+) - (?P<function>\S+) - "
    r"(?P<timestamp>\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z) - "
    r"(?P<service>\S+) - (?P<level>[A-Z]+) - (?P<message>.*)$"
)


@pytest.fixture(autouse=True)
def _restore_root_logger() -> Iterator[None]:
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    yield
    root.handlers[:] = saved[0]
    root.setLevel(saved[1])


def _emit(log_format: str) -> str:
    code = (
        "from llm_service.logs import configure_logging; import logging\n"
        f"configure_logging(service='llm-worker[1]', log_format={log_format!r})\n"
        "def process_task():\n"
        "    logging.getLogger('llm_worker.pipeline').info('Task %s processed in %.1fms', 'a-1', 12.34)\n"
        "process_task()\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stderr == "", "logs go to stdout (Docker's and systemd's convention), not stderr"
    return done.stdout.strip()


def test_text_format_has_the_runbook_fields_in_order() -> None:
    match = TEXT_LINE.match(_emit("text"))
    assert match, "line does not follow {version} - {logger} - {function} - {timestamp} - {service} - ..."
    assert match["version"] == __version__
    assert match["logger"] == "llm_worker.pipeline"
    assert match["function"] == "process_task"
    assert match["service"] == "llm-worker[1]"
    assert match["level"] == "INFO"
    assert match["message"] == "Task a-1 processed in 12.3ms"


def test_json_format_has_the_same_fields_as_keys() -> None:
    record = json.loads(_emit("json"))
    assert record["version"] == __version__
    assert record["logger"] == "llm_worker.pipeline"
    assert record["function"] == "process_task"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", record["timestamp"])
    assert record["service"] == "llm-worker[1]"
    assert record["level"] == "INFO"
    assert record["message"] == "Task a-1 processed in 12.3ms"


def test_log_file_receives_lines(tmp_path: pytest.TempPathFactory) -> None:
    path = tmp_path / "service.log"  # type: ignore[operator]
    configure_logging(service="llm-supervisor", log_file=str(path))
    logging.getLogger("supervisor").warning(log_lines.BOOTSTRAP_FAILED, "no broker")
    for handler in logging.getLogger().handlers:
        handler.flush()
    assert "WARNING - Bootstrap failed: no broker" in path.read_text()


# The wording of docs/reference.md, "Log lines", with sample values filled in.
CONTRACT_LINES = [
    (log_lines.WORKER_STARTED, ("tasks_llm",), "Worker started, listening to Kafka topic 'tasks_llm'..."),
    (log_lines.PROCESSING_TASK, ("a-1", "host:1:42"), "Processing task a-1 with worker host:1:42"),
    (log_lines.TASK_COMPLETED, ("a-1", 812), "Task a-1 completed: 812 tokens"),
    (log_lines.TASK_PROCESSED_IN, ("a-1", 1534.2), "Task a-1 processed in 1534.2ms"),
    (log_lines.STATUS_SENT, (3, "a-1"), "Status 3 sent for task a-1"),
    (log_lines.BREAKER_OPEN, (5,), "Circuit breaker OPEN after 5 failures"),
    (log_lines.TASK_FAILED, ("a-1", "boom"), "Failed to process task a-1: boom"),
    (log_lines.INIT_FAILED, ("boom",), "Failed to initialize interface: boom"),
    (log_lines.BOOTSTRAP_FAILED, ("boom",), "Bootstrap failed: boom"),
]


@pytest.mark.parametrize(("template", "args", "expected"), CONTRACT_LINES)
def test_contract_log_lines_keep_their_wording(
    template: str, args: tuple[object, ...], expected: str
) -> None:
    assert template % args == expected


def test_runbook_average_pipeline_reads_our_processed_lines() -> None:
    lines = [log_lines.TASK_PROCESSED_IN % ("a", 100.0), log_lines.TASK_PROCESSED_IN % ("b", 300.0)]
    script = (
        'grep "Task.*processed in" | grep -o "[0-9.]*ms" '
        '| awk \'{sum+=$1; count++} END {print "Average:", sum/count, "ms"}\''
    )
    done = subprocess.run(
        ["bash", "-c", script], input="\n".join(lines) + "\n", capture_output=True, text=True, check=True
    )
    assert done.stdout.strip() == "Average: 200 ms"


def test_control_characters_in_a_task_id_are_escaped_to_one_line(tmp_path: pytest.TempPathFactory) -> None:
    path = tmp_path / "service.log"  # type: ignore[operator]
    configure_logging(service="llm-worker[1]", log_file=str(path))
    task_id = "evil\n0.1.0 - fake - line\r\x1b[31m\x00\x85\u2028\ud800"
    logging.getLogger("llm_worker.pipeline").warning(log_lines.TASK_FAILED, task_id, "INVALID_TASK_ID: bad")
    logging.getLogger("llm_worker.pipeline").info(log_lines.STATUS_SENT, 4, task_id)
    for handler in logging.getLogger().handlers:
        handler.flush()
    lines = path.read_bytes().decode("utf-8").splitlines()  # valid UTF-8, despite the lone surrogate
    assert len(lines) == 2 and all(TEXT_LINE.match(line) for line in lines)
    escaped = "evil\\n0.1.0 - fake - line\\r\\x1b[31m\\x00\\x85\\u2028\\ud800"
    assert lines[0].endswith(f"Failed to process task {escaped}: INVALID_TASK_ID: bad")
    assert lines[1].endswith(f"Status 4 sent for task {escaped}")


# Several processes (the supervisor and its forked workers) log to one pipe at once, as under Docker.
_WRITERS = """
import logging, os, sys
from llm_service.logs import configure_logging
configure_logging(service="llm-supervisor")
for n in range(4):
    if os.fork() == 0:
        configure_logging(service=f"llm-worker[{n}]")
        break
log = logging.getLogger("llm_worker.pipeline")
for i in range(300):
    log.info("Task %s processed in %s", f"t-{os.getpid()}-{i}", "x" * 2500)
"""


def test_processes_sharing_stdout_never_interleave_partial_lines() -> None:
    done = subprocess.run([sys.executable, "-c", _WRITERS], capture_output=True, text=True, check=True)
    lines = done.stdout.splitlines()
    assert len(lines) == 5 * 300
    broken = [line[:120] for line in lines if not (TEXT_LINE.match(line) and line.endswith("x" * 2500))]
    assert not broken, f"{len(broken)} lines were cut or mixed, e.g. {broken[:3]}"


@pytest.mark.parametrize(
    "created",
    [
        0.0,
        1796158740.0,  # a whole second
        1796158740.0004999,
        1796158740.9994999,
        1796158740.9999996,  # rounds up into the next second, as datetime rounds
        1796177748.6689994,  # float error at the millisecond
        1796158741.25,  # the next second after the ones above: the cached text moves on
        1796158740.5,  # and back
        -0.5,
    ],
)
def test_timestamps_match_datetime_to_the_millisecond(created: float) -> None:
    expected = datetime.fromtimestamp(created, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
    assert iso_timestamp(created) == expected
