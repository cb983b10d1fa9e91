"""Rich tables of a report: metrics as rows for one input, as columns for several."""

from __future__ import annotations

from typing import TYPE_CHECKING

from rich.markup import escape
from rich.table import Table

from reprdiag.metrics import METRICS
from reprdiag.report.export import format_estimate, metric_cell
from reprdiag.report.model import Report

if TYPE_CHECKING:
    from reprdiag.compare import Comparison
    from reprdiag.gate import GateResult

_ARROWS = {"higher": "↑", "lower": "↓", "neutral": "·"}


def metric_tables(report: Report, width: int = 10_000) -> list[Table]:
    """The table(s) ``reprdiag analyze`` prints: one input, metrics as rows; several
    inputs, metrics as columns (wrapped into several tables to fit ``width``)."""
    if len(report.inputs) == 1:
        return [_single(report)]
    return _several(report, width)


def _title(report: Report) -> str:
    title = f"reprdiag · device {report.device}"
    if report.world_size > 1:
        title += f" × {report.world_size} processes"
    methods = [r.uncertainty_method for r in report.inputs if r.uncertainty_method]
    if methods:
        blocks = "/".join(str(k) for k in sorted({m.get("blocks", 0) for m in methods}))
        title += f" · ± jackknife SE ({blocks} blocks)"
    return title


def _single(report: Report) -> Table:
    r = report.inputs[0]
    table = Table(title=escape(f"{r.name}  N={r.n:,}  d={r.d}  {r.dtype}"),
                  caption=f"{_title(report)} · ↑ higher is healthier, ↓ lower is")
    table.add_column("metric", style="bold")
    table.add_column("value ± SE" if r.uncertainty else "value", justify="right")
    table.add_column("range", style="dim")
    table.add_column("", justify="center")
    for name in r.metrics:
        info = METRICS.get(name)
        table.add_row(name, metric_cell(r, name), info.range if info else "",
                      _ARROWS.get(info.direction, "") if info else "")
    return table


def _several(report: Report, width: int = 10_000) -> list[Table]:
    """Inputs as rows, metrics as columns, split into as many tables as ``width`` needs
    (like pandas wraps a wide frame); each table repeats the input column."""
    names = list(dict.fromkeys(k for r in report.inputs for k in r.metrics))
    first = min(max(len(r.name) for r in report.inputs), 48) + 16
    groups: list[list[str]] = [[]]
    used = first
    cell = 19 if any(r.uncertainty for r in report.inputs) else 9  # "value ± SE" is wider
    for name in names:
        need = max(len(name) + 2, cell) + 3
        if groups[-1] and used + need > width:
            groups.append([])
            used = first
        groups[-1].append(name)
        used += need
    tables = []
    for i, group in enumerate(groups):
        part = f" ({i + 1}/{len(groups)})" if len(groups) > 1 else ""
        table = Table(title=f"{len(report.inputs)} inputs{part}", caption=_title(report)
                      if i == len(groups) - 1 else None)
        table.add_column("input", style="bold", overflow="fold", max_width=48)
        table.add_column("N × d", justify="right", no_wrap=True)
        for name in group:
            info = METRICS.get(name)
            arrow = _ARROWS.get(info.direction, "") if info else ""
            table.add_column(f"{name} {arrow}".strip(), justify="right", no_wrap=True)
        for r in report.inputs:
            table.add_row(escape(r.name), f"{r.n:,} × {r.d}",
                          *[metric_cell(r, n) for n in group])
        tables.append(table)
    return tables


def metrics_list_table() -> Table:
    """``--list-metrics``: each metric with its definition, range, direction and citation."""
    from reprdiag.metrics.registry import resolve

    table = Table(title="reprdiag metrics", show_lines=True)
    for col in ("name", "definition", "range", "direction", "citation"):
        table.add_column(col, overflow="fold")
    for info in resolve(None):
        table.add_row(info.name, escape(info.summary), escape(info.range),
                      f"{_ARROWS[info.direction]} {info.direction}", info.citation)
    return table


#: Rich styles of a change by the metric's direction (compare) and of a gate check.
CHANGE_STYLES = {"better": "green", "worse": "bold red", "neutral": "yellow", "same": "dim",
                 "within noise": "dim", "n/a": "dim"}


def comparison_tables(comparison: Comparison) -> list[Table]:
    """``reprdiag compare``'s tables, one per matched input: a row per metric with its value
    in each run, then Δ and Δ% of each later run against the first, coloured by whether the
    change is better or worse for that metric."""
    from reprdiag.compare import change_cells

    frame = comparison.frame
    tables = []
    for key, results in comparison.inputs.items():
        shapes = "  ".join(f"{lab}: {r.n:,}×{r.d}" for lab, r in zip(
            comparison.runs, results, strict=True))
        differ = "  (different N × d)" if comparison.shapes_differ(key) else ""
        noise = (f" · z = Δ/SE, ≈ within noise (|z| < {comparison.noise_z:g})"
                 if comparison.has_se else "")
        table = Table(title=escape(f"{key}  ·  {shapes}{differ}"),
                      caption="Δ against " + escape(comparison.runs[0]) + " · green better, "
                      "red worse, yellow neutral direction" + noise)
        table.add_column("metric", style="bold")
        table.add_column("", justify="center")
        for label in comparison.runs:
            table.add_column(escape(label), justify="right", overflow="fold")
        for label in comparison.runs[1:]:
            table.add_column(escape(f"Δ {label}"), justify="right", overflow="fold")
            table.add_column("Δ%", justify="right")
            if comparison.has_se:
                table.add_column("z", justify="right")
        for name in comparison.metric_names:
            part = frame[(frame["input"] == key) & (frame["metric"] == name)]
            info = METRICS.get(name)
            cells = [name, _ARROWS.get(info.direction, "") if info else "",
                     *[metric_cell(r, name) for r in results]]
            for _, row in part.iloc[1:].iterrows():
                style = CHANGE_STYLES[row["change"]]
                cells += [f"[{style}]{escape(c)}[/]" for c in change_cells(row)]
            table.add_row(*cells)
        tables.append(table)
    return tables


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
