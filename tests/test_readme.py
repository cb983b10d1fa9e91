"""The README and docs/ render as written and stay true (issues 17 and 18 item 9).

Every code fence is closed, every link resolves (to a file of the repository, and to a heading
of it when it names one), every ``reprdiag`` command in a ```bash block exists in the CLI with
the options it is given, the README stays under 16 KB with one example per feature, and the
numbers of its "Reading your report" tables are what ``reprdiag.analyze`` gives on the sample
data."""

from __future__ import annotations

import math
import re
import shlex
from pathlib import Path

import pytest

markdown_it = pytest.importorskip("markdown_it")

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = ROOT / "docs"
PAGES = [README, *sorted(DOCS.glob("*.md"))]


def parse(path: Path) -> list:
    return markdown_it.MarkdownIt("commonmark").enable("table").parse(
        path.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def tokens() -> list:
    return parse(README)


def slug(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped, spaces to hyphens.

    >>> slug("`report.json`"), slug("Errors and exit codes"), slug("Losses (`reprdiag.losses`)")
    ('reportjson', 'errors-and-exit-codes', 'losses-reprdiaglosses')
    """
    text = re.sub(r"[^\w\- ]", "", heading.lower())
    return text.replace(" ", "-")


def headings(toks: list) -> set[str]:
    return {slug("".join(c.content for c in toks[i + 1].children or []))
            for i, t in enumerate(toks) if t.type == "heading_open"}


def links(toks: list) -> list[str]:
    return [a.attrGet("href") for t in toks if t.type == "inline"
            for a in (t.children or []) if a.type == "link_open"]


def section(toks: list, title: str) -> list:
    """The tokens of the h2 section called ``title``."""
    start = next(i for i, t in enumerate(toks) if t.type == "heading_open"
                 and toks[i + 1].content == title)
    end = next((i for i, t in enumerate(toks) if i > start and t.type == "heading_open"
                and t.tag == "h2"), len(toks))
    return toks[start:end]


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_every_fence_is_closed(page: Path) -> None:
    lines = page.read_text(encoding="utf-8").splitlines()
    fences = [t for t in parse(page) if t.type == "fence"]
    for t in fences:
        start, end = t.map
        closing = lines[end - 1].strip() if end <= len(lines) else ""
        assert closing.startswith(t.markup) and closing.strip("`~") == "", (
            f"{page.name}: the {t.markup}{t.info} fence opened on line {start + 1} is never "
            "closed")
        inner = [line for line in t.content.splitlines() if line.lstrip().startswith(t.markup)]
        assert inner == [], (f"{page.name}: the fence opened on line {start + 1} swallows "
                             f"another fence's opening {inner[0]!r}: a closing fence is missing")


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_links_resolve(page: Path) -> None:
    """Anchors name headings; relative links name files of the repository (and, for a
    Markdown file, one of its headings when they give an anchor)."""
    bad = []
    for href in links(parse(page)):
        if re.match(r"[a-z]+:", href):  # http:, https:, mailto:
            continue
        target, _, anchor = href.partition("#")
        path = (page.parent / target).resolve() if target else page
        if not path.exists():
            bad.append(f"{href} (no such file)")
        elif anchor and path.suffix == ".md" and anchor not in headings(parse(path)):
            bad.append(f"{href} (no heading #{anchor} in {path.name})")
    assert bad == [], f"{page.name}: broken links: {bad}"


def test_readme_is_short_and_links_the_reference(tokens: list) -> None:
    size = README.stat().st_size
    assert size <= 16 * 1024, f"README.md is {size} bytes; keep it ≤ 16 KB, move detail to docs/"
    assert "docs/README.md" in links(tokens)
    index = set(links(parse(DOCS / "README.md")))
    unlisted = [p.name for p in DOCS.glob("*.md") if p.name != "README.md" and p.name not in index]
    assert unlisted == [], f"docs/README.md does not list {unlisted}"


def test_readme_has_one_example_per_feature(tokens: list) -> None:
    code = "\n".join(t.content for t in tokens if t.type == "fence")
    features = ["reprdiag analyze", "reprdiag compare", "reprdiag gate", "--uncertainty",
                "torchrun", "--model", "SpectralMonitor", "--labels", "--pair",
                "reprdiag similarity", "reprdiag.analyze("]
    assert [f for f in features if f not in code] == []


def test_quick_start_commands_exist(tokens: list) -> None:
    import typer

    from reprdiag.cli import app

    commands = set(typer.main.get_command(app).commands)  # type: ignore[attr-defined]
    used = [m.group(1) for t in section(tokens, "Quick start")
            if t.type == "fence" and t.info == "bash"
            for m in re.finditer(r"\breprdiag\s+([\w-]+)", t.content)]
    assert used and set(used) <= commands, set(used) - commands


def test_quick_start_analyze_runs_as_written(tokens: list, tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """The reprdiag part of the first quick-start command, run as written (from a folder that
    holds sample_data/), exits 0 and writes the files the README says it writes."""
    from typer.testing import CliRunner

    from reprdiag.cli import app

    first = next(t.content for t in section(tokens, "Quick start") if t.type == "fence")
    words = command_lines(first)[0]
    assert words[0] == "analyze"
    (tmp_path / "sample_data").symlink_to(ROOT / "sample_data")
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, [*words, "--quiet"])
    assert result.exit_code == 0, result.output
    out = tmp_path / words[words.index("--out") + 1]
    said = re.search(r"writes\s+`(\S+)/`\s+\(([^)]*)\)", README.read_text(encoding="utf-8"))
    assert said and (tmp_path / said.group(1)) == out
    files = re.findall(r"`([\w.]+)`", said.group(2))
    assert files and [f for f in files if not (out / f).is_file()] == []
    assert list(out.glob("*.png")), "the README says the run writes plots"


def command_lines(text: str) -> list[list[str]]:
    """The words after ``reprdiag`` of each command in a bash block (continuations joined,
    comments, pipes and ``&&`` chains cut), e.g. ``['analyze', 'x.h5', '--out', 'runs/A']``."""
    found = []
    for line in text.replace("\\\n", " ").splitlines():
        for part in re.split(r"&&|\|\||;|\|", line.split(" #", 1)[0]):
            match = re.search(r"(?:^|\s)reprdiag\s+([a-z][\w-]*(?:\s.*)?)$", part.strip())
            if match:
                found.append(shlex.split(match.group(1).replace("[", " ").replace("]", " ")))
    return found


def test_command_lines_are_parsed() -> None:
    text = ("reprdiag analyze a.h5 --key k \\\n    --out runs/A   # comment --bogus\n"
            "pip install x && torchrun -m reprdiag gate b --fail-if 'rankme < 64' | tee l\n")
    assert command_lines(text) == [["analyze", "a.h5", "--key", "k", "--out", "runs/A"],
                                   ["gate", "b", "--fail-if", "rankme < 64"]]


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_bash_commands_exist_with_their_options(page: Path) -> None:
    import typer

    from reprdiag.cli import app

    cli = typer.main.get_command(app)
    known = {name: {o for p in cmd.params for o in (*p.opts, *p.secondary_opts)}
             for name, cmd in cli.commands.items()}  # type: ignore[attr-defined]
    known[""] = {"--version", "-V", "--install-completion", "--show-completion", "--help"}
    bad = []
    for t in parse(page):
        if t.type != "fence" or t.info != "bash":
            continue
        for words in command_lines(t.content):
            name = words[0]
            if name not in known:
                bad.append(f"reprdiag {name}: no such command")
                continue
            options = {w.split("=", 1)[0] for w in words[1:] if re.match(r"--?[a-zA-Z]", w)}
            bad += [f"reprdiag {name} {o}: no such option" for o in options - known[name]
                    - {"--help"}]
    assert bad == [], f"{page.name}: {bad}"


# -- "Reading your report": the README's numbers are the sample data's ------------------------

def quoted_values(tokens: list) -> list[tuple[str, str, str]]:
    """(metric, healthy, collapsed) as printed in each row of the section's tables."""
    rows, cells = [], []
    for t in section(tokens, "Reading your report"):
        if t.type == "tr_open":
            cells = []
        elif t.type == "inline":
            cells.append(t.content)
        elif t.type == "tr_close" and re.fullmatch(r"`\w+`", cells[0]):
            rows.append((cells[0].strip("`"), cells[1], cells[2]))
    return rows


def close_to_print(value: float, text: str) -> bool:
    """``value`` rounds to ``text`` at the digits printed (``2.1e-05``, ``0.5418``, ``384``)."""
    mantissa, _, exp = text.lower().partition("e")
    decimals = len(mantissa.partition(".")[2])
    unit = 10.0 ** (-decimals + (int(exp) if exp else 0))
    return math.isclose(value, float(text), abs_tol=0.5 * unit * (1 + 1e-9))


def test_close_to_print() -> None:
    assert close_to_print(0.54112, "0.54112") and close_to_print(2.14e-05, "2.1e-05")
    assert not close_to_print(0.5419, "0.5418") and not close_to_print(2.2e-05, "2.1e-05")
    assert close_to_print(384.0, "384") and not close_to_print(383.0, "384")


def test_reading_your_report_quotes_the_sample_data(tokens: list) -> None:
    import reprdiag

    rows = quoted_values(tokens)
    names = [r[0] for r in rows]
    for must in ("effective_rank", "std_normalized", "partition_isotropy", "cov_offdiag",
                 "numerical_rank"):
        assert must in names
    frame = reprdiag.analyze([ROOT / "sample_data/minilm.safetensors",
                              ROOT / "sample_data/collapsed.safetensors"],
                             metrics=[*dict.fromkeys(names), "cov_offdiag_frac"]).to_frame()
    healthy, collapsed = frame.iloc[0], frame.iloc[1]  # in the order of the inputs
    assert "minilm" in frame.index[0] and "collapsed" in frame.index[1]
    wrong = [(m, h, c, healthy[m], collapsed[m]) for m, h, c in rows
             if not (close_to_print(healthy[m], h) and close_to_print(collapsed[m], c))]
    assert wrong == [], "README numbers differ from reprdiag.analyze (metric, README, actual)"
    # the scale-free share that the text quotes beside cov_offdiag
    share = f"from {healthy['cov_offdiag_frac']:.5g} to {collapsed['cov_offdiag_frac']:.5g}"
    assert share in README.read_text(encoding="utf-8")


def test_feature_examples_quote_the_sample_data(tokens: list) -> None:
    """The numbers in the comments of the README's --labels and --uncertainty examples."""
    import reprdiag

    code = "\n".join(t.content for t in tokens if t.type == "fence" and t.info == "bash")
    nc1, lidar = re.search(r"--labels \S+\s+# nc1 (\S+), lidar (\S+)", code).groups()
    row = reprdiag.analyze(ROOT / "sample_data/digits.safetensors", metrics=["nc1", "lidar"],
                           labels=str(ROOT / "sample_data/digits-labels.safetensors")
                           ).to_frame().iloc[0]
    assert close_to_print(row["nc1"], nc1) and close_to_print(row["lidar"], lidar)
    quoted = re.search(r"--uncertainty -m effective_rank,rankme\s+# (\S+) ± (\S+), (\S+) ± (\S+)",
                       code).groups()
    table = reprdiag.analyze(ROOT / "sample_data/minilm.safetensors", uncertainty=True,
                             metrics=["effective_rank", "rankme"]).uncertainty
    actual = [table["value"].iloc[0], table["se"].iloc[0], table["value"].iloc[1],
              table["se"].iloc[1]]
    assert all(close_to_print(a, q) for a, q in zip(actual, quoted, strict=True)), (
        actual, quoted)


# -- the reference pages cover what the code defines ------------------------------------------

def test_report_json_page_names_every_schema_field() -> None:
    from reprdiag.report.schema import report_schema

    schema = report_schema(["vne"])
    fields = set(schema["properties"]) | set(
        schema["properties"]["inputs"]["items"]["properties"])
    text = (DOCS / "report-json.md").read_text(encoding="utf-8")
    named = set(re.findall(r"[`\"](?:inputs\[\]\.)?(\w+)[`\"]", text))
    assert sorted(fields - named) == [], "docs/report-json.md does not describe these fields"


def test_exit_codes_page_lists_every_code() -> None:
    from reprdiag import errors
    from reprdiag.cli.core import EXIT_INTERNAL

    codes = {name: getattr(errors, name) for name in dir(errors) if name.startswith("EXIT_")}
    codes["EXIT_INTERNAL"] = EXIT_INTERNAL
    rows = dict(re.findall(r"^\| (\d+) \|.*`(?:[\w.]*\.)?(EXIT_\w+)` \|$",
                           (DOCS / "exit-codes.md").read_text(encoding="utf-8"), re.M))
    assert {name: int(code) for code, name in rows.items()} == codes


def resolves(name: str) -> bool | None:
    """Whether ``reprdiag.a.b`` names a module or an attribute (None: it needs an optional
    package that is not installed)."""
    import importlib

    parts = name.split(".")
    for i in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:i]))
        except ModuleNotFoundError as e:
            if e.name and not e.name.startswith("reprdiag"):
                return None
            continue
        except ImportError:  # the module exists but needs an optional package
            return None
        for part in parts[i:]:
            if not hasattr(obj, part):
                return False
            obj = getattr(obj, part)
        return True
    return False


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_python_names_resolve(page: Path) -> None:
    """Every ``reprdiag.x.y`` the page names in code, and every ``from reprdiag.x import y``
    of its examples, exists: a module that moves takes its docs along."""
    text = page.read_text(encoding="utf-8")
    names = {n for n in re.findall(r"`(reprdiag(?:\.\w+)+)", text)
             if n.rsplit(".", 1)[1] not in {"toml", "json", "md", "py"}}
    names |= {f"{module}.{n.strip()}" for module, imported in
              re.findall(r"from (reprdiag[\w.]*) import ([\w, ]+)", text)
              for n in imported.split(",") if n.strip()}
    assert sorted(n for n in names if resolves(n) is False) == []


