"""A single-node KRaft Kafka broker (combined broker and controller) on 127.0.0.1."""

from __future__ import annotations

import base64
import contextlib
import uuid
from collections.abc import Mapping
from pathlib import Path

from kafka.admin import KafkaAdminClient, NewTopic
from kafka.errors import TopicAlreadyExistsError

from devstack.paths import kafka_home
from devstack.procs import ManagedProcess, port_open, wait_until
from devstack.provision import kafka_libs, require_tool
from llm_service.errors import StackError

STARTED_LINE = "Kafka Server started"

# Broker settings for a one-node development cluster. The defaults assume three brokers (offsets
# topic replication 3: consumer groups would never work) and a 3 s initial rebalance delay.
_SERVER_PROPERTIES = """\
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:{controller_port}
listeners=PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller_port}{sasl_listener}
advertised.listeners=PLAINTEXT://127.0.0.1:{port}{sasl_listener}
inter.broker.listener.name=PLAINTEXT
controller.listener.names=CONTROLLER
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT,SASL_PLAINTEXT:SASL_PLAINTEXT
log.dirs={data_dir}
num.partitions=1
offsets.topic.replication.factor=1
offsets.topic.num.partitions=4
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
group.min.session.timeout.ms=1000
num.network.threads=2
num.io.threads=2
# Room for the 1 MB task messages the service must reject cleanly (the default cap is ~1 MB).
message.max.bytes=4194304
replica.fetch.max.bytes=4194304
"""

_LOG4J2 = """\
rootLogger.level = INFO
rootLogger.appenderRef.stdout.ref = STDOUT
appender.stdout.type = Console
appender.stdout.name = STDOUT
appender.stdout.layout.type = PatternLayout
appender.stdout.layout.pattern = [%d] %p %m (%c)%n
logger.kafka.name = kafka
logger.kafka.level = WARN
logger.apache.name = org.apache.kafka
logger.apache.level = WARN
# Keep the line readiness is detected by.
logger.raftserver.name = kafka.server.KafkaRaftServer
logger.raftserver.level = INFO
"""

# The optional SASL_PLAINTEXT listener (KafkaBroker(sasl_port=..., sasl_users=...)): PLAIN users
# checked against a static JAAS list. The PLAINTEXT listener stays for the broker itself and devstack.
_SASL_PROPERTIES = """\
sasl.enabled.mechanisms=PLAIN
listener.name.sasl_plaintext.plain.sasl.jaas.config=\
org.apache.kafka.common.security.plain.PlainLoginModule required {users};
"""

# Serial GC and a fixed 512 MiB heap: this broker shares two cores with workers and tests.
_JVM_FLAGS = ["-Xms512m", "-Xmx512m", "-XX:+UseSerialGC", "-Djava.awt.headless=true"]


def new_cluster_id() -> str:
    """A KRaft cluster id: URL-safe base64 of 16 random bytes, as Kafka's Uuid parses it.

    One starting with '-' is drawn again: StorageTool's argument parser would take it for an option.
    """
    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cluster_id.startswith("-"):
            return cluster_id


class KafkaBroker:
    """One broker; with ``sasl_port`` and ``sasl_users`` (name -> password) also a SASL_PLAINTEXT listener."""

    def __init__(
        self,
        *,
        cache: Path,
        run_dir: Path,
        port: int,
        controller_port: int,
        sasl_port: int | None = None,
        sasl_users: Mapping[str, str] | None = None,
    ) -> None:
        if (sasl_port is None) != (not sasl_users):
            raise ValueError("a SASL listener needs both sasl_port and sasl_users")
        self.cache = cache
        self.dir = run_dir / "kafka"
        self.port = port
        self.controller_port = controller_port
        self.sasl_port = sasl_port
        self.sasl_users = dict(sasl_users or {})
        self.proc = ManagedProcess("kafka", run_dir)

    @property
    def sasl_bootstrap(self) -> str:
        """The SASL_PLAINTEXT listener's address (only with ``sasl_port``)."""
        return f"127.0.0.1:{self.sasl_port}"

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def running(self) -> bool:
        return self.proc.process() is not None

    def start(self, *, timeout: float = 120.0) -> None:
        libs = kafka_libs(self.cache)
        java = require_tool("java")
        for port in (self.port, self.controller_port, *([self.sasl_port] if self.sasl_port else [])):
            if port_open(port):
                raise StackError(f"port {port} (Kafka) is already in use by another process")
        self._write_config()
        classpath = f"{libs}/*"
        if not (self.dir / "data" / "meta.properties").exists():
            cluster_id = new_cluster_id()
            fmt = ManagedProcess("kafka-format", self.dir)
            fmt.start(
                [
                    java,
                    "-Xmx256m",
                    f"-Dlog4j2.configurationFile={self._tools_log4j()}",
                    "-cp",
                    classpath,
                    "kafka.tools.StorageTool",
                    "format",
                    "-t",
                    cluster_id,
                    "-c",
                    str(self.dir / "server.properties"),
                    "--ignore-formatted",
                ]
            )
            wait_until(
                (self.dir / "data" / "meta.properties").exists,
                proc=fmt,
                timeout=60,
                what="Kafka storage format",
            )
            fmt.stop(timeout=10)
        self.proc.log_file.unlink(missing_ok=True)
        self.proc.start(
            [
                java,
                *_JVM_FLAGS,
                f"-Dkafka.logs.dir={self.dir / 'logs'}",
                f"-Dlog4j2.configurationFile={self.dir / 'log4j2.properties'}",
                "-cp",
                classpath,
                "kafka.Kafka",
                str(self.dir / "server.properties"),
            ],
            cwd=self.dir,
        )
        wait_until(self._started, proc=self.proc, timeout=timeout, what="Kafka broker")

    def _started(self) -> bool:
        try:
            return STARTED_LINE in self.proc.log_file.read_text(errors="replace") and port_open(self.port)
        except OSError:
            return False

    def _tools_log4j(self) -> Path:
        return kafka_home(self.cache) / "tools-log4j2.properties"

    def _write_config(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        sasl_listener = f",SASL_PLAINTEXT://127.0.0.1:{self.sasl_port}" if self.sasl_port else ""
        properties = _SERVER_PROPERTIES.format(
            port=self.port,
            controller_port=self.controller_port,
            data_dir=self.dir / "data",
            sasl_listener=sasl_listener,
        )
        if self.sasl_users:
            users = " ".join(f'user_{name}="{password}"' for name, password in self.sasl_users.items())
            properties += _SASL_PROPERTIES.format(users=users)
        (self.dir / "server.properties").write_text(properties)
        (self.dir / "log4j2.properties").write_text(_LOG4J2)

    def stop(self) -> None:
        # Controlled shutdown takes a few seconds; a stuck JVM is killed after 30.
        self.proc.stop(timeout=30)

    def create_topics(self, topics: Mapping[str, int], *, config: Mapping[str, str] | None = None) -> None:
        """Create the topics that do not exist yet (name -> partitions)."""
        admin = KafkaAdminClient(bootstrap_servers=self.bootstrap, client_id="llm-devstack")
        try:
            existing = set(admin.list_topics())
            new = [
                NewTopic(name, partitions, 1, topic_configs=dict(config or {}))
                for name, partitions in topics.items()
                if name not in existing
            ]
            if new:
                # Another client may create one between our list and create.
                with contextlib.suppress(TopicAlreadyExistsError):
                    admin.create_topics(new)
        finally:
            admin.close()
