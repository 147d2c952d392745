"""``llmctl audit [--since 7d]``: the runbook's weekly integrity check of the status topic and S3.

Checks, for the tasks with status events in the window: every task has exactly one final status;
every COMPLETED task's result object exists (a stat of the object named in its status); a task with
no final status at all is reported once its last event is older than ``--grace`` seconds (default
TASK_TIMEOUT_S plus WORKER_DRAIN_TIMEOUT: by then it should have ended). Exit 0 when all holds,
1 with one line per problem when not, 2 when the topic or S3 could not be read, 3 when the read hit
``--timeout``.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import defaultdict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from typing import Any

from minio import Minio
from minio.error import S3Error
from urllib3.exceptions import HTTPError

from llm_service.clients import minio_client
from llm_service.task_status import TaskStatus
from llmctl.history import History
from llmctl.stats import INCOMPLETE, UNREADABLE, add_window_options, read_window

PROBLEMS = 1
STAT_THREADS = 8
_MISSING = frozenset({"NoSuchKey", "NoSuchBucket", "NoSuchObject"})

Exists = Callable[[str, str], bool]


def register(subparsers: Any, parents: list[argparse.ArgumentParser]) -> None:
    audit = subparsers.add_parser(
        "audit", parents=parents, help="integrity check: one final status per task, result objects exist"
    )
    add_window_options(audit)
    audit.add_argument("--grace", type=float, help="seconds after which a task must have ended")
    audit.set_defaults(handler=cmd_audit)


def cmd_audit(args: argparse.Namespace) -> int:
    window = read_window(args, "audit")
    if isinstance(window, int):
        return window
    settings, history = window
    grace = args.grace if args.grace is not None else settings.task_timeout_s + settings.worker_drain_timeout
    try:
        found = objects_present(minio_client(settings, pool_size=STAT_THREADS), history.events)
        problems = find_problems(
            history.events, exists=lambda b, k: found[(b, k)], now=time.time(), grace_s=grace
        )
    except (S3Error, HTTPError, OSError) as exc:
        print(f"llmctl audit: cannot check result objects: {type(exc).__name__}: {exc}", file=sys.stderr)
        return UNREADABLE
    return _report(history, problems, args)


def objects_present(s3: Minio, events: list[dict[str, Any]]) -> dict[tuple[str, str], bool]:
    """Whether each result object named by a COMPLETED status exists; stats run STAT_THREADS at a time
    (a week of tasks is many objects; the minio client is thread-safe)."""
    refs = sorted(
        {
            (str(ref["bucket"]), str(ref["key"]))
            for e in events
            if e.get("status") == TaskStatus.COMPLETED
            and isinstance(ref := e.get("result"), dict)
            and ref.get("bucket")
            and ref.get("key")
        }
    )

    def exists(ref: tuple[str, str]) -> bool:
        try:
            s3.stat_object(*ref)
        except S3Error as exc:
            if exc.code in _MISSING:
                return False
            raise
        return True

    with ThreadPoolExecutor(max_workers=STAT_THREADS, thread_name_prefix="audit-stat") as pool:
        return dict(zip(refs, pool.map(exists, refs), strict=True))


def _report(history: History, problems: list[str], args: argparse.Namespace) -> int:
    tasks = len({e["task_id"] for e in history.events})
    for line in problems:
        print(line)
    verdict = f"{len(problems)} problems" if problems else "ok"
    print(f"audit {verdict}: {tasks} tasks, {len(history.events)} status events", file=sys.stderr)
    if not history.complete:
        print(
            f"llmctl audit: stopped reading after {args.timeout:g} s; not every task was checked",
            file=sys.stderr,
        )
        return PROBLEMS if problems else INCOMPLETE
    return PROBLEMS if problems else 0


def find_problems(events: list[dict[str, Any]], *, exists: Exists, now: float, grace_s: float) -> list[str]:
    """One line per problem, by task id (pure apart from ``exists``; the tests feed it directly)."""
    by_task: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for event in events:
        by_task[event["task_id"]].append(event)
    problems: list[str] = []
    for task_id in sorted(by_task):
        problems += _task_problems(task_id, by_task[task_id], exists, now, grace_s)
    return problems


def _task_problems(
    task_id: str, events: list[dict[str, Any]], exists: Exists, now: float, grace_s: float
) -> list[str]:
    finals = [e for e in events if e.get("status") in (TaskStatus.COMPLETED, TaskStatus.FAILED)]
    if not finals:
        age = now - _epoch(events[-1].get("ts"), now)
        if age <= grace_s:
            return []
        last = _name(events[-1].get("status"))
        return [f"{task_id}: no final status (last {last}, {age:.0f} s ago)"]
    found = []
    if len(finals) > 1:
        names = ", ".join(_name(e.get("status")) for e in finals)
        found.append(f"{task_id}: {len(finals)} final statuses ({names})")
    completed = next((e for e in finals if e.get("status") == TaskStatus.COMPLETED), None)
    if completed is not None:
        found += _result_problem(task_id, completed.get("result"), exists)
    return found


def _result_problem(task_id: str, ref: Any, exists: Exists) -> list[str]:
    if not isinstance(ref, dict) or not ref.get("bucket") or not ref.get("key"):
        return [f"{task_id}: COMPLETED without a result reference"]
    if exists(str(ref["bucket"]), str(ref["key"])):
        return []
    return [f"{task_id}: COMPLETED but result object {ref['bucket']}/{ref['key']} is missing"]


def _name(status: Any) -> str:
    try:
        return TaskStatus(status).name
    except ValueError:
        return str(status)


def _epoch(ts: Any, default: float) -> float:
    try:
        return datetime.fromisoformat(str(ts).replace("Z", "+00:00")).timestamp()
    except ValueError:
        return default
