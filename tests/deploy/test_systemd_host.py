"""The systemd unit run by a real systemd: a bookworm container with systemd as PID 1 (podman --systemd).

The unit is installed as shipped (deploy/systemd/llm-service.service, all hardening on) over the
production install from the service's image. Proven against the real stack: ``systemctl start`` returns
once the supervisor reports READY, an operator's ``llmctl`` finds /run/llm-service/ without flags,
a task completes, ``systemctl reload`` re-reads the settings file, and ``systemctl stop`` lets a task in
flight finish and ends with exit 0.

Not tested here: the watchdog firing (it would take minutes) and the stop job's completion, which on a
cgroup v1 host (like the test machines) systemd in a container cannot see.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from kafka import KafkaProducer

from devstack.stack import Stack
from tests.deploy.podman import BASE_IMAGE, podman
from tests.waiting import wait_until
from tests.worker.harness import EmulatorControl, Names, StatusLog, send, task_bytes

HERE = Path(__file__).resolve().parent
UNIT = HERE.parents[1] / "deploy" / "systemd" / "llm-service.service"
HOST_IMAGE = "localhost/llm-service-systemd-host:test"


@pytest.fixture(scope="session")
def host_image(podman_environ: dict[str, str], image: str) -> str:
    done = podman(
        podman_environ,
        "build",
        "--format",
        "docker",
        "--build-arg",
        f"SERVICE_IMAGE={image}",
        "--build-arg",
        f"BASE={BASE_IMAGE}",
        "-f",
        str(HERE / "systemd-host.Containerfile"),
        "-t",
        HOST_IMAGE,
        str(HERE),
        timeout=600,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr
    return HOST_IMAGE


class Host:
    """One container with systemd as PID 1 and /etc/llm-service bind-mounted from the test's folder."""

    def __init__(self, env: dict[str, str], *, image: str, etc: Path) -> None:
        self.env = env
        self.etc = etc
        self.name = f"llm-systemd-test-{uuid.uuid4().hex[:8]}"
        run = podman(
            env,
            "run",
            "-d",
            "--name",
            self.name,
            "--systemd=always",
            "--network",
            "host",
            "-v",
            f"{UNIT}:/etc/systemd/system/llm-service.service:ro",
            "-v",
            f"{etc}:/etc/llm-service:ro",
            image,
        )
        assert run.returncode == 0, run.stderr

    def sh(self, command: str, *, user: str = "root", timeout: float = 120) -> tuple[int, str]:
        done = podman(self.env, "exec", "--user", user, self.name, "sh", "-c", command, timeout=timeout)
        return done.returncode, done.stdout + done.stderr

    def show(self, *props: str) -> dict[str, str]:
        _, out = self.sh(f"systemctl show -p {','.join(props)} llm-service")
        return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)

    def journal(self) -> str:
        return self.sh("journalctl -u llm-service --no-pager -o cat")[1]

    def operator_status(self) -> dict[str, object] | None:
        code, out = self.sh("cd && llmctl status --json", user="ops")
        return json.loads(out) if code == 0 else None


@pytest.fixture
def host(
    podman_environ: dict[str, str], host_image: str, stack: Stack, names: Names, tmp_path: Path
) -> Iterator[Host]:
    etc = tmp_path / "etc"
    etc.mkdir()
    settings = {
        **stack.env(),
        **names.env(),
        "WORKER_PROCESSES": "1",
        "WORKER_DRAIN_TIMEOUT": "30",
        "KAFKA_SESSION_TIMEOUT_MS": "6000",
        "LIMIT_DISK_FREE_MB": "1",
        "LIMIT_CPU_PERCENT": "100",  # the shared test machine is often at 100% CPU
        "ALERT_CPU_PERCENT": "100",
    }
    (etc / "llm-service.env").write_text("".join(f"{k}={v}\n" for k, v in settings.items()))
    box = Host(podman_environ, image=host_image, etc=etc)
    try:
        wait_until(
            lambda: box.sh("systemctl is-system-running")[1].strip() in {"running", "degraded"},
            timeout=60,
            what="systemd up in the container",
        )
        yield box
    finally:
        podman(podman_environ, "rm", "-f", "-t", "0", box.name)


