"""``llmctl status|health|reload|scale N|drain|resume``: talk to a running supervisor over its socket.

Runs in the operator's shell (or Docker's HEALTHCHECK). One request line, one reply line, over the
Unix socket at SUPERVISOR_SOCKET (or ``--socket``; /run/llm-service/ of the systemd unit is tried
before the /tmp default); the supervisor does the work. Exit codes:
``health`` gives 0 ok, 1 degraded, 2 failing or unreachable; the other commands 0 on success, 1 when
the supervisor refused, 2 when it could not be reached.
"""

from __future__ import annotations

import argparse
import json
import socket
import sys
from typing import Any

from llm_service.socket_protocol import HEALTH_EXIT_CODES, encode_request
from llmctl.common import discover_socket, settings_from

UNREACHABLE = 2
TIMEOUT_S = 10.0

_COLUMNS = (
    ("SLOT", "slot"),
    ("PID", "pid"),
    ("STATE", "state"),
    ("RESTARTS", "restarts"),
    ("IN_FLIGHT", "in_flight"),
    ("DONE", "done"),
    ("FAILED", "failed"),
    ("TOKENS", "tokens_used"),
    ("CPU%", "cpu_percent"),
    ("RSS_MB", "rss_mb"),
    ("HEARTBEAT_S", "heartbeat_age_s"),
    ("AVG_MS", "avg_processing_ms"),
    ("KAFKA", "kafka"),
    ("S3", "s3"),
    ("GIGACHAT", "gigachat"),
    ("BREAKER", "breaker"),
)
_CONNECTIONS = ("kafka", "s3", "gigachat")


class Unreachable(Exception):  # noqa: N818 - an outcome of the command, reported as exit code 2
    """The supervisor did not answer: not running, wrong socket, or no permission."""


def register(subparsers: Any, parents: list[argparse.ArgumentParser]) -> None:
    socket_opt = argparse.ArgumentParser(add_help=False)
    socket_opt.add_argument(
        "--socket",
        help="status socket (default: SUPERVISOR_SOCKET; /run/llm-service/ before the /tmp default)",
    )
    both = [*parents, socket_opt]
    status = subparsers.add_parser("status", parents=both, help="the supervisor's table of workers")
    form = status.add_mutually_exclusive_group()
    form.add_argument("--json", action="store_true", help="print the raw JSON reply (default when not a TTY)")
    form.add_argument("--table", action="store_true", help="print the table also when not a TTY")
    status.set_defaults(handler=cmd_status)
    subparsers.add_parser(
        "health", parents=both, help="one line; exit 0 ok, 1 degraded, 2 failing"
    ).set_defaults(handler=cmd_health)
    json_opt = argparse.ArgumentParser(add_help=False)
    json_opt.add_argument("--json", action="store_true", help="print the JSON reply instead of one line")
    simple = [*both, json_opt]
    subparsers.add_parser("reload", parents=simple, help="re-read the config (as SIGHUP)").set_defaults(
        handler=lambda a: cmd_simple(a, "reload")
    )
    scale = subparsers.add_parser("scale", parents=simple, help="set the number of worker processes")
    scale.add_argument("n", type=int, help="worker processes wanted")
    scale.set_defaults(handler=lambda a: cmd_simple(a, "scale", n=a.n))
    subparsers.add_parser("drain", parents=simple, help="stop taking new tasks").set_defaults(
        handler=lambda a: cmd_simple(a, "drain")
    )
    subparsers.add_parser("resume", parents=simple, help="take new tasks again").set_defaults(
        handler=lambda a: cmd_simple(a, "resume")
    )


def request(path: str, cmd: str, **args: Any) -> dict[str, Any]:
    """Send one request and return the reply; raise Unreachable when nobody answers."""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(TIMEOUT_S)
            sock.connect(path)
            sock.sendall(encode_request(cmd, **args))
            reply = sock.makefile("rb").readline()
    except OSError as exc:
        raise Unreachable(f"supervisor not reachable at {path}: {exc.strerror or exc}") from None
    if not reply:
        raise Unreachable(f"supervisor at {path} closed the connection without a reply")
    data: dict[str, Any] = json.loads(reply)
    return data


def _socket_path(args: argparse.Namespace) -> str | None:
    if args.socket:
        return str(args.socket)
    settings = settings_from(args)
    return discover_socket(settings.supervisor_socket) if settings is not None else None


def _ask(args: argparse.Namespace, cmd: str, **extra: Any) -> dict[str, Any] | None:
    path = _socket_path(args)
    if path is None:
        return None
    try:
        return request(path, cmd, **extra)
    except Unreachable as exc:
        print(f"llmctl: {exc}", file=sys.stderr)
        return None


