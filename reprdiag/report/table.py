"""Rich tables of a report, a comparison and a gate: metrics as rows, inputs (or runs) as
columns under short labels with a legend, wrapped into column groups to fit the terminal."""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from rich.console import JustifyMethod, RenderableType
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from reprdiag.metrics import METRICS
from reprdiag.report.export import change_cells, format_estimate, metric_cell
from reprdiag.results import (
    SCALE_DEPENDENT,
    Comparison,
    GateResult,
    InputResult,
    Report,
    voting_direction,
)

_ARROWS = {"higher": "↑", "lower": "↓", "neutral": "·"}


def metric_tables(report: Report, width: int = 10_000) -> list[RenderableType]:
    """What ``reprdiag analyze`` prints: one input, a table of its metrics with their ranges;
    several, one table with metrics as rows and inputs as columns under short labels, a
    legend of the labels below. Wider than ``width``, the input columns wrap into column
    groups as pandas wraps a wide frame (each group repeats the metric column)."""
    if len(report.inputs) == 1:
        return _single(report)
    return _several(report, width)


def _title(report: Report) -> str:
    """The footer naming the run: version, device (× processes), time, jackknife blocks and
    whether their deleted spectra were first-order updates."""
    parts = [f"reprdiag {report.version}".strip(), f"device {report.device}"]
    if report.world_size > 1:
        parts[-1] += f" × {report.world_size} processes"
    if report.timings.get("total_s"):
        parts.append(f"{report.timings['total_s']:.1f} s")
    methods = [r.uncertainty_method for r in report.inputs if r.uncertainty_method]
    if methods:
        blocks = "/".join(str(k) for k in sorted({m.get("blocks", 0) for m in methods}))
        parts.append(f"± jackknife SE ({blocks} blocks)")
        if any(m.get("deleted_spectra") == "first-order" for m in methods):
            parts.append("first-order deleted spectra")  # and so no spectral bias estimate
    return " · ".join(parts)


def _single(report: Report) -> list[RenderableType]:
    """One input: a row per metric with its value, range and direction; the footer below."""
    r = report.inputs[0]
    table = Table(title=escape(r.name))
    table.add_column("metric", style="bold")
    table.add_column("value ± SE" if r.uncertainty else "value", justify="right")
    table.add_column("range", style="dim")
    table.add_column("", justify="center")
    for name in r.metrics:
        info = METRICS.get(name)
        table.add_row(name, metric_cell(r, name), info.range if info else "",
                      _ARROWS.get(info.direction, "") if info else "")
    footer = legend_lines(["N × d", "", ""], [f"{r.n:,} × {r.d} {r.dtype}", _title(report),
                                          DIRECTIONS])
    return [table, footer]


#: The legend of the direction arrows, under every table of metrics.
DIRECTIONS = "↑ higher is healthier, ↓ lower is healthier, · neither"
#: Longest short label a column takes before the labels fall back to letters.
MAX_LABEL = 16


def short_labels(names: Sequence[str], longest: int = MAX_LABEL) -> list[str]:
    """Short, unique column labels for input names ``path[key]``: the file stems when the
    keys agree, the keys' last parts when the files agree, both otherwise; letters when those
    are not unique or longer than ``longest``.

    >>> short_labels(["data/minilm.safetensors[embeddings]", "data/collapsed.npy[embeddings]"])
    ['minilm', 'collapsed']
    >>> short_labels(["runs/a.h5[hidden/layer_0]", "runs/a.h5[hidden/layer_1]"])
    ['layer_0', 'layer_1']
    >>> short_labels(["a.h5[x]", "b.h5[y]"]), short_labels(["tensor", "tensor"])
    (['a:x', 'b:y'], ['A', 'B'])
    """
    parts = []
    for name in names:
        name, copy = re.fullmatch(r"(.*?)(#\d+)?", name).groups()  # type: ignore[union-attr]
        base, _, key = name.partition("[")
        key = key[:-1] if key.endswith("]") else key
        stem = Path(base).stem if "." in Path(base).name else Path(base).name
        parts.append((stem + (copy or ""), key.rsplit("/", 1)[-1]))
    stems, keys = ({p[i] for p in parts} for i in (0, 1))
    if len(keys) == 1:
        labels = [stem for stem, _ in parts]
    elif len(stems) == 1:
        labels = [key for _, key in parts]
    else:
        labels = [f"{stem}:{key}" if key else stem for stem, key in parts]
    if len(set(labels)) < len(labels) or max(map(len, labels)) > longest:
        labels = [_letters(i) for i in range(len(names))]
    return labels


