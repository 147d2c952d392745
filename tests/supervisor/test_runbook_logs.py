"""Every log-analysis command of docs/RUNBOOK.ru.md, run as written on the log of a real run.

The service runs for real (the supervisor, two real workers, the stack): some tasks complete, some
fail, two reloads are rejected. Its whole output (stdout and stderr in one file, so the test does not
depend on the stream the logs go to) is then fed to each shell pipeline of the runbook's
"Анализ логов" section, read from the markdown itself so the doc and the test cannot drift. Only the
log source is replaced (``docker logs llm-service ... |`` and ``journalctl -u llm-service ... |``
become ``cat FILE |``); the Docker and the systemd line of each analysis must print the same, and
what they print is checked against what the test knows: tasks sent, failed, their status events.
"""

from __future__ import annotations

import re
import subprocess
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from kafka import KafkaProducer

from tests.supervisor.conftest import StartSupervisor
from tests.supervisor.harness import REPO
from tests.waiting import wait_until
from tests.worker.harness import Names, StatusLog, send, task_bytes

pytestmark = pytest.mark.stack

RUNBOOK = REPO / "docs" / "RUNBOOK.ru.md"
SECTION = "## Анализ логов"
SOURCE = re.compile(r"^(?:docker logs llm-service|journalctl -u llm-service)\b[^|]*\|")
GOOD, NO_INPUT, BAD_PARAM = 6, 2, 1
REJECTED_RELOADS = 2


def runbook_pipelines(text: str) -> dict[str, list[str]]:
    """The commands of each "####" analysis of the section, by title, from its ```bash blocks."""
    section = text.split(SECTION, 1)[1].split("\n## ", 1)[0]
    found: dict[str, list[str]] = {}
    for part in section.split("\n#### ")[1:]:
        title, _, body = part.partition("\n")
        commands = [
            line.strip()
            for block in re.findall(r"```bash\n(.*?)```", body, flags=re.S)
            for line in block.splitlines()
            if line.strip() and not line.strip().startswith("#")
        ]
        if commands:
            found[title.strip()] = commands
    return found


def run_on(command: str, log: Path) -> str:
    source = command.split("|", 1)[0]
    # The parts of the source the file stands in for: docker logs must pass the container's stderr on
    # (a crash before logging starts writes there), journalctl must drop its own line prefix.
    assert "2>&1" in source if source.startswith("docker") else "-o cat" in source, command
    local, count = SOURCE.subn(f"cat {log} |", command)
    assert count == 1, f"no log source to replace in: {command}"
    done = subprocess.run(["bash", "-c", local], capture_output=True, text=True, timeout=60, check=False)
    assert not done.stderr, f"{command}\n-> {done.stderr}"
    return done.stdout


def test_runbook_log_pipelines_print_the_true_numbers(
    start_real: StartSupervisor, names: Names, producer: KafkaProducer, status_log: StatusLog
) -> None:
    sup = start_real(env_text="LOG_FORMAT=text\n")
    sup.running(2, timeout=60)
    ids = _send_tasks(producer, names)
    status_log.wait_finals(ids, timeout=180)
    _runbook_kafka_commands_work(sup.env["KAFKA_BOOTSTRAP_SERVERS"], names)
    # a bad value of a setting start_real does not set: the process environment wins over the file
    sup.rewrite_env("LOG_FORMAT=text\nTASK_TIMEOUT_S=-1\n")
    for _ in range(REJECTED_RELOADS):
        assert sup.ask("reload")["ok"] is False
    wait_until(
        lambda: sup.log_text().count("rejected, keeping the old config") == REJECTED_RELOADS,
        timeout=10,
        what="both reloads rejected in the log",
    )
    assert sup.stop(timeout=60) == 0
    status_log.read(1.0)
    truth = _Truth(sup.log_path, status_log.events())

    _runbook_log_filters_find_every_line(sup.log_path, truth)
    pipelines = runbook_pipelines(RUNBOOK.read_text(encoding="utf-8"))
    assert pipelines.keys() == CHECKS.keys(), "a pipeline of the runbook without a check here, or the reverse"
    for title, commands in pipelines.items():
        assert {"docker", "journalctl"} <= {c.split()[0] for c in commands}, f"{title}: Docker and systemd"
        outputs = {run_on(c, sup.log_path) for c in commands}
        assert len(outputs) == 1, f"{title}: Docker and systemd lines disagree: {outputs}"
        CHECKS[title](outputs.pop(), truth)


def runbook_log_filters(text: str) -> dict[str, list[str]]:
    """The ``grep -i WORD`` pipelines of the monitoring section's "Проверка логов", by WORD."""
    section = text.split("#### Проверка логов", 1)[1].split("\n#### ", 1)[0]
    block = re.findall(r"```bash\n(.*?)```", section, flags=re.S)[0]
    found: dict[str, list[str]] = {}
    for line in block.splitlines():
        command = line.split(" # ", 1)[0].strip()
        match = re.search(r"\| grep -i (\w+)$", command)
        if match:
            found.setdefault(match.group(1), []).append(command)
    return found