def cmd_health(args: argparse.Namespace) -> int:
    reply = _ask(args, "health")
    if reply is None:
        print("failing: supervisor unreachable")
        return UNREACHABLE
    health = str(reply.get("health", "failing"))
    alerts = "; ".join(f"{a['name']}: {a['message']}" for a in reply.get("alerts", []))
    print(f"{health}{': ' + alerts if alerts else ''}")
    return HEALTH_EXIT_CODES.get(health, UNREACHABLE)


def cmd_simple(args: argparse.Namespace, cmd: str, **extra: Any) -> int:
    reply = _ask(args, cmd, **extra)
    if reply is None:
        return UNREACHABLE
    print(json.dumps(reply) if args.json else human_line(cmd, reply))
    return 0 if reply.get("ok") else 1


def human_line(cmd: str, reply: dict[str, Any]) -> str:
    """One line an operator reads after reload, scale, drain or resume."""
    if not reply.get("ok"):
        return f"{cmd} refused: {reply.get('error', 'no reason given')}"
    if cmd == "reload":
        changed = reply.get("changed") or []
        if not changed:
            return "reloaded: no setting changed"
        how = "; replacing workers one at a time" if reply.get("rolling_restart") else ""
        return f"reloaded: {', '.join(changed)} changed{how}"
    if cmd == "scale":
        return f"scaled: {reply.get('workers')} workers wanted"
    paused = reply.get("intake_paused")
    return "intake paused: no new tasks taken" if paused else "intake resumed: taking new tasks"


def cmd_status(args: argparse.Namespace) -> int:
    reply = _ask(args, "status")
    if reply is None:
        return UNREACHABLE
    if args.json or not (args.table or sys.stdout.isatty()):
        print(json.dumps(reply, indent=2))
    else:
        print(render_table(reply))
    return 0


def render_table(reply: dict[str, Any]) -> str:
    """The status reply as an operator reads it: a header line, alerts, one row per worker."""
    sup, system = reply.get("supervisor", {}), reply.get("system", {})
    intake = "PAUSED" if sup.get("intake_paused") else "open"
    lines = [
        f"health: {reply.get('health')}   workers: {sup.get('workers_running')}/{sup.get('workers_wanted')}"
        f"   CPU {system.get('cpu_percent')}%   RAM {system.get('ram_percent')}%"
        f" ({'of the cgroup limit' if system.get('limits_source') == 'cgroup' else 'own share of the host'})"
        f"   disk free {system.get('disk_free_mb')} MiB   intake {intake}   lag {sup.get('consumer_lag_s')}s",
    ]
    totals = reply.get("totals", {})
    lines.append(
        f"tasks since start: done {totals.get('done')}   failed {totals.get('failed')}"
        f"   in flight {totals.get('in_flight')}   avg {totals.get('avg_processing_ms')} ms"
        f"   tokens {totals.get('tokens_used')}"
    )
    lines += _budget_lines(sup.get("budget"))
    lines += [f"  {a['level'].upper()}: {a['name']}: {a['message']}" for a in reply.get("alerts", [])]
    rows = [[_cell(w, key) for _, key in _COLUMNS] for w in reply.get("workers", [])]
    widths = [
        max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, (h, _) in enumerate(_COLUMNS)
    ]
    lines.append("  ".join(h.ljust(w) for (h, _), w in zip(_COLUMNS, widths, strict=True)))
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    for worker in reply.get("workers", []):
        for task in worker.get("tasks", []):
            lines.append(f"  [{worker['slot']}] {task['task_id']}  {task['stage']}  {task['age_s']} s")
    return "\n".join(lines)


def _budget_lines(budget: dict[str, Any] | None) -> list[str]:
    """Today's token spending (supervisor/budget.py); nothing when no budget is set and nothing spent."""
    if not budget:
        return []
    scopes = [("pool", budget["pool"]), *sorted(budget.get("tenants", {}).items())]
    shown = [_spent(name, line) for name, line in scopes if line["budget"] or line["spent"]]
    reason = budget.get("intake_paused_reason")
    if not shown and not reason:
        return []
    text = f"tokens today ({budget.get('day')}): " + "   ".join(shown)
    return [text + (f"   intake PAUSED: {reason}" if reason else "")]


def _spent(name: str, line: dict[str, Any]) -> str:
    if not line["budget"]:
        return f"{name} {line['spent']} (no budget)"
    return f"{name} {line['spent']}/{line['budget']} ({line['remaining']} left)"


def _cell(worker: dict[str, Any], key: str) -> str:
    value = worker.get("conn", {}).get(key) if key in _CONNECTIONS else worker.get(key)
    return "-" if value is None else str(value)
