"""The whole local stack: broker, S3 server and emulator, with the topics and buckets the service uses.

``Stack.up`` is idempotent: a component that is already running and answering is left alone. The
ports a stack was started with are saved in its state folder, so ``env``, ``status`` and ``down``
need no flags. Tests start a private stack on free ports in a temporary folder.
"""

from __future__ import annotations

import json
import logging
import subprocess
from dataclasses import asdict, dataclass
from pathlib import Path

from devstack.broker import KafkaBroker
from devstack.emulator import AUTH_KEY, Emulator
from devstack.kafka_tools import tool_command
from devstack.procs import free_port
from devstack.s3 import ACCESS_KEY, SECRET_KEY, S3Server
from llm_service.config import Settings
from llm_service.errors import StackError

log = logging.getLogger(__name__)

TASK_PARTITIONS = 8
EVENT_PARTITIONS = 3


@dataclass(frozen=True)
class StackPorts:
    kafka: int = 9092
    kafka_controller: int = 9093
    s3: int = 9000
    emulator: int = 8090

    @classmethod
    def free(cls) -> StackPorts:
        """Ports nobody listens on now, for a private test stack."""
        return cls(kafka=free_port(), kafka_controller=free_port(), s3=free_port(), emulator=free_port())


class Stack:
    def __init__(
        self,
        *,
        cache: Path,
        state_dir: Path,
        ports: StackPorts | None = None,
        emulator_args: tuple[str, ...] = (),
    ) -> None:
        self.cache = cache
        self.state_dir = state_dir
        self.ports = ports or self._saved_ports() or StackPorts()
        self.broker = KafkaBroker(
            cache=cache, run_dir=state_dir, port=self.ports.kafka, controller_port=self.ports.kafka_controller
        )
        self.s3 = S3Server(cache=cache, run_dir=state_dir, port=self.ports.s3)
        self.emulator = Emulator(run_dir=state_dir, port=self.ports.emulator, extra_args=emulator_args)

    @property
    def _ports_file(self) -> Path:
        return self.state_dir / "stack.json"

    def _saved_ports(self) -> StackPorts | None:
        try:
            return StackPorts(**json.loads(self._ports_file.read_text()))
        except (OSError, ValueError, TypeError):
            return None

    def up(self) -> list[str]:
        """Start what is not running, create missing topics and buckets; returns what was started."""
        self.state_dir.mkdir(parents=True, exist_ok=True)
        running_ports = self._saved_ports()
        if running_ports and running_ports != self.ports and self.status()["any"]:
            raise StackError(
                f"a stack is already running in {self.state_dir} on other ports "
                f"({asdict(running_ports)}); run `llm-devstack down` first"
            )
        self._ports_file.write_text(json.dumps(asdict(self.ports)))
        started = []
        for name, component in (
            ("kafka", self.broker),
            ("s3", self.s3),
            ("gigachat-emulator", self.emulator),
        ):
            if not component.running():
                log.info("starting %s", name)
                component.start()
                started.append(name)
        self._provision_names()
        return started

    def _provision_names(self) -> None:
        defaults = Settings()
        self.broker.create_topics(
            {
                defaults.kafka_tasks_topic: TASK_PARTITIONS,
                defaults.kafka_status_topic: EVENT_PARTITIONS,
                defaults.kafka_dlq_topic: EVENT_PARTITIONS,
            }
        )
        self.s3.create_buckets(defaults.minio_input_bucket, defaults.minio_output_bucket)

    def down(self) -> None:
        """Stop every process of the stack (data stays in the state folder)."""
        for component in (self.emulator, self.s3, self.broker):
            component.stop()

    def status(self) -> dict[str, bool]:
        states = {
            "kafka": self.broker.running(),
            "s3": self.s3.running(),
            "gigachat-emulator": self.emulator.running(),
        }
        return {**states, "any": any(states.values())}

    def env(self) -> dict[str, str]:
        """The environment that points the service at this stack (the emulator as GigaChat)."""
        return {
            "KAFKA_BOOTSTRAP_SERVERS": self.broker.bootstrap,
            "MINIO_ENDPOINT": self.s3.endpoint,
            "MINIO_ACCESS_KEY": ACCESS_KEY,
            "MINIO_SECRET_KEY": SECRET_KEY,
            "MINIO_SECURE": "false",
            "GIGACHAT_AUTH_URL": f"{self.emulator.url}/api/v2/oauth",
            "GIGACHAT_API_URL": f"{self.emulator.url}/api/v1",
            "GIGACHAT_AUTH_KEY": AUTH_KEY,
            "GIGACHAT_VERIFY_SSL": "false",
        }

    # Helpers for tests and scripts.

    @property
    def kafka_bootstrap(self) -> str:
        return self.broker.bootstrap

    @property
    def s3_endpoint(self) -> str:
        return self.s3.endpoint

    s3_access_key = ACCESS_KEY
    s3_secret_key = SECRET_KEY

    @property
    def emulator_url(self) -> str:
        return self.emulator.url

    def create_topic(self, name: str, partitions: int = 1, config: dict[str, str] | None = None) -> None:
        self.broker.create_topics({name: partitions}, config=config)

    def kafka_tool(self, tool: str, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        """Run a Kafka command-line tool (``kafka-topics``, ``kafka-consumer-groups``) from the cache."""
        argv = tool_command(tool, list(args), cache=self.cache)
        return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