def _runbook_log_filters_find_every_line(log: Path, truth: _Truth) -> None:
    filters = runbook_log_filters(RUNBOOK.read_text(encoding="utf-8"))
    assert filters.keys() == {"error", "warning"}, filters
    lines = log.read_text(errors="replace").splitlines()
    for word, commands in filters.items():
        assert len(commands) == 2, commands  # a Docker and a systemd line
        outputs = {run_on(c, log) for c in commands}
        assert len(outputs) == 1, f"{word}: Docker and systemd lines disagree"
        shown = outputs.pop().splitlines()
        assert shown == [line for line in lines if word in line.lower()]
        level = " - ".join(truth.level(word.upper())[:1])
        assert level and any(level in line for line in shown), (
            f"no {word.upper()} line found by {commands[0]}"
        )


def runbook_kafka_commands(text: str) -> list[str]:
    """The runbook's ``kafka-topics`` / ``kafka-consumer-groups`` lines aimed at localhost:9092."""
    inline = re.findall(r"`(kafka-(?:topics|consumer-groups) [^`]*)`", text)
    blocks = [
        line.strip()
        for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S)
        for line in block.splitlines()
        if line.strip().startswith(("kafka-topics ", "kafka-consumer-groups "))
    ]
    return sorted({c for c in inline + blocks if "localhost:9092" in c})


def _runbook_kafka_commands_work(bootstrap: str, names: Names) -> None:
    """Each Kafka tool line of the runbook, run as written against the test's broker, group and topic."""
    commands = runbook_kafka_commands(RUNBOOK.read_text(encoding="utf-8"))
    assert len(commands) >= 4, commands
    for command in commands:
        local = command.replace("localhost:9092", bootstrap).replace("llm-worker-group", names.group)
        local = re.sub(r"\btasks_llm\b", names.tasks, local)
        done = subprocess.run(["bash", "-c", local], capture_output=True, text=True, timeout=120, check=False)
        assert done.returncode == 0, f"{command}\n-> {done.stdout}{done.stderr}"
        shown = (
            names.group
            if "consumer-groups" in command
            else names.status
            if "--list" in command
            else names.tasks
        )
        assert shown in done.stdout, f"{command}\n-> {done.stdout}"


def _send_tasks(producer: KafkaProducer, names: Names) -> list[str]:
    ids = []
    for i in range(GOOD):
        ids.append(f"good-{i}")
        send(producer, names.tasks, task_bytes(ids[-1], prompt=f"Task {i}"), ids[-1].encode())
    for i in range(NO_INPUT):
        ids.append(f"noinput-{i}")
        missing = {"bucket": "llm-input", "key": f"{names.prefix}missing-{i}.txt"}
        send(producer, names.tasks, task_bytes(ids[-1], prompt="x", input=missing), ids[-1].encode())
    for i in range(BAD_PARAM):
        ids.append(f"badparam-{i}")
        send(
            producer, names.tasks, task_bytes(ids[-1], prompt="x", params={"max_token": 1}), ids[-1].encode()
        )
    return ids


class _Truth:
    """What the test knows independently of the pipelines: the status events and the log's records."""

    def __init__(self, log: Path, events: list[dict[str, Any]]) -> None:
        self.events = events
        fields = [line.split(" - ") for line in log.read_text(errors="replace").splitlines()]
        self.records = [f for f in fields if len(f) >= 7]

    def level(self, name: str) -> list[str]:
        return [" - ".join(f[6:]) for f in self.records if f[5] == name]

    def statuses(self) -> Counter[int]:
        return Counter(int(e["status"]) for e in self.events)

    def completed_ms(self) -> list[float]:
        return [float(e["processing_ms"]) for e in self.events if e["status"] == 3]


def _errors_last_hour(out: str, truth: _Truth) -> None:
    assert int(out) == len(truth.level("ERROR")) >= REJECTED_RELOADS


def _failed_tasks(out: str, truth: _Truth) -> None:
    assert int(out) == NO_INPUT + BAD_PARAM == truth.statuses()[4]


def _top_error_codes(out: str, truth: _Truth) -> None:
    assert _counted(out) == {"INPUT_NOT_FOUND": NO_INPUT, "INVALID_TASK": BAD_PARAM}


def _top_error_messages(out: str, truth: _Truth) -> None:
    counted = _counted(out)
    assert counted == dict(Counter(truth.level("ERROR")).most_common(10))
    rejected = [m for m in counted if m.startswith("Reload (llmctl) rejected")]
    assert len(rejected) == 1 and counted[rejected[0]] == REJECTED_RELOADS


def _average_time(out: str, truth: _Truth) -> None:
    match = re.fullmatch(r"Average: ([0-9.]+) ms \((\d+) tasks\)\n", out)
    assert match, out
    times = truth.completed_ms()
    assert int(match.group(2)) == len(times) == GOOD
    assert float(match.group(1)) == pytest.approx(sum(times) / len(times), abs=0.1)


def _by_status(out: str, truth: _Truth) -> None:
    counted = {int(code): n for code, n in _counted(out).items()}
    assert counted == dict(truth.statuses())
    assert counted[3] == GOOD and counted[4] == NO_INPUT + BAD_PARAM


def _counted(out: str) -> dict[str, int]:
    """``uniq -c`` output as {value: count}."""
    rows = [line.strip().split(None, 1) for line in out.splitlines() if line.strip()]
    return {value: int(count) for count, value in rows}


CHECKS: dict[str, Callable[[str, _Truth], None]] = {
    "Ошибки за последний час": _errors_last_hour,
    "Проваленные задачи за последний час": _failed_tasks,
    "Топ-10 кодов ошибок задач": _top_error_codes,
    "Топ-10 сообщений уровня ERROR": _top_error_messages,
    "Среднее время обработки задач": _average_time,
    "Количество задач по статусам": _by_status,
}
