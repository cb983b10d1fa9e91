"""``report.html`` (issue 18 item 2): one valid, self-contained page that fetches nothing, with
the metrics table, the plots embedded and the provenance; a headless browser renders it."""

from __future__ import annotations

import base64
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest

from reprdiag.metrics import METRICS
from tests.helpers import SAMPLE, run_main

VOID = {"meta", "img", "br", "hr", "input", "link", "source", "col", "area", "base", "wbr",
        "path", "rect", "circle", "line", "polyline", "polygon", "use", "stop", "ellipse"}
FILES = [str(SAMPLE / "minilm.safetensors"), str(SAMPLE / "collapsed.safetensors")]


class Checker(HTMLParser):
    """Records tags, attributes and nesting errors of a page."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.stack: list[str] = []
        self.errors: list[str] = []
        self.tags: list[str] = []
        self.attrs: list[tuple[str, str, str]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        self.attrs += [(tag, k, v or "") for k, v in attrs]
        if tag not in VOID:
            self.stack.append(tag)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        self.attrs += [(tag, k, v or "") for k, v in attrs]

    def handle_endtag(self, tag: str) -> None:
        if tag in VOID:
            return
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"</{tag}> closes {self.stack[-1:] or 'nothing'}")
            return
        self.stack.pop()

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def _analyze(out: Path, *extra: str) -> Path:
    proc = run_main(["analyze", *FILES, "--out", str(out), "-q", "--device", "cpu", *extra])
    assert proc.returncode == 0, proc.stderr
    return out / "report.html"


@pytest.fixture(scope="module")
def page(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _analyze(tmp_path_factory.mktemp("html") / "run")


def _check(path: Path) -> Checker:
    text = path.read_text(encoding="utf-8")
    assert text.startswith("<!DOCTYPE html>")
    checker = Checker()
    checker.feed(text)
    checker.close()
    assert checker.errors == [] and checker.stack == [], (checker.errors, checker.stack)
    assert [checker.tags.count(t) for t in ("html", "head", "body", "title")] == [1, 1, 1, 1]
    return checker


def test_page_is_valid_and_fetches_nothing(page: Path) -> None:
    checker = _check(page)
    assert not {"script", "link", "iframe", "object", "embed"} & set(checker.tags)
    for tag, key, value in checker.attrs:
        if key in ("src", "href", "xlink:href", "srcset", "action"):
            assert value.startswith("data:") or value.startswith("#"), (tag, key, value[:60])
    style = page.read_text(encoding="utf-8").split("<style>")[1].split("</style>")[0]
    assert "url(" not in style and "@import" not in style
    images = [v for t, k, v in checker.attrs if t == "img" and k == "src"]
    assert len(images) == 3  # a spectrum per input, and layers.png
    for src in images:
        assert base64.b64decode(src.split(",", 1)[1])[:8] == b"\x89PNG\r\n\x1a\n"


def test_page_holds_the_table_inputs_and_provenance(page: Path) -> None:
    text = " ".join(" ".join(_check(page).text).split())
    for name, info in METRICS.items():
        assert (name in text) == (info.needs is None), name  # no labels/pair were given
    for f in FILES:
        assert f"{f}[embeddings]" in text
    assert "2,000 × 384 float32" in text and f"analyze {FILES[0]} {FILES[1]}" in text
    report = (page.parent / "report.json").read_text(encoding="utf-8")
    rankme = re.search(r'"rankme": ([0-9.]+)', report)
    assert rankme and f"{float(rankme.group(1)):.2f}" in text  # the value the table shows


def test_svg_plots_are_inline(tmp_path: Path) -> None:
    checker = _check(_analyze(tmp_path / "svg", "--plot-format", "svg", "-m", "vne"))
    assert checker.tags.count("svg") == 3 and "img" not in checker.tags


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(CHROMIUM is None, reason="no chromium on this machine")
def test_headless_chromium_renders_the_page(page: Path, tmp_path: Path) -> None:
    shot = tmp_path / "page.png"
    subprocess.run([str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu",
                    "--disable-background-networking", "--no-first-run",
                    f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1200,2400",
                    f"--screenshot={shot}", page.as_uri()], capture_output=True, timeout=120)
    data = shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 50_000  # a page, not a blank


def test_compare_page_holds_the_verdict_table_and_plot(tmp_path: Path) -> None:
    proc = run_main(["compare", *FILES, "-m", "vne,rankme", "--out", str(tmp_path / "cmp"), "-q",
                     "--device", "cpu", "-f", "json"])
    assert proc.returncode == 0, proc.stderr
    import json

    verdict = json.loads(proc.stdout)["verdict"]
    checker = _check(tmp_path / "cmp" / "compare.html")
    text = " ".join(" ".join(checker.text).split())
    assert verdict in text and "Δ collapsed.safetensors" in text
    assert "script" not in checker.tags
    images = [v for t, k, v in checker.attrs if t == "img" and k == "src"]
    assert len(images) == 1 and images[0].startswith("data:image/png;base64,")
