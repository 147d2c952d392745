"""First-use provisioning: Kafka jars from Maven Central and the versitygw binary from the Go proxy.

Both land in the cache (see paths.py) and are reused afterwards. A file lock serialises concurrent
provisioning (two test sessions started at once must not both half-write the same folder), and each
artefact is built in a temporary folder and renamed into place, so an interrupted run leaves nothing
that looks complete.
"""

from __future__ import annotations

import fcntl
import logging
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from importlib import resources
from pathlib import Path

from devstack.paths import (
    KAFKA_VERSION,
    VERSITYGW_MODULE,
    VERSITYGW_VERSION,
    kafka_home,
    versitygw_binary,
)
from llm_service.errors import StackError

log = logging.getLogger(__name__)

# Pinned by full coordinates: Maven 3.8 would otherwise pick a plugin version by itself.
_COPY_DEPENDENCIES = "org.apache.maven.plugins:maven-dependency-plugin:3.8.1:copy-dependencies"

TOOLS_LOG4J2 = """\
# Kafka command-line tools: warnings and errors only, on stderr (as the release's tools-log4j2.yaml).
rootLogger.level = WARN
rootLogger.appenderRef.stderr.ref = STDERR
appender.stderr.type = Console
appender.stderr.name = STDERR
appender.stderr.target = SYSTEM_ERR
appender.stderr.layout.type = PatternLayout
appender.stderr.layout.pattern = [%d] %p %m (%c)%n
"""

_INSTALL_HINTS = {
    "java": "Java 17+: `apt-get install openjdk-17-jre-headless`",
    "mvn": "Maven: `apt-get install maven`",
    "go": "Go 1.25+: see https://go.dev/doc/install (or `apt-get install golang` if new enough)",
}


def require_tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise StackError(f"`{name}` is not on PATH; install {_INSTALL_HINTS.get(name, name)}")
    return path


@contextmanager
def _locked(cache: Path) -> Iterator[None]:
    cache.mkdir(parents=True, exist_ok=True)
    with open(cache / ".provision.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def _run(argv: list[str], *, env: dict[str, str] | None = None, what: str) -> None:
    log.info("%s: %s", what, " ".join(argv))
    done = subprocess.run(argv, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        tail = "\n".join((done.stdout + done.stderr).strip().splitlines()[-25:])
        raise StackError(f"{what} failed (exit {done.returncode}):\n{tail}")


def kafka_libs(cache: Path) -> Path:
    """The folder of Kafka's jars (broker, tools, log4j binding); downloaded with Maven on first use."""
    home = kafka_home(cache)
    libs = home / "libs"
    if (home / ".complete").exists():
        return libs
    with _locked(cache):
        if (home / ".complete").exists():
            return libs
        mvn = require_tool("mvn")
        require_tool("java")
        home.mkdir(parents=True, exist_ok=True)
        pom = home / "pom.xml"
        pom.write_text(resources.files("devstack").joinpath("pom.xml").read_text())
        staging = Path(tempfile.mkdtemp(prefix="libs-", dir=home))
        _run(
            [
                mvn,
                "-B",
                "-q",
                "-f",
                str(pom),
                f"-Dmaven.repo.local={cache / 'm2'}",
                f"-Dkafka.version={KAFKA_VERSION}",
                _COPY_DEPENDENCIES,
                "-DincludeScope=runtime",
                f"-DoutputDirectory={staging}",
            ],
            what=f"downloading Kafka {KAFKA_VERSION} jars from Maven Central",
        )
        shutil.rmtree(libs, ignore_errors=True)
        staging.rename(libs)
        (home / "tools-log4j2.properties").write_text(TOOLS_LOG4J2)
        (home / ".complete").write_text(KAFKA_VERSION + "\n")
    return libs


def versitygw(cache: Path) -> Path:
    """The versitygw S3 server binary; built with ``go install`` on first use."""
    binary = versitygw_binary(cache)
    if binary.exists():
        return binary
    with _locked(cache):
        if binary.exists():
            return binary
        go = require_tool("go")
        staging = Path(tempfile.mkdtemp(prefix="gobin-", dir=cache))
        env = dict(os.environ, GOBIN=str(staging), CGO_ENABLED="0")
        _run(
            [go, "install", f"{VERSITYGW_MODULE}@{VERSITYGW_VERSION}"],
            env=env,
            what=f"building versitygw {VERSITYGW_VERSION} with go install",
        )
        binary.parent.mkdir(parents=True, exist_ok=True)
        (staging / "versitygw").rename(binary)
        shutil.rmtree(staging, ignore_errors=True)
    return binary


def provision_all(cache: Path) -> None:
    kafka_libs(cache)
    versitygw(cache)