def test_repo_is_self_contained() -> None:
    """Comments and docs point into the repository, never at files outside it."""
    outside = re.compile(r"DESIGN\.md|\.\./shared|/work/")
    files = [p for pattern in ("reprdiag/**/*.py", "tests/**/*.py", "bench/**/*.py", "*.md",
                               "docs/*.md", "pyproject.toml") for p in ROOT.glob(pattern)]
    hits = [f"{p.relative_to(ROOT)}:{i}" for p in files if p.resolve() != Path(__file__).resolve()
            for i, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1)
            if outside.search(line)]
    assert hits == [], f"point these at docs/design.md or a file in the repository: {hits}"


def test_design_lists_every_module() -> None:
    """docs/design.md's picture of the package names every top-level module and package of
    reprdiag/, and nothing that is gone: move a module, move its line."""
    text = (DOCS / "design.md").read_text(encoding="utf-8")
    tree = next(block for block in re.findall(r"```\n(.*?)```", text, re.S)
                if block.startswith("reprdiag/\n"))
    listed = {m.group(1) for line in tree.splitlines()
              if re.match(r"  \w", line)  # an entry (continuation lines are indented more)
              for m in re.finditer(r"(\w+(?:\.py|/))(?=[ ,]|$)",
                                   re.split(r"\s{3,}", line.strip())[0])}
    package = ROOT / "reprdiag"
    present = {p.name + ("/" if p.is_dir() else "") for p in package.iterdir()
               if (p.suffix == ".py" or (p / "__init__.py").is_file())}
    assert sorted(present - listed) == [], "docs/design.md does not describe these modules"
    assert sorted(listed - present) == [], "docs/design.md describes modules that are gone"
