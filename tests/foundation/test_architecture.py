"""docs/architecture.md stays true: its runbook table leads from each runbook line to files that hold it.

Pure; no stack. For each row of "From a runbook line to the code": the first column's names appear in
docs/RUNBOOK.ru.md, every file named exists, each text to search for is in one of the row's files, and
each file holds one of those texts (so no row names a file that has nothing to do with it).
"""

from __future__ import annotations

import re

import pytest

from llm_service import log_lines
from tests.foundation.reference_doc import ROOT, section, table_rows

ARCHITECTURE = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")
RUNBOOK = (ROOT / "docs" / "RUNBOOK.ru.md").read_text(encoding="utf-8")
ROWS = table_rows(section(ARCHITECTURE, "From a runbook line to the code"))


def quoted(cell: str) -> list[str]:
    return re.findall(r"`([^`]+)`", cell)


def test_the_table_has_rows() -> None:
    assert len(ROWS) >= 20


@pytest.mark.parametrize("row", ROWS, ids=[quoted(r[0])[0][:40] for r in ROWS])
def test_runbook_row_leads_to_the_files_that_hold_it(row: list[str]) -> None:
    used, texts, files = quoted(row[0]), quoted(row[1]), quoted(row[2])
    assert used and texts and files
    assert [u for u in used if u not in RUNBOOK] == [], "not in docs/RUNBOOK.ru.md"
    missing = [f for f in files if not (ROOT / f).is_file()]
    assert missing == [], "no such file"
    sources = {f: (ROOT / f).read_text(encoding="utf-8") for f in files}
    assert [t for t in texts if not any(t in s for s in sources.values())] == [], "text found in no file"
    assert [f for f, s in sources.items() if not any(t in s for t in texts)] == [], "file holds none"


def test_every_package_has_a_row() -> None:
    rows = table_rows(section(ARCHITECTURE, "Processes and packages"))
    listed = {quoted(r[0])[0].rstrip("/") for r in rows}
    packages = {p.parent.name for p in ROOT.glob("*/__init__.py")}
    assert packages <= listed
    assert all((ROOT / name).is_dir() for name in listed)


def test_every_file_in_where_to_change_what_exists() -> None:
    rows = table_rows(section(ARCHITECTURE, "Where to change what"))
    named = [p for r in rows for p in quoted(r[1]) if "/" in p and " " not in p]
    assert named, "the table names no files"
    assert [p for p in named if not (ROOT / p).exists()] == []


def _row_text() -> str:
    return "\n".join(" ".join(r) for r in ROWS)


def test_every_llmctl_command_of_the_runbook_has_a_row() -> None:
    used = set(re.findall(r"llmctl (\w+)", RUNBOOK))
    assert used, "the runbook names no llmctl command"
    assert sorted(c for c in used if f"`llmctl {c}" not in _row_text()) == []


def test_every_alert_and_log_line_of_the_runbook_has_a_row() -> None:
    alerts = set(
        re.findall(r'found\["(\w+)"\]', "".join(p.read_text() for p in (ROOT / "supervisor").glob("*.py")))
    )
    in_runbook = {a for a in alerts if f"`{a}`" in RUNBOOK}
    assert in_runbook and sorted(a for a in in_runbook if f"`{a}`" not in _row_text()) == []
    templates = {k: v for k, v in vars(log_lines).items() if k.isupper() and isinstance(v, str)}
    # A template is in the runbook when its longest literal run is ("Task %s processed in %.1fms").
    greped = {k for k, v in templates.items() if max(re.split(r"%[.\d]*\w", v), key=len) in RUNBOOK}
    assert greped and sorted(k for k in greped if f"`{k}`" not in _row_text()) == []
