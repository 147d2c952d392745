"""The generated parts of docs/reference.md, and the doc's hand-written tables read back.

``python -m tests.foundation.reference_doc`` rewrites each generated block of docs/reference.md
(between ``<!-- generated: NAME -->`` and ``<!-- end: NAME -->``) from the code: the flags of every
console script (their argparse parsers) and the settings (the text of ``.env.example``, itself
generated from llm_service/config.py). tests/foundation/test_reference.py checks the blocks are
current and that each hand-written table lists exactly the names the code has.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Callable, Iterator
from importlib.metadata import distribution
from pathlib import Path
from typing import Any
from unittest import mock

from llm_service.config import env_example

ROOT = Path(__file__).resolve().parents[2]
REFERENCE = ROOT / "docs" / "reference.md"
# The distributions whose console scripts are the commands users run: the service and its dev tools.
DISTRIBUTIONS = ("llm-service", "llm-service-dev")
# Console scripts whose flags are listed; the others document theirs elsewhere (the table of commands
# in docs/reference.md says where): the emulator in docs/gigachat-emulator.md, and the kafka-* wrappers
# pass every argument to Kafka's own tools.
FLAGS_OF = ("llm-supervisor", "llm-worker", "llmctl", "llm-devstack")

_SEPARATOR = re.compile(r"\|[\s|:-]+\|")
_BLOCK = re.compile(r"(<!-- generated: (?P<name>[\w-]+) -->\n)(?P<body>.*?)(<!-- end: (?P=name) -->)", re.S)


class _Captured(Exception):  # noqa: N818 - carries the parser out of main(), not an error
    def __init__(self, parser: argparse.ArgumentParser) -> None:
        super().__init__(parser.prog)
        self.parser = parser


def console_scripts() -> dict[str, Callable[..., Any]]:
    """Every console script of the service and its dev tools: name -> the function it calls."""
    return {
        ep.name: ep.load()
        for dist in DISTRIBUTIONS
        for ep in distribution(dist).entry_points
        if ep.group == "console_scripts"
    }


def parser_of(main: Callable[..., Any]) -> argparse.ArgumentParser:
    """The parser a console script's ``main`` builds, taken at its first parse, before it runs anything."""

    def capture(self: argparse.ArgumentParser, *args: Any, **kwargs: Any) -> Any:
        raise _Captured(self)

    with mock.patch.object(argparse.ArgumentParser, "parse_args", capture):
        try:
            main([])
        except _Captured as got:
            return got.parser
    raise RuntimeError(f"{main.__module__}.{main.__name__} parsed no arguments")


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|").replace("<", "&lt;").replace(">", "&gt;")


def _flag_rows(parser: argparse.ArgumentParser, inherited: frozenset[str]) -> list[str]:
    rows = []
    for action in parser._actions:
        if action.help == argparse.SUPPRESS or isinstance(action, argparse._HelpAction):
            continue
        if isinstance(action, argparse._SubParsersAction):
            continue
        if set(action.option_strings) & inherited:
            continue
        usage = parser._get_formatter()._format_args(action, action.dest.upper()) if action.nargs != 0 else ""
        name = ", ".join(action.option_strings) or action.dest
        shown = f"{name} {usage}".strip() if action.option_strings else usage
        rows.append(f"| `{shown}` | {_cell(action.help or '')} |")
    return rows


def _subparsers(parser: argparse.ArgumentParser) -> Iterator[tuple[str, str, argparse.ArgumentParser]]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {a.dest: a.help or "" for a in action._choices_actions}
            for name, sub in action.choices.items():
                yield name, helps.get(name, ""), sub


def _options(parser: argparse.ArgumentParser) -> frozenset[str]:
    return frozenset(s for a in parser._actions for s in a.option_strings)


def flags_block() -> str:
    """One table per command and subcommand; a subcommand leaves out the options its command has."""
    scripts = console_scripts()
    out: list[str] = []
    for name in FLAGS_OF:
        parser = parser_of(scripts[name])
        out += [f"#### `{name}`", "", "| flag or argument | meaning |", "| --- | --- |"]
        out += _flag_rows(parser, frozenset()) or ["| (none) | |"]
        out.append("")
        for sub_name, sub_help, sub in _subparsers(parser):
            out += [f"#### `{name} {sub_name}`: {_cell(sub_help)}", ""]
            rows = _flag_rows(sub, _options(parser))
            out += ["| flag or argument | meaning |", "| --- | --- |", *rows, ""] if rows else []
    return "\n".join(out)


def settings_block() -> str:
    """The settings as .env.example gives them (one source: llm_service/config.py), one table a group."""
    out: list[str] = []
    help_line = ""
    for line in env_example().splitlines()[2:]:
        if line.startswith("# --- "):
            out += [
                "",
                f"#### {line.strip('# -')}",
                "",
                "| variable | default | meaning |",
                "| --- | --- | --- |",
            ]
        elif line.startswith("# "):
            help_line = line[2:]
        elif "=" in line:
            name, _, default = line.partition("=")
            shown = f"`{default}`" if default else "(empty)"
            out.append(f"| `{name}` | {_cell(shown)} | {_cell(help_line)} |")
    return "\n".join(out).lstrip("\n")


GENERATORS: dict[str, Callable[[], str]] = {"flags": flags_block, "settings": settings_block}


def regenerated(text: str) -> str:
    """``text`` with every generated block rebuilt from the code."""

    def rebuild(match: re.Match[str]) -> str:
        body = GENERATORS[match["name"]]()
        return f"{match[1]}{body}\n{match[4]}"

    return _BLOCK.sub(rebuild, text)


def block_names(text: str) -> list[str]:
    return [m["name"] for m in _BLOCK.finditer(text)]


def section(text: str, heading: str, *, nested: bool = False) -> str:
    """The text under the heading ``heading`` (any level) up to the next heading; ``nested``: up to the
    next heading of its level or above, so with its subsections."""
    match = re.search(rf"^(#+) {re.escape(heading)}[ \t]*$", text, re.M)
    if match is None:
        raise KeyError(f"docs/reference.md has no section {heading!r}")
    level = len(match[1]) if nested else 6
    end = re.compile(rf"^#{{1,{level}}} ", re.M).search(text, match.end())
    return text[match.end() : end.start() if end else len(text)]


def table_rows(text: str) -> list[list[str]]:
    """The cells of every table row in ``text``; header rows (those above a ``| --- |`` line) left out."""
    lines = text.splitlines()
    rows = []
    for line, below in zip(lines, [*lines[1:], ""], strict=True):
        if not line.startswith("|") or _SEPARATOR.fullmatch(line) or _SEPARATOR.fullmatch(below):
            continue
        rows.append([c.strip() for c in re.split(r"(?<!\\)\|", line.strip())[1:-1]])
    return rows


def first_column(text: str) -> list[str]:
    """Each row's first cell with its backticks removed; a cell of several names (`A`, `B`) gives each."""
    names = []
    for cells in table_rows(text):
        quoted = re.findall(r"`([^`]+)`", cells[0])
        names += quoted or [cells[0]]
    return names


def main() -> int:
    text = REFERENCE.read_text(encoding="utf-8")
    REFERENCE.write_text(regenerated(text), encoding="utf-8")
    print(f"rewrote {', '.join(block_names(text))} in {REFERENCE.relative_to(ROOT)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
