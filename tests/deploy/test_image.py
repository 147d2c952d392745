"""The Docker image, built and run with podman against the real stack (host network).

What an operator relies on: the supervisor is PID 1 as a non-root user, ``docker logs`` shows the
runbook's log lines, a task goes through, ``docker stop`` drains the task in flight and exits 0, the
health check passes, ``llmctl`` inside the container finds the socket, and no development tool is in
the image.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from kafka import KafkaProducer

from devstack.stack import Stack
from tests.deploy.podman import podman
from tests.waiting import wait_until
from tests.worker.harness import EmulatorControl, Names, StatusLog, send, task_bytes

DRAIN_TIMEOUT_S = 30
STOP_MARGIN_S = 5


class Container:
    """One ``podman run -d`` of the image; removed (with force) at the end."""

    def __init__(self, env: dict[str, str], *, image: str, service_env: dict[str, str], tmp: Path) -> None:
        self.env = env
        self.name = f"llm-service-test-{uuid.uuid4().hex[:8]}"
        env_file = tmp / "container.env"
        env_file.write_text("".join(f"{k}={v}\n" for k, v in service_env.items()))
        run = podman(
            env, "run", "-d", "--name", self.name, "--network", "host", "--env-file", str(env_file), image
        )
        assert run.returncode == 0, run.stderr

    def logs(self) -> str:
        done = podman(self.env, "logs", self.name)
        return done.stdout + done.stderr

    def exec(self, *argv: str) -> tuple[int, str]:
        done = podman(self.env, "exec", self.name, *argv)
        return done.returncode, done.stdout + done.stderr

    def state(self) -> dict[str, object]:
        done = podman(self.env, "inspect", "--format", "{{json .State}}", self.name)
        state: dict[str, object] = json.loads(done.stdout)
        return state

    def remove(self) -> None:
        podman(self.env, "rm", "-f", "-t", "0", self.name)


@pytest.fixture
def container(
    podman_environ: dict[str, str], image: str, stack: Stack, names: Names, tmp_path: Path
) -> Iterator[Container]:
    service_env = {
        **stack.env(),
        **names.env(),
        "WORKER_PROCESSES": "1",
        "WORKER_DRAIN_TIMEOUT": str(DRAIN_TIMEOUT_S),
        "SUPERVISOR_STOP_MARGIN_S": str(STOP_MARGIN_S),
        "KAFKA_SESSION_TIMEOUT_MS": "6000",
        "LIMIT_DISK_FREE_MB": "1",
        # The test machine is shared and often at 100% CPU: no load shedding or CPU alert here, so
        # health and intake follow what the test does.
        "LIMIT_CPU_PERCENT": "100",
        "ALERT_CPU_PERCENT": "100",
    }
    box = Container(podman_environ, image=image, service_env=service_env, tmp=tmp_path)
    try:
        yield box
    finally:
        box.remove()


@pytest.mark.stack
@pytest.mark.timeout(900)  # the first run builds the base (~1 min) and the image (~1.5 min)
def test_image_runs_the_service_and_stop_drains(
    container: Container,
    names: Names,
    producer: KafkaProducer,
    status_log: StatusLog,
    emulator: EmulatorControl,
) -> None:
    started = f"Worker started, listening to Kafka topic '{names.tasks}'..."
    wait_until(lambda: started in container.logs(), timeout=120, what="the worker's start line in logs")
    wait_until(
        lambda: "Supervisor ready: 1 worker(s) running" in container.logs(), timeout=60, what="the ready line"
    )

    pid1 = container.exec("cat", "/proc/1/cmdline")[1]
    assert "llm-supervisor" in pid1, f"PID 1 is {pid1!r}"
    assert container.exec("id", "-u")[1].strip() == "10001"
    code, found = container.exec("sh", "-c", "command -v llm-devstack kafka-topics kafka-consumer-groups")
    assert code != 0 and not found.strip(), f"development tools in the image: {found}"
    wait_until(lambda: _healthy(container), timeout=120, what="podman healthcheck run healthy")
    code, status = container.exec("llmctl", "status", "--json")
    assert code == 0 and json.loads(status)["health"] == "ok", status
    # Degraded (here: intake paused by llmctl drain) is still healthy for the container runtime.
    assert container.exec("llmctl", "drain")[0] == 0
    wait_until(lambda: container.exec("llmctl", "health")[0] == 1, timeout=60, what="health degraded")
    wait_until(lambda: _healthy(container), timeout=120, what="podman healthcheck run healthy")
    assert container.exec("llmctl", "resume")[0] == 0
    wait_until(lambda: container.exec("llmctl", "health")[0] == 0, timeout=60, what="health ok again")

    send(producer, names.tasks, task_bytes("img-1", prompt="Say hi"), key=b"img-1")
    assert status_log.wait_finals(["img-1"], timeout=120)["img-1"][0]["status_name"] == "COMPLETED"
    wait_until(lambda: "Task img-1 completed:" in container.logs(), timeout=30, what="the completed line")
    logs = container.logs()
    for line in (
        "Processing task img-1 with worker ",
        "Task img-1 processed in ",
        "Status 3 sent for task img-1",
    ):
        assert line in logs, f"{line!r} missing from podman logs"

    # A slow model call is in flight when the stop comes: the drain lets it finish.
    emulator.config(latency=20.0)  # outlasts a slow stop command on a busy host, inside the 30 s drain
    send(producer, names.tasks, task_bytes("img-2", prompt="Take your time"), key=b"img-2")
    wait_until(lambda: _processing(status_log, "img-2"), timeout=60, what="img-2 PROCESSING")
    stop = podman(
        container.env, "stop", "-t", str(DRAIN_TIMEOUT_S + STOP_MARGIN_S + 10), container.name, timeout=120
    )
    assert stop.returncode == 0, stop.stderr
    assert container.state()["ExitCode"] == 0
    assert status_log.wait_finals(["img-2"], timeout=30)["img-2"][0]["status_name"] == "COMPLETED"
    logs = container.logs()
    stopping = logs.index("SIGTERM: graceful stop (step 1 of 2): SIGTERM to 1 worker(s)")
    assert logs.index("Task img-2 completed:") > stopping, "img-2 finished before the stop: no drain seen"
    assert logs.rstrip().endswith("Supervisor stopped"), logs[-2000:]


def _processing(status_log: StatusLog, task_id: str) -> bool:
    status_log.read()
    return any(e["task_id"] == task_id and e["status"] == 2 for e in status_log.events())


def _healthy(container: Container) -> bool:
    """One ``podman healthcheck run``; on a loaded machine the check itself may time out, so callers poll."""
    return podman(container.env, "healthcheck", "run", container.name).returncode == 0
