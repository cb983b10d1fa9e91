"""The README renders as written (issue 18 item 9): every code fence is closed, every link to an
anchor names a heading, and every command of the quick start exists in the CLI."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

markdown_it = pytest.importorskip("markdown_it")

README = Path(__file__).resolve().parents[1] / "README.md"


@pytest.fixture(scope="module")
def tokens() -> list:
    return markdown_it.MarkdownIt("commonmark").enable("table").parse(
        README.read_text(encoding="utf-8"))


def slug(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped, spaces to hyphens.

    >>> slug("`report.json`"), slug("Errors and exit codes"), slug("Losses (`reprdiag.losses`)")
    ('reportjson', 'errors-and-exit-codes', 'losses-reprdiaglosses')
    """
    text = re.sub(r"[^\w\- ]", "", heading.lower())
    return text.replace(" ", "-")


def test_every_fence_is_closed(tokens: list) -> None:
    lines = README.read_text(encoding="utf-8").splitlines()
    fences = [t for t in tokens if t.type == "fence"]
    assert fences
    for t in fences:
        start, end = t.map
        closing = lines[end - 1].strip() if end <= len(lines) else ""
        assert closing.startswith(t.markup) and closing.strip("`~") == "", (
            f"the {t.markup}{t.info} fence opened on line {start + 1} is never closed")
        inner = [line for line in t.content.splitlines() if line.lstrip().startswith(t.markup)]
        assert inner == [], (f"the fence opened on line {start + 1} swallows another fence's "
                             f"opening {inner[0]!r}: a closing fence is missing before it")


def test_anchor_links_name_headings(tokens: list) -> None:
    headings = {slug("".join(c.content for c in tokens[i + 1].children or []))
                for i, t in enumerate(tokens) if t.type == "heading_open"}
    links = [a.attrGet("href") for t in tokens if t.type == "inline"
             for a in (t.children or []) if a.type == "link_open"]
    anchors = [h for h in links if h and h.startswith("#")]
    assert anchors
    assert [a for a in anchors if a[1:] not in headings] == []


def test_quick_start_commands_exist(tokens: list) -> None:
    import typer

    from reprdiag.cli import app

    commands = set(typer.main.get_command(app).commands)  # type: ignore[attr-defined]
    start = next(i for i, t in enumerate(tokens) if t.type == "heading_open"
                 and tokens[i + 1].content == "Quick start")
    end = next(i for i, t in enumerate(tokens) if i > start and t.type == "heading_open"
               and t.tag == "h2")
    used = [m.group(1) for t in tokens[start:end] if t.type == "fence" and t.info == "bash"
            for m in re.finditer(r"\breprdiag\s+([\w-]+)", t.content)]
    assert used and set(used) <= commands, set(used) - commands
