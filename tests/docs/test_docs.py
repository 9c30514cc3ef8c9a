"""The docs' examples run: every python block and console transcript of README.md and docs/.

Sybil (https://sybil.readthedocs.io) finds the blocks and keeps one namespace per page; this
module adds the console transcripts (see ``console.py``) and one test per block, so a failure
names the page and line. Per page the blocks run in order, in one namespace, in a fresh
temporary folder that is also the data directory of every ``radsight`` command (no
``RADSIGHT_*`` variable of the caller leaks in).

- ```` ```python ```` blocks are executed.
- ```` ```console ```` blocks are transcripts: each ``$ command`` runs and must print what
  the page shows (``...`` is a wildcard).
- ```` ```bash ```` and ```` ```sh ```` blocks are never run, so each must be marked
  ``<!-- skip: next "why it cannot run here" -->``, or be turned into a transcript.
- ``<!-- skip: next "reason" -->`` before any block skips it; ``pytest -rs`` lists them all.

``RADSIGHT_DOCS_UPDATE=1 python -m pytest tests/docs`` writes the actual output of every
transcript command that differs back into the page (review the diff: wildcards in a rewritten
output are gone).
"""

from __future__ import annotations

import difflib
import os
import subprocess
import sys
import unittest
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from sybil import Document, Example
from sybil.parsers.markdown import CodeBlockParser, PythonCodeBlockParser, SkipParser

from tests.docs.console import (
    free_port,
    matches,
    parse_transcript,
    run_command,
    stop_background,
)

ROOT = Path(__file__).resolve().parents[2]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]


@dataclass
class PageRun:
    """What the blocks of one page share: their namespace, folder, environment and progress."""

    document: Document
    examples: list[Example]
    folder: Path | None = None
    env: dict[str, str] = field(default_factory=dict)
    done: set[int] = field(default_factory=set)
    background: list[subprocess.Popen[bytes]] = field(default_factory=list)


#: set to 1, the docs test writes what each differing transcript command printed into its page
UPDATE = "RADSIGHT_DOCS_UPDATE"
_RUNS: dict[str, PageRun] = {}
#: page -> [(first line index, end line index, new lines)] for RADSIGHT_DOCS_UPDATE=1
_REWRITES: dict[Path, list[tuple[int, int, list[str]]]] = {}


class DocsMismatch(AssertionError):
    """A block does not do what its page shows; the message says where and how."""


def _shown(page: Path) -> Path:
    return page.relative_to(ROOT) if page.is_relative_to(ROOT) else page


def _where(example: Example) -> str:
    return f"{_shown(Path(example.path))}:{example.line}"


def _evaluate_console(example: Example) -> None:
    run = _RUNS[example.path]
    assert run.folder is not None
    fence = example.document.text.splitlines()[example.line - 1]
    prefix = fence[: len(fence) - len(fence.lstrip())]
    failures = []
    for command in parse_transcript(str(example.parsed), example.line + 1):
        actual = run_command(command.text, run.env, run.folder, run.background)
        if matches(command.expected, actual):
            continue
        page = Path(example.path)
        if os.environ.get(UPDATE) == "1":
            new = [prefix + line if line else "" for line in actual.rstrip().splitlines()]
            first = example.line + command.output_start  # 0-based page line index
            last = example.line + command.output_end
            _REWRITES.setdefault(page, []).append((first, last, new))
            continue
        diff = "\n".join(
            difflib.unified_diff(
                command.expected.splitlines(),
                actual.rstrip().splitlines(),
                "shown in the page",
                "printed now",
                lineterm="",
            )
        )
        failures.append(
            f"{_shown(page)}:{command.line}: `$ {command.text}` printed other "
            f"output.\n--- shown in the page:\n{command.expected}\n--- printed now:\n"
            f"{actual.rstrip()}\n--- diff:\n{diff}"
        )
        break  # later commands build on this one
    if failures:
        raise DocsMismatch(
            "\n\n".join(failures) + "\n\n(`...` matches any text; "
            "RADSIGHT_DOCS_UPDATE=1 python -m pytest tests/docs rewrites the page's output)"
        )


