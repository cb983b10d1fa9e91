"""Writing results as text and files: JSON, CSV, Markdown and JUnit of a :class:`Report`, a
:class:`Comparison` or a :class:`GateResult` (:func:`render`), and the ``--out`` folder of a
report or a comparison (:func:`save`), written atomically.

One style for the three result types: the data is the result's own ``to_dict()`` /
``to_frame()`` (:mod:`reprdiag.results`); every text and file form is a function here taking
the result.
"""

from __future__ import annotations

import contextlib
import io
import math
import os
import re
import tempfile
from collections.abc import Callable
from pathlib import Path
from xml.etree import ElementTree as ET

import numpy as np
import pandas as pd

from reprdiag.errors import ReprdiagError, UsageError, source_label
from reprdiag.report.folder import default_mode, write_error, write_run_folder
from reprdiag.results import (
    NOISE,
    SPECTRUM_KINDS,
    Comparison,
    GateResult,
    InputResult,
    Report,
    format_signed,
    format_value,
)

Result = Report | Comparison | GateResult
#: The text forms :func:`render` writes.
FORMATS = ("json", "csv", "markdown")

PLOT_FORMATS = ("png", "svg", "pdf")


def check_plot_format(fmt: str) -> None:
    """Refuse a plot format other than :data:`PLOT_FORMATS` (before any work is done).

    >>> check_plot_format("svg")
    """
    if fmt not in PLOT_FORMATS:
        raise UsageError(f"unknown plot format {fmt!r}",
                         hint=f"use one of {', '.join(PLOT_FORMATS)}")


def atomic_write(path: Path, write: Callable[[Path], bool | None]) -> None:
    """Write via ``write(tmp)`` to a temporary name beside ``path``, then rename it into place
    (unless ``write`` returns ``False``: nothing to keep, the temporary file is removed).

    A reader never sees a half-written file, and an interrupted run leaves nothing behind
    under the final name. The file gets the mode ``open`` would give it (0666 minus the
    umask), not mkstemp's 0600.
    """
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise write_error(path, exc) from exc
    try:
        os.fchmod(fd, default_mode())
    finally:
        os.close(fd)
    try:
        if write(Path(tmp)) is False:
            Path(tmp).unlink(missing_ok=True)  # the writer may have removed it already
            return
        os.replace(tmp, path)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(exc, OSError):
            raise write_error(path, exc) from exc
        raise


