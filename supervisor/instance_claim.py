"""The start-up check that no other live supervisor holds our WORKER_INSTANCE_PREFIX in the group.

Runs in the supervisor process, once, before the first fork. Two supervisors with one prefix would
give their workers the same ``group_instance_id``s, and every join of one would fence the other
(docs/scaling.md). The Kafka calls run in :mod:`supervisor.instance_probe` (the supervisor holds no
Kafka client); this module starts it with a bounded deadline and decides. A broker that does not
answer in time skips the check with a warning: start-up never blocks on Kafka, and a duplicate that
slips through is caught later as a fenced slot (the ``instance_conflict`` alert).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import subprocess
import sys

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


def check_prefix(settings: Settings, prefix: str) -> Claim:
    """Ask the group who holds ``prefix``, waiting out holders left by a dead previous run of this host."""
    wait_s = settings.kafka_session_timeout_ms / 1000 + WAIT_MARGIN_S
    argv = [
        sys.executable,
        "-m",
        "supervisor.instance_probe",
        f"--bootstrap={settings.kafka_bootstrap_servers}",
        f"--group={settings.kafka_group_id}",
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
