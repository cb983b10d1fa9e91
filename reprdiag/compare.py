"""Compare runs: each metric's value per run, its change against the first run, and a verdict.

Inputs are matched across runs by key (``layer_3`` with ``layer_3``); runs that hold one
input each are matched whatever their keys. Δ = value − reference value, exactly (a run
compared with itself gives Δ = 0); Δ% = 100·Δ/|reference value|. Each change is ``better``,
``worse`` or ``neutral`` by the metric's direction (METRICS[name].direction), ``same`` when
Δ = 0 and ``n/a`` when a value is missing. When the runs carry jackknife standard errors
(``analyze --uncertainty``), z = Δ/√(se_ref² + se_run²) and a change with |z| < 2
(``noise_z``) is ``within noise``: the verdict speaks only of the others.

>>> import torch, reprdiag
>>> x = torch.randn(200, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
>>> cmp = reprdiag.compare([x, x[:, :2]], metrics=["rankme"], device="cpu")
>>> row = cmp.frame.iloc[-1]
>>> row["run"], row["change"], bool(row["delta"] < 0)
('run2', 'worse', True)
"""

from __future__ import annotations

import io
import json
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from reprdiag.defaults import NOISE_Z
from reprdiag.distributed import joined
from reprdiag.errors import InputError
from reprdiag.metrics import METRICS, resolve
from reprdiag.report.export import (
    check_plot_format,
    format_value,
    markdown_table,
    metric_cell,
)
from reprdiag.report.folder import write_run_folder
from reprdiag.report.model import InputResult, Report
from reprdiag.runs import RunLike, input_key, load_run, run_label, unique_labels

#: |Δ%| below this counts as unchanged in the verdict's tallies (the table shows every Δ).
VERDICT_TOLERANCE_PCT = 1.0
#: How many of the largest changes the verdict names per run.
VERDICT_TOP = 3

#: What a change with |z| < NOISE_Z is called (runs with standard errors).
NOISE = "within noise"

CHANGES = ("better", "worse", "neutral", "same", NOISE, "n/a")


def z_score(delta: float, se_ref: float, se_run: float) -> float:
    """z = Δ/√(se_ref² + se_run²), the change in units of its standard error; NaN when an SE
    is missing, 0 when Δ = 0, ±inf when Δ ≠ 0 with both SEs 0.

    >>> z_score(1.0, 0.3, 0.4), z_score(0.0, 0.0, 0.0), z_score(1.0, float("nan"), 0.1)
    (2.0, 0.0, nan)
    """
    if not (math.isfinite(delta) and math.isfinite(se_ref) and math.isfinite(se_run)):
        return math.nan
    if delta == 0:
        return 0.0
    scale = math.hypot(se_ref, se_run)
    return delta / scale if scale > 0 else math.copysign(math.inf, delta)


#: Metrics whose value changes when the embeddings are rescaled (x → s·x): their "better" at
#: one scale is not better at another, so a change of theirs is ``neutral`` and does not vote
#: in the verdict. Every other metric is scale-invariant by definition
#: (tests/test_scale_invariance.py; tests/test_compare.py checks these three do move).
SCALE_DEPENDENT = ("partition_isotropy", "cov_offdiag", "vicreg_std")
#: How inputs are matched across runs: by exact key, or by the key's last path component.
MATCHES = ("key", "suffix")


def voting_direction(name: str) -> str:
    """The direction a change of metric ``name`` is judged by in a comparison: its registry
    direction, except ``neutral`` for :data:`SCALE_DEPENDENT` metrics.

    >>> voting_direction("rankme"), voting_direction("cov_offdiag"), voting_direction("alpha_req")
    ('higher', 'neutral', 'neutral')
    """
    if name in SCALE_DEPENDENT or name not in METRICS:
        return "neutral"
    return METRICS[name].direction


def classify(delta: float, direction: str) -> str:
    """``better``/``worse``/``neutral`` for a change of a metric with that direction.

    >>> classify(2.0, "higher"), classify(2.0, "lower"), classify(-1.0, "neutral")
    ('better', 'worse', 'neutral')
    >>> classify(0.0, "higher"), classify(float("nan"), "higher")
    ('same', 'n/a')
    """
    if not math.isfinite(delta):
        return "n/a"
    if delta == 0:
        return "same"
    if direction not in ("higher", "lower"):
        return "neutral"
    return "better" if (delta > 0) == (direction == "higher") else "worse"


def relative_change(value: float, reference: float) -> float:
    """Δ% = 100·(value − reference)/|reference|; 0 when equal, NaN when the reference is 0.

    >>> relative_change(90.0, 100.0), relative_change(-3.0, -2.0), relative_change(1.0, 1.0)
    (-10.0, -50.0, 0.0)
    """
    delta = value - reference
    if delta == 0:
        return 0.0
    return 100.0 * delta / abs(reference) if reference != 0 else math.nan


