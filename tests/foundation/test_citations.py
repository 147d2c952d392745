"""Every citation resolves: a file, test or symbol that a comment, docstring or document names exists.

Scans the comments and docstrings of every .py file of the repository and every document (docs/*.md,
README.md, examples/**/*.md) for: repository paths (``llm_worker/offsets.py``, ``docs/worker.md``,
``tests/<dir>/test_x.py::test_y``, globs such as ``docs/performance/*.png``), bare file names
(``join_guard.py``: some file of that name), dotted symbols of our packages
(``llm_worker.task_lease.TaskLeases``), relative Markdown links, and citations of documents that live
outside the repository. CHANGELOG.md is history and is left as written. Pure; no stack.
"""

from __future__ import annotations

import ast
import functools
import importlib
import io
import re
import tokenize
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = (
    "llm_service",
    "llm_worker",
    "supervisor",
    "llmctl",
    "devstack",
    "gigachat_emulator",
    "tests",
    "bench",
)
SKIPPED_DIRS = {"build", "dist", "node_modules", "__pycache__"}
# Files that name outside documents by design: none. The project's rules and reference live in docs/.
OUTSIDE = re.compile(r"\bCONTRACT\b(?:\.md\b)?|\bSTYLE(?:\.md\b|\s+rules?\s+\d+)")
FILE_SUFFIXES = (".py", ".md", ".json", ".yml", ".yaml", ".toml", ".cfg", ".txt", ".png", ".xml", ".service")
_START = r"(?<![\w./$~@-])"
PATH = re.compile(_START + r"((?:[\w.-]+/)+[\w.*-]*)(::\w+)?")
BARE_FILE = re.compile(_START + r"([\w-]+(?:\.[\w-]+)*\.(?:py|md))\b(?!/)")
SYMBOL = re.compile(_START + rf"((?:{'|'.join(PACKAGES)})(?:\.[A-Za-z_]\w*)+)")
ROLE = re.compile(r":(?:class|func|meth|mod|attr|data|exc|obj):`~?([A-Za-z_][\w.]*)`")
LINK = re.compile(r"\]\(([^)\s]+)\)")
# A document and one of its sections: docs/worker.md, "Poison messages" (also bare worker.md, and in
# parentheses); the quoted text must begin one of that document's headings.
SECTION = re.compile(_START + r"((?:docs/)?[\w.-]+\.md)[,:]?\s+\(?\"([^\"]+)\"")


@dataclass(frozen=True)
class Citation:
    where: str  # file:line
    text: str


def _repo_files() -> list[Path]:
    files = []
    for path in ROOT.rglob("*"):
        rel = path.relative_to(ROOT).parts
        if any(p.startswith(".") or p in SKIPPED_DIRS or p.endswith(".egg-info") for p in rel):
            continue
        if path.is_file():
            files.append(path)
    return files


FILES = _repo_files()
FILE_NAMES = {p.name for p in FILES}
TOP_LEVEL = {p.relative_to(ROOT).parts[0] for p in FILES}


def _python_texts(path: Path) -> Iterator[tuple[int, str]]:
    """The comments and docstrings of one module, with their first line."""
    source = path.read_text(encoding="utf-8")
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type == tokenize.COMMENT:
            yield tok.start[0], tok.string
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            docstring = ast.get_docstring(node, clean=False)
            if docstring is not None:
                yield node.body[0].lineno, docstring


def _documents() -> list[Path]:
    docs = [p for p in FILES if p.suffix == ".md" and p.relative_to(ROOT).parts[0] in ("docs", "examples")]
    return [*docs, ROOT / "README.md"]


def _texts() -> Iterator[tuple[Path, int, str]]:
    for path in FILES:
        if path.suffix == ".py":
            for line, text in _python_texts(path):
                yield path, line, text
    for path in _documents():
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            yield path, number, line


def _where(path: Path, line: int) -> str:
    return f"{path.relative_to(ROOT)}:{line}"


def _path_exists(cited: str) -> bool:
    cited = cited.rstrip(".,:;")
    if "*" in cited:
        return any(ROOT.glob(cited))
    return (ROOT / cited).exists()


def _test_exists(path: str, name: str) -> bool:
    source = _read(ROOT / path)
    return re.search(rf"^\s*(?:async )?(?:def|class) {re.escape(name[2:])}\b", source, re.M) is not None


def _path_problems(text: str) -> Iterator[str]:
    for match in PATH.finditer(text):
        cited, test = match[1], match[2]
        if cited.split("/")[0] not in TOP_LEVEL or re.search(r"[<{]", text[match.end() : match.end() + 1]):
            continue
        if not _path_exists(cited):
            yield f"no such path {cited}"
        elif test and not _test_exists(cited.rstrip(".,:;"), test):
            yield f"no test {test[2:]} in {cited}"


def _bare_file_problems(text: str) -> Iterator[str]:
    for match in BARE_FILE.finditer(text):
        if match[1] not in FILE_NAMES and not OUTSIDE.fullmatch(match[1]):
            yield f"no file named {match[1]} in the repository"