def make_folder(folder: Path) -> Path:
    """Create ``folder`` (and its parents) or raise a one-line :class:`ReprdiagError`."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ReprdiagError(f"cannot create output folder ({exc.strerror})",
                            source=source_label(folder), hint="pick a writable --out") from exc
    return folder


def write_text(path: Path, text: str) -> None:
    atomic_write(path, lambda p: p.write_text(text, encoding="utf-8"))


def spectrum_frame(report: Report) -> pd.DataFrame:
    """Long table of every spectrum: input, spectrum, k, value, fraction, cumulative."""
    frames = []
    for result in report.inputs:
        for kind in SPECTRUM_KINDS:
            values = np.asarray(result.spectra.get(kind, []), dtype=np.float64)
            if values.size == 0:
                continue
            total = values.sum()
            frac = values / total if total > 0 else np.zeros_like(values)
            frames.append(pd.DataFrame({"input": result.name, "spectrum": kind,
                                        "k": np.arange(1, values.size + 1), "value": values,
                                        "fraction": frac, "cumulative": np.cumsum(frac)}))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def metrics_frame(report: Report) -> pd.DataFrame:
    """One row per input: name, path, key, N, d, dtype, every metric, then ``<metric>_se``
    for each metric with a jackknife standard error (``--uncertainty``)."""
    rows = [{"input": r.name, "path": r.path, "key": r.key, "n": r.n, "d": r.d,
             "dtype": r.dtype, **r.metrics,
             **{f"{m}_se": est.get("se", math.nan) for m, est in r.uncertainty.items()}}
            for r in report.inputs]
    return pd.DataFrame(rows)


def format_estimate(value: float, se: float | None = None) -> str:
    """``value ± se`` (the SE to two significant digits), or the value alone without an SE.

    >>> format_estimate(286.2543, 8.61), format_estimate(0.0949, 0.00042), format_estimate(3.0)
    ('286.25 ± 8.6', '0.0949 ± 0.00042', '3')
    """
    if se is None or not math.isfinite(se):
        return format_value(value)
    return f"{format_value(value)} ± {se:.2g}"


def metric_cell(result: InputResult, name: str) -> str:
    """A metric of one input as a table shows it: ``value ± SE`` when it has an SE."""
    return format_estimate(result.metrics.get(name, math.nan),
                           result.se(name) if name in result.uncertainty else None)


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    """A GitHub-flavoured markdown table.

    >>> print(markdown_table(["a", "b"], [["1", "2"]]))
    | a | b |
    |---|---|
    | 1 | 2 |
    """
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def metrics_markdown(report: Report) -> str:
    """Metrics as a markdown table: metrics as rows, one column per input."""
    names = list(dict.fromkeys(k for r in report.inputs for k in r.metrics))
    header = ["metric", *[r.name for r in report.inputs]]
    rows = [[n, *[metric_cell(r, n) for r in report.inputs]] for n in names]
    rows.insert(0, ["N × d", *[f"{r.n} × {r.d}" for r in report.inputs]])
    return markdown_table(header, rows)


def render(result: Result, fmt: str) -> str:
    """A result as ``json``, ``csv`` or ``markdown`` text (tables are rendered by rich:
    :mod:`reprdiag.report.table`)."""
    if fmt == "json":
        return result.to_json()
    if fmt == "csv":
        buf = io.StringIO()
        frame = metrics_frame(result) if isinstance(result, Report) else result.to_frame()
        frame.to_csv(buf, index=False)
        return buf.getvalue()
    if fmt == "markdown":
        if isinstance(result, Report):
            return metrics_markdown(result)
        if isinstance(result, Comparison):
            return comparison_markdown(result)
        return gate_markdown(result)
    raise ValueError(f"unknown format {fmt!r}")


def change_cells(row: pd.Series | dict) -> list[str]:
    """Δ, Δ% (and z, with standard errors; ``≈`` marks a change within noise) of one row of
    :meth:`Comparison.to_frame`."""
    cells = [format_signed(row["delta"]), format_signed(row["delta_pct"], True)]
    if "z" in row:
        mark = " ≈" if row["change"] == NOISE else ""
        cells.append(format_signed(round(row["z"], 1)) + mark)
    return cells


def comparison_markdown(comparison: Comparison) -> str:
    """One markdown table per input: value per run, then Δ and Δ% of each later run."""
    frame = comparison.to_frame()
    blocks = []
    extra = ["z"] if comparison.has_se else []
    runs = comparison.runs
    for key, results in comparison.inputs.items():
        header = ["metric", *runs]
        for label in runs[1:]:
            header += [f"Δ {label}", f"Δ% {label}", *[f"{e} {label}" for e in extra]]
        rows = [["N × d", *[f"{r.n} × {r.d}" for r in results]]
                + [""] * (2 + len(extra)) * (len(runs) - 1)]
        for name in comparison.metric_names:
            part = frame[(frame["input"] == key) & (frame["metric"] == name)]
            cells = [name, *[metric_cell(r, name) for r in results]]
            for _, row in part.iloc[1:].iterrows():
                cells += change_cells(row)
            rows.append(cells)
        title = f"### {key}\n\n" if comparison.layered else ""
        blocks.append(title + markdown_table(header, rows))
    return "\n\n".join(blocks) + f"\n\n{comparison.verdict()}\n"


def gate_markdown(result: GateResult) -> str:
    """A markdown table of the checks (for ``GITHUB_STEP_SUMMARY`` and ``--format``)."""
    header = ["input", "rule", "value", "bound", "result"]
    rows = [[c.input, c.rule.describe(), format_estimate(c.value, c.se), c.bound_text(),
             "✅ PASS" if c.passed else "❌ FAIL"] for c in result.checks]
    title = f"### reprdiag gate {result.run}: {result.summary()}"
    return f"{title}\n\n{markdown_table(header, rows)}\n"


def junit_xml(result: GateResult) -> str:
    """JUnit XML: one ``<testcase>`` per check, a ``<failure>`` for each that failed."""
    suite = ET.Element("testsuite", name=f"reprdiag gate {result.run}".strip(),
                       tests=str(len(result.checks)), failures=str(len(result.failures)),
                       errors="0", skipped="0")
    for check in result.checks:
        case = ET.SubElement(suite, "testcase", classname=f"reprdiag.gate.{check.input}",
                             name=check.rule.describe())
        if not check.passed:
            failure = ET.SubElement(case, "failure", message=check.message(), type="GateFailure")
            failure.text = check.message()
    root = ET.Element("testsuites", tests=suite.get("tests", "0"),
                      failures=suite.get("failures", "0"))
    root.append(suite)
    ET.indent(root)
    return '<?xml version="1.0" encoding="utf-8"?>\n' + ET.tostring(root, encoding="unicode")


def write_junit(result: GateResult, path: str | os.PathLike[str]) -> Path:
    """Write :func:`junit_xml` to ``path`` atomically."""
    target = Path(path)
    write_text(target, junit_xml(result))
    return target


def summary_markdown(report: Report) -> str:
    lines = ["# reprdiag report\n", f"- version: {report.version}",
             f"- device: {report.device}", f"- created: {report.created}",
             f"- command: `{' '.join(report.command)}`\n", metrics_markdown(report), ""]
    for r in report.inputs:
        lines.append(f"- **{r.name}**: N={r.n}, d={r.d}, dtype={r.dtype}, "
                     f"sample={r.sample_size}, solvers: "
                     + "; ".join(f"{k}: {v}" for k, v in r.solver.items()))
    warned = [f"- ⚠ **{r.name}**: {w}" for r in report.inputs for w in r.warnings]
    if warned:
        lines += ["", "## Warnings", "", *warned]
    return "\n".join(lines) + "\n"


def slug(name: str) -> str:
    """A file-name-safe form of an input name.

    >>> slug("runs/a.h5[hidden_states/layer_3]")
    'a.h5-hidden_states-layer_3'
    """
    base = name.split("[", 1)
    stem = Path(base[0]).name + ("-" + base[1].rstrip("]") if len(base) > 1 else "")
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", stem).strip("-") or "input"


def unique_slugs(names: list[str]) -> list[str]:
    """:func:`slug` of each name, made unique (case-insensitively, for file systems that
    ignore case) by a ``-2``, ``-3``... suffix on the later of names that slug alike.

    >>> unique_slugs(["f.h5[a/b]", "f.h5[a-b]", "f.h5[a b]"])
    ['f.h5-a-b', 'f.h5-a-b-2', 'f.h5-a-b-3']
    """
    taken: set[str] = set()
    out = []
    for name in names:
        base = candidate = slug(name)
        count = 1
        while candidate.lower() in taken:
            count += 1
            candidate = f"{base}-{count}"
        taken.add(candidate.lower())
        out.append(candidate)
    return out


def save(result: Report | Comparison, out_dir: Path, plots: bool = True,
         plot_format: str = "png") -> Path | list[Path]:
    """The ``--out`` folder of a report (:func:`save_report`, returns the folder) or of a
    comparison (:func:`save_comparison`, returns the files written)."""
    if isinstance(result, Comparison):
        return save_comparison(result, out_dir, plots, plot_format)
    return save_report(result, out_dir, plots, plot_format)


def save_report(report: Report, out_dir: Path, plots: bool = True,
                plot_format: str = "png") -> Path:
    """Make ``out_dir`` hold this run: report.json, metrics.csv, spectrum.csv, summary.md,
    report.html (one self-contained page) and the plots, swapped in whole
    (:func:`reprdiag.report.folder.write_run_folder`), so that the folder holds the old run
    or the new one, never a mix, and nothing of the old run."""
    check_plot_format(plot_format)

    def write(folder: Path) -> None:
        metrics_frame(report).to_csv(folder / "metrics.csv", index=False)
        spectrum_frame(report).to_csv(folder / "spectrum.csv", index=False)
        (folder / "summary.md").write_text(summary_markdown(report), encoding="utf-8")
        drawn = []
        if plots:
            from reprdiag.report.plots import save_plots

            drawn = save_plots(report, folder, plot_format)
        from reprdiag.report.html import report_html

        (folder / "report.html").write_text(report_html(report, folder, drawn),
                                            encoding="utf-8")
        (folder / "report.json").write_text(report.to_json(), encoding="utf-8")

    return write_run_folder(out_dir, write)


def save_comparison(comparison: Comparison, out_dir: Path, plots: bool = True,
                    plot_format: str = "png") -> list[Path]:
    """Make ``out_dir`` hold compare.csv, compare.json, compare.md, compare.html (one
    self-contained page) and the plots (compare.png, and compare-layers.png for layered
    runs), swapped in whole (:func:`reprdiag.report.folder.write_run_folder`); return the
    paths."""
    check_plot_format(plot_format)
    names: list[str] = []

    def write(folder: Path) -> None:
        for name, fmt in (("compare.csv", "csv"), ("compare.json", "json"),
                          ("compare.md", "markdown")):
            (folder / name).write_text(render(comparison, fmt), encoding="utf-8")
            names.append(name)
        drawn: list[Path] = []
        if plots:
            from reprdiag.report.plots import save_compare_plots

            drawn = save_compare_plots(comparison, folder, plot_format)
            names.extend(p.name for p in drawn)
        from reprdiag.report.html import comparison_html

        (folder / "compare.html").write_text(comparison_html(comparison, drawn),
                                             encoding="utf-8")
        names.append("compare.html")

    write_run_folder(out_dir, write)
    return [out_dir / name for name in names]