def match_key(result: InputResult, match: str = "key") -> str:
    """What an input is matched by: its key (``match="key"``), or the key's last path
    component (``"suffix"``: ``hidden_states/layer_3`` pairs with ``layer_3``).

    >>> r = InputResult("a.h5[hidden_states/layer_3]", 1, 1, "float32", {}, {}, {},
    ...                 key="hidden_states/layer_3")
    >>> match_key(r), match_key(r, "suffix")
    ('hidden_states/layer_3', 'layer_3')
    """
    key = input_key(result)
    return key.rsplit("/", 1)[-1] if match == "suffix" else key


def _keyed(report: Report, label: str, match: str) -> dict[str, InputResult]:
    keyed: dict[str, InputResult] = {}
    for r in report.inputs:
        k = match_key(r, match)
        if k in keyed:
            raise InputError(f"inputs {input_key(keyed[k])} and {input_key(r)} both end in "
                             f"{k!r}", source=label, hint="match them by full key (--match "
                             "key), or pick one with --key")
        keyed[k] = r
    return keyed


def match_inputs(reports: Sequence[Report], labels: Sequence[str], match: str = "key"
                 ) -> tuple[dict[str, list[InputResult]], list[str]]:
    """Pair the inputs of several runs: ``{key: [result in run 0, run 1, ...]}`` plus notes
    on inputs that only some runs hold.

    Runs holding a single input each are paired whatever their keys; otherwise inputs are
    matched by key (``match="suffix"``: by the key's last path component), in the first
    run's order.
    """
    if match not in MATCHES:
        from reprdiag.errors import UsageError

        raise UsageError(f"unknown --match {match!r}", hint=f"use one of {', '.join(MATCHES)}")
    if all(len(r.inputs) == 1 for r in reports):
        return {input_key(reports[0].inputs[0]): [r.inputs[0] for r in reports]}, []
    keyed = [_keyed(rep, lab, match) for rep, lab in zip(reports, labels, strict=True)]
    common = [k for k in keyed[0] if all(k in run for run in keyed)]
    if not common:
        listing = "; ".join(f"{lab}: {', '.join(run) or '-'}" for lab, run in zip(
            labels, keyed, strict=True))
        suffix = "" if match == "suffix" else "; keys that differ by a prefix pair with "\
            "--match suffix"
        raise InputError("the runs share no input key", source=", ".join(labels),
                         hint=f"pick one input of each with --key ({listing}){suffix}")
    notes = []
    for key in dict.fromkeys(k for run in keyed for k in run):
        if key not in common:
            holders = [lab for lab, run in zip(labels, keyed, strict=True) if key in run]
            notes.append(f"{key} only in {', '.join(holders)}; skipped")
    return {k: [run[k] for run in keyed] for k in common}, notes


