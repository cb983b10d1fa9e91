"""The tables ``reprdiag analyze`` and ``compare`` print: one table, metrics as rows, short
labels with a legend, 80 columns for up to four inputs, column groups beyond."""

from __future__ import annotations

import re
from dataclasses import replace

import torch
from rich.console import Console, RenderableType

import reprdiag
from reprdiag.metrics import METRICS
from reprdiag.report.table import comparison_tables, metric_tables, short_labels
from reprdiag.results import Comparison, InputResult, Report


def _text(report: Report) -> str:
    console = Console(width=400, record=True)
    for table in metric_tables(report, 400):
        console.print(table)
    return console.export_text()


def test_caption_names_the_processes_of_a_torchrun_report() -> None:
    x = torch.randn(50, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    report = reprdiag.analyze(x, metrics=["vne"], device="cpu")
    assert "device cpu ·" in _text(report) and "processes" not in _text(report)
    assert "device cpu × 3 processes ·" in _text(replace(report, world_size=3))


def _result(name: str, metrics: dict[str, float], n: int = 2000, d: int = 384) -> InputResult:
    path, _, key = name.partition("[")
    return InputResult(name=name, n=n, d=d, dtype="float32", metrics=metrics, spectra={},
                       solver={}, path=path, key=key.rstrip("]") or None)


#: Every metric with a value as wide as a real run prints (``0.0077331``, ``-597.98``).
WIDE = {name: v for name, v in zip(METRICS, [0.0077331, -597.98, 286.25, 2.1e-05] * 5,
                                   strict=False)}


def _render(items: list[RenderableType], width: int) -> list[str]:
    console = Console(width=width, record=True)
    for item in items:
        console.print(item)
    return console.export_text().splitlines()


def _headers(lines: list[str]) -> list[list[str]]:
    """The header cells of each table in the rendered text."""
    return [[c.strip() for c in line.strip("┃").split("┃")] for line in lines
            if line.startswith("┃")]


def test_four_inputs_make_one_table_that_fits_80_columns() -> None:
    files = ["sample_data/minilm.safetensors", "sample_data/collapsed.safetensors",
             "runs/baseline.npy", "runs/epoch_10.h5"]
    report = Report(inputs=[_result(f"{f}[embeddings]", WIDE) for f in files], device="cpu")
    lines = _render(metric_tables(report, 80), 80)
    assert max(map(len, lines)) <= 80
    assert [h for h in _headers(lines)] == [
        ["metric", "", "minilm", "collapsed", "baseline", "epoch_10"]]
    assert "4 inputs" in lines[0] and "(1/" not in "\n".join(lines)
    body = [line.split("│")[1].strip() for line in lines if line.startswith("│")]
    assert body == list(WIDE)  # metrics as rows, in order, each once
    legend = "\n".join(lines)
    for label, f in zip(["minilm", "collapsed", "baseline", "epoch_10"], files, strict=True):
        assert re.search(rf"^  {label} +{re.escape(f)}\[embeddings\]$", legend, re.M)
    assert "2,000 × 384 float32 (every input)" in legend
    assert "↑ higher is healthier, ↓ lower is healthier" in legend


def test_many_inputs_wrap_in_column_groups_like_pandas() -> None:
    keys = [f"hidden_states/layer_{i}" for i in range(12)]
    report = Report(inputs=[_result(f"m.h5[{k}]", WIDE) for k in keys], device="cpu")
    lines = _render(metric_tables(report, 80), 80)
    assert max(map(len, lines)) <= 80
    headers = _headers(lines)
    assert len(headers) > 1 and all(h[:2] == ["metric", ""] for h in headers)
    assert [c for h in headers for c in h[2:]] == [f"layer_{i}" for i in range(12)]
    assert f"12 inputs (1/{len(headers)})" in lines[0]
    rows = [line.split("│")[1].strip() for line in lines if line.startswith("│")]
    assert rows == list(WIDE) * len(headers)  # each part repeats every metric
    assert re.search(r"^  file +m\.h5$", "\n".join(lines), re.M)


def test_short_labels_fall_back_to_letters_when_ambiguous_or_long() -> None:
    assert short_labels(["a/x.npy[e]", "b/x.npy[e]"]) == ["A", "B"]
    assert short_labels(["a_very_long_file_name_here.npy[e]", "b.npy[e]"]) == ["A", "B"]
    assert short_labels(["run", "run#2"]) == ["run", "run#2"]


def test_layered_compare_is_one_table_with_a_section_per_input() -> None:
    keys = [f"hidden_states/layer_{i}" for i in range(7)]
    metrics = {"rankme": 200.0, "vne": 3.5}
    runs = [[_result(f"a.h5[{k}]", metrics) for k in keys],
            [_result(f"b.h5[{k}]", {m: v * 0.9 for m, v in metrics.items()}) for k in keys]]
    comparison = Comparison(runs=["baseline", "candidate"],
                            inputs={k: [runs[0][i], runs[1][i]] for i, k in enumerate(keys)})
    lines = _render(comparison_tables(comparison, 80), 80)
    assert max(map(len, lines)) <= 80
    assert _headers(lines) == [["input", "metric", "", "baseline", "candidate",
                                "Δ candidate", "Δ%"]]
    rows = [[c.strip() for c in line.strip("│").split("│")] for line in lines
            if line.startswith("│")]
    assert [r[0] for r in rows if r[0]] == [f"layer_{i}" for i in range(7)]
    assert [r[1] for r in rows] == ["rankme", "vne"] * 7
    assert all(r[5] == "−20" for r in rows if r[1] == "rankme")
    assert sum(line.startswith("├") for line in lines) == 6  # a rule between inputs
