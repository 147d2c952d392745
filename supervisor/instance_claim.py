"""The start-up check that no other live supervisor holds our WORKER_INSTANCE_PREFIX in the group.

Runs in the supervisor process, once, before the first fork. Two supervisors with one prefix would
give their workers the same ``group_instance_id``s, and every join of one would fence the other
(docs/scaling.md). The Kafka calls run in :mod:`supervisor.instance_probe` (the supervisor holds no
Kafka client); this module starts it with a bounded deadline and decides. A broker that does not
answer in time skips the check with a warning: start-up never blocks on Kafka, and a duplicate that
slips through is caught later as a fenced slot (the ``instance_conflict`` alert).

A restart of this same supervisor must not wait for its own leftovers to expire (static membership
exists so that a restart takes the slots back at once). So each run records its prefix, group and pid
beside its socket (``<SUPERVISOR_SOCKET>.instance``); when the record names our prefix and group and
a pid that is gone (or is ours: PID 1 in a restarted container), the holders are that run's, and the
check is skipped. Without a record (a fresh container) the wait applies: slower, never wrong.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import subprocess
import sys
from pathlib import Path

from llm_service.config import Settings

log = logging.getLogger(__name__)

CONNECT_TIMEOUT_S = 5.0  # one admin request; the probe retries a coordinator election within it
WAIT_MARGIN_S = 3.0  # past the session timeout: a dead holder has surely expired by then


@dataclasses.dataclass(frozen=True, kw_only=True)
class Claim:
    """What the check found: ``holders`` non-empty means a live process holds the prefix."""

    holders: tuple[str, ...] = ()
    skipped: str = ""  # why the check could not be made (the broker did not answer...)

    @property
    def refused(self) -> bool:
        return bool(self.holders)


def record_path(settings: Settings) -> Path:
    return Path(f"{settings.supervisor_socket}.instance")


def previous_run_gone(path: Path, *, prefix: str, group: str, pid: int) -> int | None:
    """The pid of this supervisor's previous run if ``path`` records one that held ``prefix`` and is gone."""
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
        old = int(record["pid"])
        if (record["prefix"], record["group"]) != (prefix, group):
            return None
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if old == pid:
        return old  # our own pid: a previous run in a container restarted as PID 1
    return old if _gone(old) else None


def _gone(pid: int) -> bool:
    """True when no process has ``pid``; False when one may (alive, another user's, or a bad number)."""
    if pid <= 0:
        return False  # kill(0 or -n) would probe a process group, not the recorded process
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except (PermissionError, OverflowError):
        return False  # alive and another user's; or no process could have such a pid (a damaged record)
    return False


def write_record(path: Path, *, prefix: str, group: str, pid: int) -> None:
    """Best effort: without it the next restart only waits out the session timeout."""
    temp = path.with_name(f"{path.name}.{pid}.tmp")
    with contextlib.suppress(OSError):
        temp.write_text(json.dumps({"prefix": prefix, "group": group, "pid": pid}), encoding="utf-8")
        temp.replace(path)


def check_prefix(settings: Settings, prefix: str) -> Claim:
    """Ask the group who holds ``prefix``, waiting out holders left by a dead previous run of this host."""
    wait_s = settings.kafka_session_timeout_ms / 1000 + WAIT_MARGIN_S
    argv = [
        sys.executable,
        "-m",
        "supervisor.instance_probe",
        f"--prefix={prefix}",
        f"--wait={wait_s}",
        f"--timeout={CONNECT_TIMEOUT_S}",
    ]
    log.info(
        "Checking that no live supervisor holds WORKER_INSTANCE_PREFIX=%s in group %s",
        prefix,
        settings.kafka_group_id,
    )
    try:
        done = subprocess.run(
            argv,
            # The settings go through the environment (not argv, which `ps` shows): the brokers, the
            # group and the Kafka security settings, SASL password included (as for the lag probe).
            env={**os.environ, **settings.as_environ()},
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=wait_s + 4 * CONNECT_TIMEOUT_S,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return Claim(skipped="the broker did not answer in time")
    return _read(done.stdout)


def _read(out: bytes) -> Claim:
    try:
        reply = json.loads(out.decode("utf-8", errors="replace").strip().splitlines()[-1])
    except (ValueError, IndexError):
        return Claim(skipped=f"the probe printed no answer ({out[-200:]!r})")
    if not isinstance(reply, dict) or "error" in reply:
        return Claim(skipped=str(reply.get("error") if isinstance(reply, dict) else reply))
    seen, holders = reply.get("seen") or [], reply.get("holders") or []
    if seen and not holders:
        log.info("Members %s (a previous run of this host) expired; starting", ", ".join(map(str, seen)))
    return Claim(holders=tuple(str(h) for h in holders))