def _letters(i: int) -> str:
    """``A``…``Z``, then ``AA``, ``AB``… (spreadsheet columns).

    >>> _letters(0), _letters(25), _letters(26)
    ('A', 'Z', 'AA')
    """
    out = ""
    i += 1
    while i:
        i, rest = divmod(i - 1, 26)
        out = chr(65 + rest) + out
    return out


@dataclass
class Column:
    """One column of a wrapped table: header, cells (plain or styled text), alignment."""

    header: str
    cells: list[str | Text]
    justify: JustifyMethod = "right"
    style: str = ""

    @property
    def width(self) -> int:
        """Its printed width: the widest cell or header, plus padding and one rule."""
        cells = [c.plain if isinstance(c, Text) else c for c in self.cells]
        return max([len(self.header), *map(len, cells)]) + 3


def wrapped_tables(title: str, index: list[Column], groups: list[list[Column]],
                   width: int, sections: Sequence[int] = ()) -> list[Table]:
    """Tables of the ``index`` columns and then the column ``groups``, as many groups to a
    table as fit ``width`` (at least one), each table repeating the index, as pandas wraps a
    wide frame; ``sections`` are the rows after which a rule is drawn."""
    fixed = 1 + sum(c.width for c in index)
    parts: list[list[Column]] = [[]]
    used = fixed
    for group in groups:
        need = sum(c.width for c in group)
        if parts[-1] and used + need > width:
            parts.append([])
            used = fixed
        parts[-1] += group
        used += need
    tables = []
    for i, columns in enumerate(parts):
        part = f" ({i + 1}/{len(parts)})" if len(parts) > 1 else ""
        table = Table(title=escape(title + part))
        for col in [*index, *columns]:
            table.add_column(escape(col.header), justify=col.justify, style=col.style,
                             no_wrap=True)
        rows = len(index[0].cells) if index else 0
        for r in range(rows):
            table.add_row(*[c.cells[r] for c in [*index, *columns]],
                          end_section=r in sections)
        tables.append(table)
    return tables


def _direction(name: str) -> str:
    return METRICS[name].direction if name in METRICS else ""


def _metric_index(names: Sequence[str], direction: Callable[[str], str] = _direction
                  ) -> list[Column]:
    """The metric column and the column of its direction arrow."""
    arrows = [_ARROWS.get(direction(n), "") for n in names]
    return [Column("metric", list(names), "left", "bold"), Column("", arrows, "center")]


def legend_lines(labels: Sequence[str], lines: Sequence[str]) -> Text:
    """``label  what it stands for`` lines under a table, the labels aligned (a line with an
    empty label is a note)."""
    pad = max(map(len, labels))
    return Text("\n".join(f"  {lab.ljust(pad)}  {line}".rstrip() if lab else f"  {line}"
                          for lab, line in zip(labels, lines, strict=True)))


def _input_legend(results: Sequence[InputResult], labels: Sequence[str]
                  ) -> tuple[list[str], list[str]]:
    """Legend rows for inputs under short labels: what each label stands for (its key alone
    when every input is of one file, named once), then N × d once when all agree."""
    marks, lines = list(labels), [r.name for r in results]
    paths = {r.path for r in results}
    if len(paths) == 1 and None not in paths and all(r.key for r in results):
        lines = [str(r.key) for r in results]
        marks.append("file")
        lines.append(str(results[0].path))
    shapes = [f"{r.n:,} × {r.d} {r.dtype}" for r in results]
    if len(set(shapes)) == 1:
        marks.append("N × d")
        lines.append(shapes[0] + " (every input)")
    else:
        lines[:len(results)] = [f"{line} · {shape}" for line, shape in zip(
            lines, shapes, strict=False)]
    keep = [(m, line) for m, line in zip(marks, lines, strict=True) if m != line]
    return [m for m, _ in keep], [line for _, line in keep]


def _several(report: Report, width: int = 10_000) -> list[RenderableType]:
    """Metrics as rows, one column per input under a short label; the legend below."""
    names = list(dict.fromkeys(k for r in report.inputs for k in r.metrics))
    labels = short_labels([r.name for r in report.inputs])
    columns = [[Column(lab, [metric_cell(r, n) if n in r.metrics else "" for n in names])]
               for lab, r in zip(labels, report.inputs, strict=True)]
    tables: list[RenderableType] = list(wrapped_tables(
        f"{len(report.inputs)} inputs", _metric_index(names), columns, width))
    marks, lines = _input_legend(report.inputs, labels)
    return [*tables, legend_lines([*marks, "", ""], [*lines, _title(report), DIRECTIONS])]


#: Rich styles of a change by the metric's direction (compare) and of a gate check.
CHANGE_STYLES = {"better": "green", "worse": "bold red", "neutral": "yellow", "same": "dim",
                 "within noise": "dim", "n/a": "dim"}