@dataclass
class Comparison:
    """Several runs side by side. ``runs[0]`` is the reference of every Δ.

    ``inputs[key][j]`` is run ``j``'s result for input ``key``; :attr:`frame` is the long
    table (one row per input, metric and run).
    """

    runs: list[str]
    inputs: dict[str, list[InputResult]]
    notes: list[str] = field(default_factory=list)
    only: list[str] | None = None  #: show just these metrics (default: every shared one)
    noise_z: float = NOISE_Z  #: |z| below this is "within noise"

    @property
    def layered(self) -> bool:
        return len(self.inputs) > 1

    @property
    def metric_names(self) -> list[str]:
        """Metrics present in every run, in the first run's order."""
        names: list[str] = []
        for results in self.inputs.values():
            names += [m for m in results[0].metrics if all(m in r.metrics for r in results)]
        if self.only is not None:
            names = [m for m in self.only if m in names]
        return list(dict.fromkeys(names))

    def shapes_differ(self, key: str) -> bool:
        return len({(r.n, r.d) for r in self.inputs[key]}) > 1

    @property
    def has_se(self) -> bool:
        """Whether any run carries jackknife standard errors (``analyze --uncertainty``)."""
        return any(r.uncertainty for results in self.inputs.values() for r in results)

    @property
    def frame(self) -> pd.DataFrame:
        """Columns: input, metric, direction, run, n, d, value, delta, delta_pct, change; with
        standard errors also se (of the value) and z (of the change)."""
        rows = []
        for key, results in self.inputs.items():
            for name in self.metric_names:
                direction = voting_direction(name)
                ref = results[0].metrics.get(name, math.nan)
                for label, res in zip(self.runs, results, strict=True):
                    value = res.metrics.get(name, math.nan)
                    delta = value - ref
                    row = {"input": key, "metric": name, "direction": direction,
                           "run": label, "n": res.n, "d": res.d, "value": value,
                           "delta": delta, "delta_pct": relative_change(value, ref),
                           "change": classify(delta, direction)}
                    if self.has_se:
                        z = z_score(delta, results[0].se(name), res.se(name))
                        row.update(se=res.se(name), z=z if res is not results[0] else math.nan)
                        if abs(row["z"]) < self.noise_z and row["change"] not in ("same", "n/a"):
                            row["change"] = NOISE
                    rows.append(row)
        return pd.DataFrame(rows)

    def verdict(self) -> str:
        """One line: per run, how many metrics got worse/better and the largest changes."""
        frame = self.frame
        parts = []
        for label in self.runs[1:]:
            part = frame[frame["run"] == label]
            parts.append(f"{label} vs {self.runs[0]}: "
                         f"{_run_verdict(part, self.layered, self.noise_z)}")
        return " | ".join(parts) if parts else f"{self.runs[0]}: nothing to compare against"

    def to_dict(self) -> dict[str, Any]:
        rows = [{k: _json_value(v) for k, v in row.items()}
                for row in self.frame.to_dict(orient="records")]
        return {"runs": self.runs, "inputs": list(self.inputs), "notes": self.notes,
                "verdict": self.verdict(), "rows": rows}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, allow_nan=False, ensure_ascii=False)

    def to_csv(self) -> str:
        buf = io.StringIO()
        self.frame.to_csv(buf, index=False)
        return buf.getvalue()

    def to_markdown(self) -> str:
        """One markdown table per input: value per run, then Δ and Δ% of each later run."""
        frame = self.frame
        blocks = []
        extra = ["z"] if self.has_se else []
        for key, results in self.inputs.items():
            header = ["metric", *self.runs]
            for label in self.runs[1:]:
                header += [f"Δ {label}", f"Δ% {label}", *[f"{e} {label}" for e in extra]]
            rows = [["N × d", *[f"{r.n} × {r.d}" for r in results]]
                    + [""] * (2 + len(extra)) * (len(self.runs) - 1)]
            for name in self.metric_names:
                part = frame[(frame["input"] == key) & (frame["metric"] == name)]
                cells = [name, *[metric_cell(r, name) for r in results]]
                for _, row in part.iloc[1:].iterrows():
                    cells += change_cells(row)
                rows.append(cells)
            title = f"### {key}\n\n" if self.layered else ""
            blocks.append(title + markdown_table(header, rows))
        return "\n\n".join(blocks) + f"\n\n{self.verdict()}\n"

    def save(self, out_dir: str | Path, plots: bool = True, plot_format: str = "png"
             ) -> list[Path]:
        """Make ``out_dir`` hold compare.csv, compare.json, compare.md, compare.html (one
        self-contained page) and the plots (compare.png, and compare-layers.png for layered
        runs), swapped in whole (:func:`reprdiag.report.folder.write_run_folder`); return the
        paths."""
        out = Path(out_dir)
        check_plot_format(plot_format)
        names: list[str] = []

        def write(folder: Path) -> None:
            for name, text in (("compare.csv", self.to_csv()), ("compare.json", self.to_json()),
                               ("compare.md", self.to_markdown())):
                (folder / name).write_text(text, encoding="utf-8")
                names.append(name)
            drawn: list[Path] = []
            if plots:
                from reprdiag.report.plots import save_compare_plots

                drawn = save_compare_plots(self, folder, plot_format)
                names.extend(p.name for p in drawn)
            from reprdiag.report.html import comparison_html

            (folder / "compare.html").write_text(comparison_html(self, drawn), encoding="utf-8")
            names.append("compare.html")

        write_run_folder(out, write)
        return [out / name for name in names]


def change_cells(row: pd.Series) -> list[str]:
    """Δ, Δ% (and z, with standard errors; ``≈`` marks a change within noise) of one row of
    :attr:`Comparison.frame`."""
    cells = [format_signed(row["delta"]), format_signed(row["delta_pct"], True)]
    if "z" in row:
        mark = " ≈" if row["change"] == NOISE else ""
        cells.append(format_signed(round(row["z"], 1)) + mark)
    return cells


def format_signed(value: float, percent: bool = False) -> str:
    """A signed change: ``+0.5``, ``−2``, ``0``; with ``percent``, one decimal and ``%``.

    >>> format_signed(0.5), format_signed(-2.0), format_signed(0.0)
    ('+0.5', '−2', '0')
    >>> format_signed(12.34, True), format_signed(-98.0, True), format_signed(0.0, True)
    ('+12.3%', '−98.0%', '0%')
    >>> format_signed(-0.0123, True), format_signed(0.04, True)
    ('−0.01%', '+0.04%')
    """
    if not math.isfinite(value):
        return "n/a"
    if value == 0:
        return "0%" if percent else "0"
    if percent:  # a change too small for one decimal still shows a digit, never "−0.0%"
        text = f"{abs(value):.1f}%" if abs(value) >= 0.05 else f"{abs(value):.1g}%"
    else:
        text = format_value(abs(value))
    return ("+" if value > 0 else "−") + text