def _refuse_shell_block(example: Example) -> None:
    raise DocsMismatch(
        f"{_where(example)}: a shell block is never run: make it a ```console transcript "
        '(`$ command` lines, then their output) or put <!-- skip: next "why it cannot run '
        'here" --> before it'
    )


PARSERS = [
    PythonCodeBlockParser(),
    CodeBlockParser("console", _evaluate_console),
    CodeBlockParser("bash", _refuse_shell_block),
    CodeBlockParser("sh", _refuse_shell_block),
    SkipParser(),
]


def open_page(run: PageRun, folder: Path) -> None:
    """Give a page its folder and environment: no RADSIGHT_* of the caller, free ports."""
    run.folder = folder
    run.env = {k: v for k, v in os.environ.items() if not k.startswith("RADSIGHT_")}
    # `radsight` in a bash command is this interpreter's, with this checkout's sources
    run.env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + run.env.get("PATH", "")
    run.env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(ROOT / "src"), str(ROOT), run.env.get("PYTHONPATH")) if p
    )
    run.env["RADSIGHT_HTTP_PORT"] = str(free_port())
    run.env["RADSIGHT_DICOM_PORT"] = str(free_port())


def _is_skip_directive(example: Example) -> bool:
    return isinstance(example.parsed, tuple)  # SkipParser's (action, reason)


def _collect() -> Iterator[pytest.param]:
    for page in PAGES:
        document = Document.parse(str(page), *PARSERS)
        examples = list(document.examples())
        _RUNS[str(page)] = PageRun(document, examples)
        for index, example in enumerate(examples):
            if not _is_skip_directive(example):
                yield pytest.param(str(page), index, id=_where(example))


def _evaluate(example: Example) -> None:
    __tracebackhide__ = True
    skipped = mismatch = None
    try:
        example.evaluate()
    except unittest.SkipTest as exc:
        skipped = f"{_where(example)}: {exc}"
    except DocsMismatch as exc:
        mismatch = str(exc)
    # outside the except clauses, so that pytest shows the message once, without a chain
    if skipped is not None:
        pytest.skip(skipped)
    if mismatch is not None:
        pytest.fail(mismatch, pytrace=False)


@pytest.mark.parametrize(("page", "index"), list(_collect()))
def test_block(page: str, index: int, tmp_path_factory, monkeypatch) -> None:
    run = _RUNS[page]
    if run.folder is None:
        open_page(run, tmp_path_factory.mktemp(Path(page).stem))
    monkeypatch.chdir(run.folder)
    for key in [k for k in os.environ if k.startswith("RADSIGHT_") and k != UPDATE]:
        monkeypatch.delenv(key)
    for key in ("RADSIGHT_HTTP_PORT", "RADSIGHT_DICOM_PORT"):  # the page's free ports
        monkeypatch.setenv(key, run.env[key])
    # the blocks before this one (skip directives included) run first, once, in order
    for earlier in range(index):
        if earlier not in run.done:
            run.done.add(earlier)
            try:
                run.examples[earlier].evaluate()
            except Exception:  # a skip or a failure: each block's own test reports it
                pass
    run.done.add(index)
    _evaluate(run.examples[index])


@pytest.fixture(scope="module", autouse=True)
def _rewrite_pages() -> Iterator[None]:
    """With RADSIGHT_DOCS_UPDATE=1, write the collected outputs back, last lines first."""
    yield
    for run in _RUNS.values():
        stop_background(run.background)
    apply_rewrites()


def apply_rewrites() -> None:
    """Write the outputs collected under RADSIGHT_DOCS_UPDATE=1 into their pages."""
    for page, rewrites in _REWRITES.items():
        lines = page.read_text().splitlines()
        for first, last, new in sorted(rewrites, reverse=True):
            lines[first:last] = new
        page.write_text("\n".join(lines) + "\n")
    _REWRITES.clear()