def _resolves(dotted: str) -> bool:
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj: object = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        for attr in parts[cut:]:
            if not hasattr(obj, attr):
                # A dataclass field or an annotated attribute has no value on the class.
                fields = {*getattr(obj, "__annotations__", {}), *getattr(obj, "__dataclass_fields__", {})}
                return attr in fields
            obj = getattr(obj, attr)
        return True
    return False


def _symbol_problems(text: str) -> Iterator[str]:
    for match in SYMBOL.finditer(text):
        dotted = match[1]
        if dotted.endswith(FILE_SUFFIXES) or text[match.end() : match.end() + 1] in ("/", "-"):
            continue
        if not _resolves(dotted):
            yield f"no symbol {dotted}"


def _defined_names() -> frozenset[str]:
    """Every class, function, method, module-level name and ``self.x`` attribute our code defines."""
    names: set[str] = set()
    for path in FILES:
        if path.suffix != ".py":
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
                names.add(node.name)
            elif isinstance(node, ast.Name | ast.Attribute) and isinstance(node.ctx, ast.Store):
                names.add(node.id if isinstance(node, ast.Name) else node.attr)
            elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
                names.add(node.target.id)
    return frozenset(names)


DEFINED = _defined_names()


def _role_problems(text: str) -> Iterator[str]:
    """Sphinx roles: a qualified name must import; an unqualified one must be defined in our code."""
    for match in ROLE.finditer(text):
        dotted = match[1]
        if dotted.split(".")[0] in PACKAGES:
            continue  # SYMBOL checks it
        missing = [part for part in dotted.split(".") if part not in DEFINED]
        if missing:
            yield f"no {'.'.join(missing)} defined anywhere (cited as {match[0]})"


def _link_problems(path: Path, text: str) -> Iterator[str]:
    if path.suffix != ".md":
        return
    for match in LINK.finditer(text):
        target = match[1].split("#")[0]
        if not target or re.match(r"[a-z]+:", target):
            continue
        if not (path.parent / target).exists():
            yield f"broken link {match[1]}"


@functools.cache
def _read(path: Path) -> str:
    return path.read_text(encoding="utf-8")


def _section_problems(text: str) -> Iterator[str]:
    for match in SECTION.finditer(text):
        doc = ROOT / "docs" / Path(match[1]).name
        if not doc.is_file():
            continue  # a document that is not ours, or missing: the path checks report that
        heading = " ".join(match[2].split())
        if not re.search(rf"^#+ {re.escape(heading)}", _read(doc), re.M):
            yield f'no section "{heading}" in docs/{doc.name}'


def problems() -> list[str]:
    found = []
    for path, line, text in _texts():
        here = [f"cites {m[0]}, which is not in the repository" for m in OUTSIDE.finditer(text)]
        here += [*_path_problems(text), *_bare_file_problems(text), *_symbol_problems(text)]
        here += [*_section_problems(text), *_role_problems(text)]
        here += _link_problems(path, text)
        found += [f"{_where(path, line)}: {p}" for p in here]
    return found


def test_every_cited_file_test_and_symbol_exists() -> None:
    found = problems()
    assert not found, "citations that lead nowhere:\n" + "\n".join(found)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("see llm_worker/offsets.py", []),
        ("see llm_worker/no_such_module.py", ["no such path llm_worker/no_such_module.py"]),
        ("see docs/nothing.md.", ["no such path docs/nothing.md."]),
        ("tests/foundation/test_citations.py::test_no_such_test", ["no test test_no_such_test in"]),
        ("the outcome at llm-output/results/<task_id>.json", []),
        ("docs/performance/*.png", []),
    ],
)
def test_path_citations_are_checked(text: str, expected: list[str]) -> None:
    got = list(_path_problems(text))
    assert len(got) == len(expected) and all(g.startswith(e) for g, e in zip(got, expected, strict=True))


@pytest.mark.parametrize(
    ("text", "ok"),
    [
        ("llm_worker.task_lease.TaskLeases", True),
        ("llm_worker.task_lease.NoSuchLease", False),
        ("supervisor.slot.TRANSITIONS", True),
        ("llm_service.status_table.SlotSnapshot.done", True),
        ("llm_worker.nosuchmodule", False),
    ],
)
def test_symbol_citations_are_checked(text: str, ok: bool) -> None:
    assert (list(_symbol_problems(text)) == []) is ok


def test_section_citations_are_checked() -> None:
    assert list(_section_problems('docs/worker.md, "Poison messages"')) == []
    assert list(_section_problems('(docs/reference.md, "No such section")')) != []


def test_role_citations_are_checked() -> None:
    assert list(_role_problems(":meth:`InFlight.complete` and :class:`TaskSpec`")) == []
    assert list(_role_problems(":meth:`InFlight.no_such_method`")) != []


def test_outside_documents_are_found() -> None:
    assert OUTSIDE.search("(CONTRACT.md, Status socket)") and OUTSIDE.search("STYLE rule 2")
    assert not OUTSIDE.search("the contract's wording")
