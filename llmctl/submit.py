"""``llmctl submit`` and ``llmctl wait``: tasks from the shell.

``llmctl submit FILE --prompt TEXT [--wait]`` uploads FILE to MINIO_INPUT_BUCKET, sends the task and
(with --wait) follows the status topic to its final status and prints the result's content.
``llmctl submit DIR ...`` does that for every file under DIR, with a progress bar and a summary.
``llmctl wait TASK_ID`` waits for (or finds) the final status of a task sent earlier.

Exit codes: 0 all completed (or sent, without --wait), 1 a task failed, 2 bad usage or config,
3 timed out waiting.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from tqdm import tqdm

from llmctl.api import TaskClient, new_task_id
from llmctl.common import CONFIG_ERROR, settings_from
from llmctl.watch import FinalStatus

OK = 0
FAILED = 1
TIMED_OUT = 3
DEFAULT_TIMEOUT_S = 300.0


def register(subparsers: Any, parents: list[argparse.ArgumentParser]) -> None:
    submit = subparsers.add_parser(
        "submit",
        parents=parents,
        help="send a task (a file, every file of a dir)",
        description=__doc__.split("\n\n")[1],
    )
    submit.add_argument("path", nargs="?", type=Path, help="input file, or a directory of input files")
    submit.add_argument("--prompt", required=True, help="the instruction for the model")
    submit.add_argument("--task-id", help="task id (one file or none only; default: file name + random)")
    submit.add_argument("--model", help="model name (default: GIGACHAT_MODEL of the worker)")
    submit.add_argument(
        "--param",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="model parameter, e.g. temperature=0.2 (repeatable)",
    )
    submit.add_argument("--wait", action="store_true", help="wait for the final status and print the result")
    _add_wait_options(submit)
    submit.set_defaults(handler=cmd_submit)
    wait = subparsers.add_parser("wait", parents=parents, help="wait for a task's final status")
    wait.add_argument("task_id")
    wait.add_argument(
        "--since-hours", type=float, default=24.0, help="look this far back in the status topic"
    )
    _add_wait_options(wait)
    wait.set_defaults(handler=cmd_wait)


def _add_wait_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--timeout", type=float, default=DEFAULT_TIMEOUT_S, help="seconds to wait (default 300)"
    )
    parser.add_argument("--json", action="store_true", help="print one JSON line per final status")


@dataclass(frozen=True)
class Submitted:
    task_id: str
    source: str  # the file it came from, or "-" for a prompt-only task


def cmd_submit(args: argparse.Namespace) -> int:
    settings = settings_from(args)
    if settings is None:
        return CONFIG_ERROR
    try:
        files, params = _inputs(args), _params(args.param)
    except ValueError as exc:
        print(f"llmctl submit: {exc}", file=sys.stderr)
        return CONFIG_ERROR
    with TaskClient(settings=settings) as client:
        sent = _send_all(client, args, files, params)
        if not args.wait:
            for item in sent:
                print(item.task_id)
            return OK
        return _report(client, sent, args)


def cmd_wait(args: argparse.Namespace) -> int:
    settings = settings_from(args)
    if settings is None:
        return CONFIG_ERROR
    with TaskClient(settings=settings) as client:
        return _report(client, [Submitted(args.task_id, "-")], args, since_s=args.since_hours * 3600)


def _inputs(args: argparse.Namespace) -> list[Path | None]:
    path: Path | None = args.path
    if path is None:
        return [None]
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file() and not _hidden(p.relative_to(path)))
        if not files:
            raise ValueError(f"{path} has no files")
        if args.task_id and len(files) > 1:
            raise ValueError("--task-id names one task; a directory sends one task per file")
        return list(files)
    if not path.is_file():
        raise ValueError(f"{path} is neither a file nor a directory")
    return [path]


def _hidden(relative: Path) -> bool:
    return any(part.startswith(".") for part in relative.parts)


def _params(pairs: list[str]) -> dict[str, Any]:
    params: dict[str, Any] = {}
    for pair in pairs:
        name, sep, raw = pair.partition("=")
        if not sep or not name:
            raise ValueError(f"--param {pair!r}: expected NAME=VALUE")
        try:
            params[name] = json.loads(raw)
        except ValueError:
            params[name] = raw
    return params


def _send_all(
    client: TaskClient, args: argparse.Namespace, files: list[Path | None], params: dict[str, Any]
) -> list[Submitted]:
    sent = []
    many = len(files) > 1
    for path in tqdm(files, desc="submit", unit="task", disable=not many, file=sys.stderr):
        task_id = args.task_id or new_task_id(path.stem if path is not None else "prompt")
        fields: dict[str, Any] = {"prompt": args.prompt, "model": args.model, "params": params or None}
        if path is not None:
            fields["input"] = client.upload_file(path, task_id=task_id)
        client.submit(task_id=task_id, **fields)
        sent.append(Submitted(task_id, str(path) if path is not None else "-"))
    return sent


def _report(
    client: TaskClient, sent: list[Submitted], args: argparse.Namespace, *, since_s: float = 3600.0
) -> int:
    sources = {item.task_id: item.source for item in sent}
    many = len(sent) > 1
    bar = tqdm(total=len(sent), desc="done", unit="task", disable=not many, file=sys.stderr)

    def show(final: FinalStatus) -> None:
        bar.update(1)
        _print_final(client, final, sources[final.task_id], as_json=args.json, out=sys.stdout, many=many)

    try:
        finals = client.wait_all(sources, timeout=args.timeout, on_final=show, since_s=since_s)
    finally:
        bar.close()
    completed = sum(1 for f in finals.values() if f.ok)
    failed = len(finals) - completed
    missing = [t for t in sources if t not in finals]
    for task_id in missing:
        print(f"llmctl: no final status for task {task_id} within {args.timeout:g}s", file=sys.stderr)
    if many:
        print(
            f"{len(sent)} tasks: {completed} completed, {failed} failed, {len(missing)} timed out",
            file=sys.stderr,
        )
    return FAILED if failed else TIMED_OUT if missing else OK


def _print_final(
    client: TaskClient, final: FinalStatus, source: str, *, as_json: bool, out: TextIO, many: bool
) -> None:
    body = client.result(final) if final.ok else None
    content = body.get("content") if body is not None else None
    if as_json:
        out.write(
            json.dumps({**final.event, "source": source, "content": content}, ensure_ascii=False) + "\n"
        )
        return
    if many or not final.ok:
        tokens = final.event.get("tokens_used")
        what = f"{final.status.name}, {tokens} tokens" if final.ok else f"FAILED: {_error(final)}"
        tqdm.write(f"== {source} (task {final.task_id}): {what} ==", file=out if final.ok else sys.stderr)
    if content is not None:
        tqdm.write(str(content).rstrip() + ("\n" if many else ""), file=out)


def _error(final: FinalStatus) -> str:
    error = final.error or {}
    return f"{error.get('code', '?')}: {error.get('message', '')}"
