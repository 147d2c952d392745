"""``llmctl submit`` / ``llmctl wait`` as installed console scripts, and the Python API, against a real
worker on the real stack; plus the pure helpers."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from kafka.partitioner.default import DefaultPartitioner

from llm_service.config import load_settings
from llmctl.api import TaskClient, new_task_id, task_message
from llmctl.cli import build_parser
from llmctl.submit import _params
from llmctl.watch import partition_for
from tests.worker.conftest import Testbed

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "docs"


def test_helpers() -> None:
    assert new_task_id("my report (final).txt").startswith("my-report-final-.txt-")
    assert task_message(task_id="a", prompt="p", model=None) == {"task_id": "a", "prompt": "p"}
    assert _params(["temperature=0.2", "max_tokens=5", "x=word"]) == {
        "temperature": 0.2,
        "max_tokens": 5,
        "x": "word",
    }
    with pytest.raises(ValueError):
        _params(["novalue"])
    args = build_parser().parse_args(["submit", "f.txt", "--prompt", "p", "--wait", "--env-file", "x.env"])
    assert (args.path, args.prompt, args.wait, args.env_file) == (Path("f.txt"), "p", True, Path("x.env"))


def test_partition_for_matches_the_producers_partitioner() -> None:
    class Cluster:
        def topics(self) -> set[str]:
            return {"t"}

        def partitions_for_topic(self, topic: str) -> set[int]:
            return set(range(3))

        def available_partitions_for_topic(self, topic: str) -> set[int]:
            return set(range(3))

    for task_id in ("a-1", "report-42", "Ω"):
        expected = DefaultPartitioner().partition("t", None, task_id.encode(), None, None, Cluster())
        assert partition_for(task_id, 3) == expected


def _llmctl(env: dict[str, str], *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["llmctl", *args], env=env, capture_output=True, text=True, timeout=timeout, check=False
    )


@pytest.mark.stack
def test_submit_a_directory_and_a_file_then_wait(bed: Testbed) -> None:
    env, names = bed.env(), bed.names
    bed.start_worker(env).started()

    many = _llmctl(env, "submit", str(EXAMPLES), "--prompt", "Перескажи документ", "--wait", "--json")
    assert many.returncode == 0, many.stderr
    finals = [json.loads(line) for line in many.stdout.splitlines()]
    assert sorted(Path(f["source"]).name for f in finals) == sorted(p.name for p in EXAMPLES.iterdir())
    assert all(f["status_name"] == "COMPLETED" and f["content"] for f in finals)
    assert "4 tasks: 4 completed, 0 failed, 0 timed out" in many.stderr

    one = _llmctl(
        env,
        "submit",
        str(EXAMPLES / "ru_meeting_notes.txt"),
        "--prompt",
        "Кратко",
        "--wait",
        "--task-id",
        f"{names.group}-one",
    )
    assert one.returncode == 0, one.stderr
    assert one.stdout.startswith("Emulated answer") or one.stdout.strip()

    again = _llmctl(env, "wait", f"{names.group}-one", "--timeout", "30")
    assert (again.returncode, again.stdout) == (0, one.stdout)


@pytest.mark.stack
def test_failures_and_timeouts_have_their_exit_codes(bed: Testbed) -> None:
    env = bed.env()
    bed.start_worker(env).started()
    failed = _llmctl(env, "submit", "--prompt", "hi", "--param", "max_token=5", "--wait", "--timeout", "60")
    assert failed.returncode == 1
    assert "FAILED: INVALID_TASK: unknown model parameter 'max_token'" in failed.stderr
    unknown = _llmctl(env, "wait", "never-sent-task", "--timeout", "2", "--since-hours", "0.01")
    assert unknown.returncode == 3 and "no final status for task never-sent-task" in unknown.stderr
    bad_config = _llmctl({**env, "KAFKA_BOOTSTRAP_SERVERS": "nonsense"}, "wait", "x")
    assert bad_config.returncode == 2 and "KAFKA_BOOTSTRAP_SERVERS" in bad_config.stderr


@pytest.mark.stack
def test_python_api(bed: Testbed) -> None:
    env, names = bed.env(), bed.names
    bed.start_worker(env).started()
    settings = load_settings(env)
    with TaskClient(settings=settings) as client:
        task_id = new_task_id("api")
        ref = client.upload("Короткий текст.".encode("cp1251"), key=f"{names.prefix}api.txt")
        assert (
            client.submit(task_id=task_id, prompt="Summarise", input=ref, metadata={"from": "api"}) == task_id
        )
        final = client.wait(task_id, timeout=60)
        assert final.ok and final.event["metadata"] == {"from": "api"}
        result = client.result(final)
        assert result is not None and result["task_id"] == task_id and result["content"]