def comparison_tables(comparison: Comparison, width: int = 10_000) -> list[RenderableType]:
    """``reprdiag compare``'s table: a row per metric (per input and metric for layered runs)
    with its value in each run, then Δ and Δ% of each later run against the first, coloured
    by whether the change is better or worse for that metric. One table, its column groups
    wrapped to ``width`` like pandas; long run labels are shortened, with a legend below."""
    frame = comparison.to_frame()
    runs = list(comparison.runs)
    keys = list(comparison.inputs)
    names = comparison.metric_names
    index = [Column(c.header, c.cells * len(keys), c.justify, c.style)
             for c in _metric_index(names, voting_direction)]
    inputs = keys
    if comparison.layered:
        inputs = short_labels([f"x[{k}]" for k in keys])
        index.insert(0, Column("input", [lab if j == 0 else "" for lab in inputs
                                         for j in range(len(names))], "left", "bold"))
    rows = [(key, name) for key in keys for name in names]
    by_row = {(row["input"], row["metric"], row["run"]): row
              for row in frame.to_dict(orient="records")}

    def columns(labels: Sequence[str]) -> list[list[Column]]:
        groups = [[Column(lab, [metric_cell(comparison.inputs[k][j], m) for k, m in rows])]
                  for j, lab in enumerate(labels)]
        for j, lab in enumerate(labels[1:], start=1):
            changes = [by_row[(k, m, runs[j])] for k, m in rows]
            cells = [change_cells(row) for row in changes]
            styles = [CHANGE_STYLES[row["change"]] for row in changes]
            heads = [f"Δ {lab}", "Δ%", "z"][:len(cells[0]) if cells else 2]
            groups.append([Column(h, [Text(c[i], style=s) for c, s in zip(
                cells, styles, strict=True)]) for i, h in enumerate(heads)])
        return groups

    labels, groups = runs, columns(runs)
    if 1 + sum(c.width for c in [*index, *(c for g in groups for c in g)]) > width:
        labels = short_labels(runs)
        groups = columns(labels)
    noise = (f" · z = Δ/SE, ≈ within noise (|z| < {comparison.noise_z:g})"
             if comparison.has_se else "")
    caption = f"Δ against {labels[0]}: green better, red worse, yellow neutral direction"
    sections = [i * len(names) + len(names) - 1 for i in range(len(keys) - 1)]
    title = (f"{len(keys)} inputs × {len(runs)} runs" if comparison.layered
             else f"{keys[0]} · {len(runs)} runs")
    out: list[RenderableType] = list(wrapped_tables(title, index, groups, width, sections))
    marks, lines = [], []
    if labels != runs:
        shown = [(lab, run) for lab, run in zip(labels, runs, strict=True) if lab != run]
        marks, lines = [m for m, _ in shown], [r for _, r in shown]
    if comparison.layered and inputs != keys:
        marks += inputs
        lines += keys
    shapes = {key: ", ".join(f"{lab} {r.n:,} × {r.d}" for lab, r in zip(
        labels, comparison.inputs[key], strict=True)) for key in keys}
    if len(set(shapes.values())) == 1:
        marks.append("N × d")
        lines.append(shapes[keys[0]] + (" (every input)" if comparison.layered else ""))
    else:
        for key in keys:
            differ = "  (different N × d)" if comparison.shapes_differ(key) else ""
            marks.append("N × d")
            lines.append(f"{key}: {shapes[key]}{differ}")
    scaled = [n for n in names if n in SCALE_DEPENDENT]
    notes = [caption, *([noise.removeprefix(" · ")] if noise else []),
             *([f"{', '.join(scaled)}: depend on the embeddings' scale, so neutral here"]
               if scaled else [])]
    return [*out, legend_lines([*marks, *[""] * len(notes)], [*lines, *notes])]


def gate_table(result: GateResult) -> Table:
    """``reprdiag gate``'s table: one row per rule and input with value, bound, PASS/FAIL."""
    several = len({c.input for c in result.checks}) > 1
    table = Table(title=escape(f"reprdiag gate {result.run}".strip())
                  + (escape(f" · baseline {result.baseline}") if result.baseline else ""))
    if several:
        table.add_column("input", style="bold", overflow="fold")
    for col in ("rule", "value", "bound", "result"):
        table.add_column(col, justify="right" if col == "value" else "left")
    for check in result.checks:
        verdict = "[bold green]PASS[/]" if check.passed else "[bold red]FAIL[/]"
        cells = [escape(check.rule.describe()), format_estimate(check.value, check.se),
                 escape(check.bound_text()), verdict]
        table.add_row(*([escape(check.input)] if several else []), *cells)
    return table
