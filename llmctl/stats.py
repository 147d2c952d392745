"""``llmctl stats [--since 7d]``: the runbook's weekly statistics, read from the status topic.

The workers' counters live in their processes and die with them; the status topic keeps every
task's history, so the figures come from there: tasks by final status (and those with none yet),
average and p95 processing time of the completed ones, tokens used, and the most frequent error
codes. Each task counts once, by its first final status. Exit 0; 2 when the topic could not be
read; 3 when the read hit ``--timeout`` (the figures printed then cover only what was read).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections import Counter
from datetime import UTC, datetime
from typing import Any

from kafka.errors import KafkaError

from llm_service.config import Settings
from llm_service.task_status import TaskStatus
from llmctl.common import CONFIG_ERROR, describe, duration_s, settings_from, since_ms
from llmctl.history import History, read_status_history

UNREADABLE = 2
INCOMPLETE = 3
TOP_ERRORS = 10


def register(subparsers: Any, parents: list[argparse.ArgumentParser]) -> None:
    stats = subparsers.add_parser(
        "stats", parents=parents, help="tasks by status, processing time, tokens, top errors"
    )
    add_window_options(stats)
    stats.set_defaults(handler=cmd_stats)


def add_window_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--since", type=duration_s, default=duration_s("7d"), help="window, e.g. 7d, 24h (default 7d)"
    )
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds to read for (default 120)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")


def read_window(args: argparse.Namespace, command: str) -> tuple[Settings, History] | int:
    """The settings and the status events of the ``--since`` window, or the exit code after saying why not."""
    settings = settings_from(args)
    if settings is None:
        return CONFIG_ERROR
    try:
        return settings, read_status_history(settings, since_ms=since_ms(args.since), timeout_s=args.timeout)
    except (KafkaError, LookupError, OSError) as exc:
        print(f"llmctl {command}: cannot read the status topic: {describe(settings, exc)}", file=sys.stderr)
        return UNREADABLE


def cmd_stats(args: argparse.Namespace) -> int:
    window = read_window(args, "stats")
    if isinstance(window, int):
        return window
    _, history = window
    figures = summarize(history.events)
    figures["since"] = _iso(history.since_ms)
    print(json.dumps(figures) if args.json else render(figures))
    if not history.complete:
        print(f"llmctl stats: stopped reading after {args.timeout:g} s; figures are partial", file=sys.stderr)
        return INCOMPLETE
    return 0


def first_finals(events: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Each task's first final status event."""
    finals: dict[str, dict[str, Any]] = {}
    for event in events:
        if event.get("status") in (TaskStatus.COMPLETED, TaskStatus.FAILED):
            finals.setdefault(event["task_id"], event)
    return finals


def summarize(events: list[dict[str, Any]]) -> dict[str, Any]:
    """The weekly figures of a list of status events (pure; the tests feed it directly)."""
    finals = first_finals(events)
    tasks = {e["task_id"] for e in events}
    by_status = Counter(TaskStatus(e["status"]).name for e in finals.values())
    times = sorted(
        float(e["processing_ms"])
        for e in finals.values()
        if e["status"] == TaskStatus.COMPLETED and _number(e.get("processing_ms"))
    )
    errors = Counter(str(e["error"].get("code")) for e in finals.values() if isinstance(e.get("error"), dict))
    return {
        "tasks": len(tasks),
        "by_status": {
            "COMPLETED": by_status["COMPLETED"],
            "FAILED": by_status["FAILED"],
            "NO_FINAL_STATUS": len(tasks) - len(finals),
        },
        "processing_ms": {
            "count": len(times),
            "avg": round(sum(times) / len(times), 1) if times else None,
            "p95": round(times[math.ceil(0.95 * len(times)) - 1], 1) if times else None,
        },
        "tokens_used": sum(int(e["tokens_used"]) for e in finals.values() if _number(e.get("tokens_used"))),
        "top_errors": dict(errors.most_common(TOP_ERRORS)),
    }


def render(figures: dict[str, Any]) -> str:
    by_status, times = figures["by_status"], figures["processing_ms"]
    lines = [f"status events since {figures.get('since', 'the beginning')}: {figures['tasks']} tasks"]
    lines += [f"  {name:<16} {count}" for name, count in by_status.items()]
    lines.append(
        f"processing time of completed tasks: average {_ms(times['avg'])}, p95 {_ms(times['p95'])}"
        f" ({times['count']} tasks)"
    )
    lines.append(f"tokens used: {figures['tokens_used']}")
    lines.append("top error codes:" if figures["top_errors"] else "top error codes: none")
    lines += [f"  {count:>6}  {code}" for code, count in figures["top_errors"].items()]
    return "\n".join(lines)


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f} ms"


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _iso(ms: int | None) -> str | None:
    if ms is None:
        return None
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