def _json_value(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value.item() if hasattr(value, "item") else value


def _run_verdict(part: pd.DataFrame, layered: bool, noise_z: float = NOISE_Z) -> str:
    """Tallies and the largest changes of one run; changes within noise are only counted."""
    if (part["delta"] == 0).all():
        return "identical (every Δ = 0)"
    noise = int((part["change"] == NOISE).sum())
    real = part[part["change"] != NOISE]
    moved = real[real["delta_pct"].abs() >= VERDICT_TOLERANCE_PCT]
    counts = moved["change"].value_counts()
    tally = ", ".join(f"{int(counts[c])} {c}" for c in ("worse", "better", "neutral")
                      if c in counts) or ("no real change" if noise else "no metric moved")
    top = real.reindex(real["delta_pct"].abs().sort_values(ascending=False).index)
    top = top[top["delta_pct"].abs() >= VERDICT_TOLERANCE_PCT].head(VERDICT_TOP)
    named = ", ".join(
        f"{(row['input'] + '/') if layered else ''}{row['metric']} "
        f"{format_signed(row['delta_pct'], True)} ({row['change']}"
        + (f", z = {format_signed(round(row['z'], 1))}" if math.isfinite(row.get("z", math.nan))
           else "") + ")"
        for _, row in top.iterrows())
    gauge = f"|Δ| ≥ {VERDICT_TOLERANCE_PCT:g}%" + (f", |z| ≥ {noise_z:g}" if "z" in part
                                                    else "")
    within = f"; {noise} within noise (|z| < {noise_z:g})" if noise else ""
    return f"{tally} ({gauge}){within}" + (f"; largest: {named}" if named else "")


def compare(runs: Sequence[RunLike], *, keys: Sequence[str] | None = None,
            labels: Sequence[str] | None = None, noise_z: float = NOISE_Z, match: str = "key",
            **analyze_options: Any) -> Comparison:
    """Compare two or more runs against the first.

    Each run is a run folder (``report.json``), a report file, an embedding file or tensor
    (analyzed with :func:`reprdiag.analyze` and ``analyze_options``), or a :class:`Report`.
    ``keys`` picks the inputs to compare and ``metrics`` (an analyze option) the metrics
    shown. A path given twice is read once. With standard errors (runs analyzed with
    ``uncertainty=True``), changes with |z| < ``noise_z`` are "within noise". ``match="suffix"``
    pairs inputs whose keys differ by a prefix (``hidden_states/layer_3`` with ``layer_3``).
    """
    if not (math.isfinite(noise_z) and noise_z > 0):
        from reprdiag.errors import UsageError

        raise UsageError(f"--noise-z must be a positive number, got {noise_z}",
                         hint=f"the default is {NOISE_Z:g} standard errors")
    if len(runs) < 2:
        from reprdiag.errors import UsageError

        raise UsageError(f"compare needs at least two runs, got {len(runs)}",
                         hint="reprdiag compare A B [C ...]")
    only = analyze_options.get("metrics")
    if only:
        resolve(only)  # unknown names fail before any reading
    with joined(analyze_options) as options:  # torchrun: one process group for every run
        reports = _load_all(runs, keys, options)
    names = unique_labels(labels or [run_label(run, i) for i, run in enumerate(runs)])
    matched, notes = match_inputs(reports, names, match)
    comparison = Comparison(runs=names, inputs=matched, notes=notes,
                            only=list(only) if only else None, noise_z=noise_z)
    for key, results in matched.items():
        if comparison.shapes_differ(key):
            shapes = ", ".join(f"{lab} {r.n}×{r.d}" for lab, r in zip(names, results,
                                                                     strict=True))
            comparison.notes.append(f"{key}: runs differ in N × d ({shapes}); rank and entropy "
                                    "values scale with min(N, d)")
    return comparison


def _load_all(runs: Sequence[RunLike], keys: Sequence[str] | None,
              analyze_options: dict[str, Any]) -> list[Report]:
    """Load (or analyze) each run once, however often it is named."""
    cache: dict[object, Report] = {}
    reports = []
    for run in runs:
        ident = str(Path(run).resolve()) if isinstance(run, str | os.PathLike) else id(run)
        if ident not in cache:
            cache[ident] = load_run(run, keys, **analyze_options)
        reports.append(cache[ident])
    return reports