@pytest.mark.stack
@pytest.mark.timeout(900)
def test_the_unit_under_systemd_starts_reloads_and_stops_draining(
    host: Host, names: Names, producer: KafkaProducer, status_log: StatusLog, emulator: EmulatorControl
) -> None:
    # Type=notify: start returns only after the supervisor's READY=1.
    code, out = host.sh("systemctl start llm-service", timeout=180)
    assert code == 0, out + host.journal()[-3000:]
    shown = host.show("ActiveState", "SubState", "StatusText", "WatchdogUSec")
    assert (shown["ActiveState"], shown["SubState"]) == ("active", "running"), shown
    assert shown["StatusText"].startswith("1/1 workers running"), shown
    assert shown["WatchdogUSec"] == "1min"

    code, out = host.sh("cd && llmctl health", user="ops")
    assert (code, out.strip()) == (0, "ok"), f"an operator's llmctl did not reach the service: {out}"
    assert f"Worker started, listening to Kafka topic '{names.tasks}'..." in host.journal()

    send(producer, names.tasks, task_bytes("sd-1", prompt="Say hi"), key=b"sd-1")
    assert status_log.wait_finals(["sd-1"], timeout=120)["sd-1"][0]["status_name"] == "COMPLETED"

    # The settings file is read by the service itself, so a reload picks up the change.
    env_file = host.etc / "llm-service.env"
    env_file.write_text(env_file.read_text().replace("WORKER_PROCESSES=1", "WORKER_PROCESSES=2"))
    code, out = host.sh("systemctl reload llm-service", timeout=120)
    assert code == 0, out
    wait_until(
        lambda: (s := host.operator_status()) is not None and len(s["workers"]) == 2,  # type: ignore[arg-type]
        timeout=120,
        what="2 workers after systemctl reload",
    )

    # A broken settings file: the reload fails visibly and the service keeps its old config.
    good = env_file.read_text()
    env_file.write_text(good.replace("WORKER_PROCESSES=2", "WORKER_PROCESSES=many"))
    code, out = host.sh("systemctl reload llm-service", timeout=120)
    assert code != 0, out
    assert host.show("ActiveState")["ActiveState"] == "active"
    assert "Reload (llmctl) rejected, keeping the old config: WORKER_PROCESSES='many'" in host.journal()
    env_file.write_text(good)

    emulator.config(latency=8.0)
    send(producer, names.tasks, task_bytes("sd-2", prompt="Take your time"), key=b"sd-2")
    wait_until(lambda: _processing(status_log, "sd-2"), timeout=60, what="sd-2 PROCESSING")
    # --no-block: systemd in a container on a cgroup v1 host gets no cgroup-empty notification, so the
    # stop job itself would wait out TimeoutStopSec; what matters is how the supervisor ended.
    code, out = host.sh("systemctl stop --no-block llm-service")
    assert code == 0, out

    # MainPID goes to 0 a moment before systemd records how the process ended (ExecMainCode 0 = not yet).
    def exit_recorded() -> bool:
        shown = host.show("MainPID", "ExecMainCode")
        return shown.get("MainPID") == "0" and shown.get("ExecMainCode", "0") != "0"

    try:
        wait_until(exit_recorded, timeout=120, what="the supervisor to exit and systemd to record how")
    except AssertionError as exc:  # say why: the journal shows where the stop got stuck
        shown = host.show("MainPID", "ExecMainCode")
        raise AssertionError(f"{exc}\n{shown}\n{host.journal()[-6000:]}") from None
    shown = host.show("ExecMainCode", "ExecMainStatus")
    assert shown == {"ExecMainCode": "1", "ExecMainStatus": "0"}, f"not a clean exit 0: {shown}"
    assert status_log.wait_finals(["sd-2"], timeout=30)["sd-2"][0]["status_name"] == "COMPLETED"
    journal = host.journal()
    assert journal.index("Task sd-2 completed:") > journal.index("SIGTERM: graceful stop (step 1 of 2)")
    assert "Supervisor stopped" in journal


def _processing(status_log: StatusLog, task_id: str) -> bool:
    status_log.read()
    return any(e["task_id"] == task_id and e["status"] == 2 for e in status_log.events())
