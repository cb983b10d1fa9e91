"""The result types: what ``analyze``, ``compare`` and ``gate`` return (docs/design.md §5).

Plain dataclasses, one output style: every result has ``to_dict()`` (the JSON form;
``to_json()`` is its text), ``from_dict()`` (the inverse) and ``to_frame()`` (the flat
pandas table its CSV holds). Rendering (rich tables, CSV, Markdown, JUnit, plots, HTML, the
``--out`` folder) lives in :mod:`reprdiag.report`, which imports this module and never the
reverse, except for the two conveniences ``Report.load``/``save`` and ``Comparison.save``
(see :meth:`Report.save`).

- :class:`InputResult` / :class:`Report`: the metrics of each input (``report.json``).
- :class:`Comparison`: several runs side by side, each change against the first run.
- :class:`Rule` / :class:`Check` / :class:`GateResult`: bounds on metrics and their outcome.
"""

from __future__ import annotations

import functools
import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from reprdiag.defaults import NOISE_Z
from reprdiag.errors import ConfigError, did_you_mean

#: The version of report.json's layout (its JSON Schema: :mod:`reprdiag.report.schema`).
SCHEMA_VERSION = 1
SPECTRUM_KINDS = ("covariance", "autocorrelation", "singular_values")


# ----------------------------------------------------------------------------- numbers as text

def format_value(value: float) -> str:
    """Compact numeric formatting shared by tables, markdown and one-line messages.

    >>> format_value(2.656603471446447), format_value(16.0), format_value(1.2e-7)
    ('2.6566', '16', '1.2e-07')
    """
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "nan"
    if float(value).is_integer() and abs(value) < 1e15:
        return str(int(value))
    if value != 0 and (abs(value) < 1e-3 or abs(value) >= 1e6):
        return f"{value:.2g}" if abs(value) < 1e-3 else f"{value:.4g}"
    return f"{value:.5g}" if abs(value) < 10 else f"{value:.2f}"


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


def _finite_or_none(value: Any) -> Any:
    """JSON's form of a number: ``None`` for NaN/±inf, a plain Python scalar otherwise."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value.item() if hasattr(value, "item") else value


def _float(value: Any) -> float:
    """The inverse of :func:`_finite_or_none` for a number: ``None`` → NaN."""
    return math.nan if value is None else float(value)


def _rows(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """A frame's rows as JSON-ready dicts (NaN → ``None``)."""
    return [{k: _finite_or_none(v) for k, v in row.items()}
            for row in frame.to_dict(orient="records")]


def _dumps(data: dict[str, Any], indent: int | None = 2) -> str:
    return json.dumps(data, indent=indent, allow_nan=False, ensure_ascii=False)


# ------------------------------------------------------------------------------------ reports

@dataclass
class InputResult:
    """Everything measured on one input (one table row)."""

    name: str
    n: int
    d: int
    dtype: str
    metrics: dict[str, float]
    spectra: dict[str, list[float]]
    solver: dict[str, str]
    path: str | None = None
    key: str | None = None
    file_size: int | None = None
    sample_size: int = 0
    rows_dropped: int = 0
    zero_rows: int = 0
    timings: dict[str, float] = field(default_factory=dict)
    #: Things the numbers depend on that the user should know (zero rows, dropped rows,
    #: fallbacks taken); the CLI prints each as ``reprdiag: warning: NAME: TEXT``.
    warnings: list[str] = field(default_factory=list)
    # --uncertainty: {metric: {se, ci_low, ci_high, bias}}, how, and the spectrum's SE
    uncertainty: dict[str, dict[str, float]] = field(default_factory=dict)
    uncertainty_method: dict[str, Any] = field(default_factory=dict)
    spectra_se: dict[str, list[float]] = field(default_factory=dict)
    #: How the products were computed and what that resolves: work dtype and why, error
    #: floors, unresolved eigenvalues, metrics that depend on them (reprdiag.precision).
    precision: dict[str, Any] = field(default_factory=dict)

    def se(self, metric: str) -> float:
        """The metric's jackknife standard error (NaN when none was computed)."""
        return self.uncertainty.get(metric, {}).get("se", math.nan)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["metrics"] = {k: _metric_json(k, v) for k, v in self.metrics.items()}
        out["uncertainty"] = {m: {k: _finite_or_none(v) for k, v in est.items()}
                              for m, est in self.uncertainty.items()}
        out["spectra_se"] = {k: [_finite_or_none(v) for v in vs]
                             for k, vs in self.spectra_se.items()}
        for key in ("uncertainty", "uncertainty_method", "spectra_se"):
            if not out[key]:
                del out[key]
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> InputResult:
        data = dict(data)
        data["metrics"] = {k: _float(v) for k, v in data["metrics"].items()}
        data["uncertainty"] = {m: {k: _float(v) for k, v in est.items()}
                               for m, est in data.get("uncertainty", {}).items()}
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in data.items() if k in known})

    def to_frame(self) -> pd.DataFrame:
        """One row (indexed by name): N, d, then every metric."""
        return Report([self]).to_frame()


@functools.cache
def _counts() -> frozenset[str]:
    """Metrics that count something (``numerical_rank``): integers in report.json."""
    from reprdiag.catalog import read_catalog

    return frozenset(m["name"] for m in read_catalog() if m["discrete"])


def _metric_json(name: str, value: float) -> float | int | None:
    """A metric's value as report.json holds it: ``None`` when not finite, an integer for a
    count (``381``, not ``381.0``).

    >>> _metric_json("numerical_rank", 381.0), _metric_json("vne", 2.0)
    (381, 2.0)
    >>> _metric_json("vne", math.nan) is None
    True
    """
    if not math.isfinite(value):
        return None
    return int(value) if name in _counts() and float(value).is_integer() else value


@dataclass
class Report:
    """The result of an analysis: one :class:`InputResult` per input, plus provenance.

    ``report[name]`` is one input's result (by name or key); ``report[name].metrics`` is
    always ``{metric: value}`` and :meth:`to_frame` one row per input. ``metrics`` (and
    ``spectra``) keep their historical two shapes, ``{metric: value}`` for a single input and
    ``{input: {metric: value}}`` for several: ``report.metrics["vne"]`` is the documented
    one-input idiom and ``report.metrics[name]["vne"]`` the several-input one, so one shape
    would break one of them (docs/design.md §5).
    """

    inputs: list[InputResult]
    options: dict[str, Any] = field(default_factory=dict)
    device: str = "cpu"
    version: str = ""
    command: list[str] = field(default_factory=list)
    created: str = ""
    timings: dict[str, float] = field(default_factory=dict)
    world_size: int = 1  # processes the analysis ran on (torchrun ranks)

    def __getitem__(self, name: str) -> InputResult:
        for result in self.inputs:
            if name in (result.name, result.key):
                return result
        raise KeyError(name)

    @property
    def metrics(self) -> dict[str, Any]:
        if len(self.inputs) == 1:
            return dict(self.inputs[0].metrics)
        return {r.name: dict(r.metrics) for r in self.inputs}

    @property
    def spectra(self) -> dict[str, Any]:
        if len(self.inputs) == 1:
            return dict(self.inputs[0].spectra)
        return {r.name: dict(r.spectra) for r in self.inputs}

    @property
    def uncertainty(self) -> pd.DataFrame:
        """Jackknife estimates, one row per (input, metric): value, se, ci_low, ci_high, bias.

        Empty when the analysis ran without ``uncertainty=True``.
        """
        rows = [{"input": r.name, "metric": m, "value": r.metrics.get(m, math.nan), **est}
                for r in self.inputs for m, est in r.uncertainty.items()]
        cols = ["input", "metric", "value", "se", "ci_low", "ci_high", "bias"]
        return pd.DataFrame(rows, columns=cols).set_index(["input", "metric"])

    def to_frame(self) -> pd.DataFrame:
        """One row per input (indexed by name): N, d, then every metric."""
        rows = [{"input": r.name, "n": r.n, "d": r.d, **r.metrics} for r in self.inputs]
        return pd.DataFrame(rows).set_index("input")

    def to_dict(self) -> dict[str, Any]:
        return {"schema": SCHEMA_VERSION, "tool": "reprdiag", "version": self.version,
                "created": self.created, "command": self.command, "device": self.device,
                "options": self.options, "timings": self.timings,
                "world_size": self.world_size,
                "inputs": [r.to_dict() for r in self.inputs]}

    def to_json(self, indent: int | None = 2) -> str:
        return _dumps(self.to_dict(), indent)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Report:
        return cls(inputs=[InputResult.from_dict(r) for r in data["inputs"]],
                   options=data.get("options", {}), device=data.get("device", ""),
                   version=data.get("version", ""), command=data.get("command", []),
                   created=data.get("created", ""), timings=data.get("timings", {}),
                   world_size=int(data.get("world_size", 1)))

    @classmethod
    def load(cls, path: str | Path) -> Report:
        """Read a ``report.json`` (or the one inside a run folder), validated against its
        JSON Schema: exit 2 naming the first bad field (:func:`reprdiag.report.read.load_report`).
        """
        from reprdiag.report.read import load_report  # the one upward import: see save()

        return load_report(path)

    def save(self, out_dir: str | Path, plots: bool = True, plot_format: str = "png") -> Path:
        """Write report.json, metrics.csv, spectrum.csv, summary.md, report.html and plots to
        ``out_dir`` (:func:`reprdiag.report.export.save`).

        ``load``/``save`` are the public conveniences of user code (``report.save(...)``);
        they reach into :mod:`reprdiag.report` when called, the only imports from this module
        upward (listed in pyproject's import-linter contract)."""
        from reprdiag.report.export import save

        return save(self, Path(out_dir), plots=plots, plot_format=plot_format)


# -------------------------------------------------------------------------------- comparisons

#: |Δ%| below this counts as unchanged in the verdict's tallies (the table shows every Δ).
VERDICT_TOLERANCE_PCT = 1.0
#: How many of the largest changes the verdict names per run.
VERDICT_TOP = 3
#: What a change with |z| < NOISE_Z is called (runs with standard errors).
NOISE = "within noise"
CHANGES = ("better", "worse", "neutral", "same", NOISE, "n/a")
#: Metrics whose value changes when the embeddings are rescaled (x → s·x): their "better" at
#: one scale is not better at another, so a change of theirs is ``neutral`` and does not vote
#: in the verdict. Every other metric is scale-invariant by definition
#: (tests/test_scale_invariance.py; tests/test_compare.py checks these three do move).
SCALE_DEPENDENT = ("partition_isotropy", "cov_offdiag", "vicreg_std")


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


def voting_direction(name: str) -> str:
    """The direction a change of metric ``name`` is judged by in a comparison: its registry
    direction, except ``neutral`` for :data:`SCALE_DEPENDENT` metrics.

    >>> voting_direction("rankme"), voting_direction("cov_offdiag"), voting_direction("alpha_req")
    ('higher', 'neutral', 'neutral')
    """
    from reprdiag.metrics import METRICS  # imports torch: not at import time (read_report)

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


@dataclass
class Comparison:
    """Several runs side by side. ``runs[0]`` is the reference of every Δ.

    ``inputs[key][j]`` is run ``j``'s result for input ``key``; :meth:`to_frame` is the long
    table (one row per input, metric and run). Δ = value − reference value, exactly;
    Δ% = 100·Δ/|reference value|; each change is ``better``, ``worse`` or ``neutral`` by the
    metric's :func:`voting_direction`, ``same`` when Δ = 0, ``n/a`` when a value is missing,
    and ``within noise`` when the runs carry standard errors and |z| < ``noise_z``.
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

    def to_frame(self) -> pd.DataFrame:
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

    @property
    def frame(self) -> pd.DataFrame:
        """:meth:`to_frame` (the attribute name of reprdiag ≤ 0.x, kept for user code)."""
        return self.to_frame()

    def verdict(self) -> str:
        """One line: per run, how many metrics got worse/better and the largest changes."""
        frame = self.to_frame()
        parts = []
        for label in self.runs[1:]:
            part = frame[frame["run"] == label]
            parts.append(f"{label} vs {self.runs[0]}: "
                         f"{_run_verdict(part, self.layered, self.noise_z)}")
        return " | ".join(parts) if parts else f"{self.runs[0]}: nothing to compare against"

    def to_dict(self) -> dict[str, Any]:
        """compare.json: runs, input keys, notes, verdict, ``noise_z`` and the rows of
        :meth:`to_frame`."""
        return {"runs": self.runs, "inputs": list(self.inputs), "notes": self.notes,
                "verdict": self.verdict(), "noise_z": self.noise_z,
                "rows": _rows(self.to_frame())}

    def to_json(self, indent: int | None = 2) -> str:
        return _dumps(self.to_dict(), indent)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Comparison:
        """The comparison of a compare.json: its rows, verdict and tables are the saved ones
        (each input result holds the compared metrics, N, d and SEs; compare.json keeps no
        spectra, so the spectrum plots need the runs themselves)."""
        runs = list(data["runs"])
        inputs: dict[str, list[InputResult]] = {
            key: [InputResult(key, 0, 0, "", {}, {}, {}, key=key) for _ in runs]
            for key in data["inputs"]}
        position = {run: j for j, run in enumerate(runs)}
        for row in data["rows"]:
            res = inputs[row["input"]][position[row["run"]]]
            res.n, res.d = int(row["n"]), int(row["d"])
            res.metrics[row["metric"]] = _float(row["value"])
            if "se" in row and row["se"] is not None:
                res.uncertainty[row["metric"]] = {"se": float(row["se"])}
        return cls(runs=runs, inputs=inputs, notes=list(data.get("notes", [])),
                   noise_z=float(data.get("noise_z", NOISE_Z)))

    def save(self, out_dir: str | Path, plots: bool = True, plot_format: str = "png"
             ) -> list[Path]:
        """Make ``out_dir`` hold compare.csv, compare.json, compare.md, compare.html and the
        plots (:func:`reprdiag.report.export.save`; see :meth:`Report.save`)."""
        from reprdiag.report.export import save

        return save(self, Path(out_dir), plots=plots, plot_format=plot_format)


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


# ---------------------------------------------------------------------------------- the gate

#: Rule kinds: absolute bounds, and bounds relative to a baseline run (fractions, ≥ 0).
ABSOLUTE = ("min", "max")
RELATIVE = ("max_drop", "max_rise")
KINDS = ABSOLUTE + RELATIVE
#: Modifiers of a rule, in standard errors (runs analyzed with ``--uncertainty``):
#: ``margin_se`` fails only when the bound is crossed by more than that many SEs; ``max_se``
#: fails a rule whose SE is above it (too noisy to decide).
MODIFIERS = ("margin_se", "max_se")


def check_finite(value: float, where: str, source: str | None) -> None:
    """Refuse a NaN or infinite bound.

    >>> check_finite(float("nan"), "rankme.min", "cfg")
    Traceback (most recent call last):
    ...
    reprdiag.errors.ConfigError: cfg: rankme.min must be a finite number, got nan
    """
    if not math.isfinite(value):
        raise ConfigError(f"{where} must be a finite number, got {value!r}", source=source)


def check_se_modifier(key: str, value: float, where: str, source: str | None) -> None:
    """``margin_se`` must be finite and ≥ 0, ``max_se`` finite and > 0."""
    check_finite(value, f"{where}.{key}", source)
    if key == "margin_se" and value < 0:
        raise ConfigError(f"{where}.margin_se must be ≥ 0, got {value:g}", source=source,
                          hint="a number of standard errors, e.g. 2")
    if key == "max_se" and value <= 0:
        raise ConfigError(f"{where}.max_se must be > 0, got {value:g}", source=source,
                          hint="the largest standard error to accept")


def unknown_key(key: str, valid: Sequence[str], where: str, source: str) -> ConfigError:
    """The error for a key a gate table (or rule) does not know, naming the valid ones."""
    return ConfigError(f"unknown key {key!r} in {where}", source=source,
                       hint=did_you_mean(key, valid) + "valid: " + ", ".join(valid))


@dataclass(frozen=True)
class Rule:
    """One bound on one metric.

    ``kind`` is ``min`` (pass when value ≥ bound), ``max`` (value ≤ bound), ``max_drop``
    (value ≥ baseline − bound·|baseline|) or ``max_rise`` (value ≤ baseline +
    bound·|baseline|). ``strict`` makes ``min``/``max`` exclusive (``--fail-if "x <= 3"``).
    ``origin`` says where the rule came from (a config file, ``--fail-if``, a preset).
    With standard errors: ``margin_se`` = m fails only when the bound is crossed by more than
    m SEs (value < bound − m·SE for a lower bound); ``max_se`` fails the rule when the SE is
    above it, too noisy to decide.

    >>> Rule("rankme", "min", 64).describe(), Rule("vne", "max_drop", 0.05).describe()
    ('rankme ≥ 64', 'vne drop ≤ 5% vs baseline')
    >>> Rule("rankme", "min", 64, margin_se=2, max_se=1.5).describe()
    'rankme ≥ 64 (margin 2 SE, SE ≤ 1.5)'
    """

    metric: str
    kind: str
    bound: float
    strict: bool = False
    origin: str = ""
    margin_se: float = field(default=0.0, repr=False)
    max_se: float | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        """The one place a rule's numbers are checked, whichever way it was written (a
        config table, ``fail_if``, ``--fail-if``, the API): a NaN or infinite bound would
        make the rule always fail or always hold."""
        source = self.origin or None
        if self.kind not in KINDS:
            raise unknown_key(self.kind, KINDS, f"rule {self.metric}", self.origin)
        check_finite(self.bound, f"{self.metric}.{self.kind}", source)
        if self.relative and self.bound < 0:
            raise ConfigError(f"{self.metric}.{self.kind} must be a fraction ≥ 0, got "
                              f"{self.bound:g}", source=source, hint="e.g. 0.05 for 5%")
        check_se_modifier("margin_se", self.margin_se, self.metric, source)
        if self.max_se is not None:
            check_se_modifier("max_se", self.max_se, self.metric, source)

    @property
    def relative(self) -> bool:
        return self.kind in RELATIVE

    @property
    def needs_se(self) -> bool:
        """Whether checking this rule needs the run's standard errors."""
        return self.margin_se > 0 or self.max_se is not None

    @property
    def lower(self) -> bool:
        """Whether the bound is a lower one (``min``, ``max_drop``)."""
        return self.kind in ("min", "max_drop")

    def describe(self) -> str:
        return self._describe_bound() + self._describe_se()

    def _describe_bound(self) -> str:
        if self.kind == "min":
            return f"{self.metric} {'>' if self.strict else '≥'} {format_value(self.bound)}"
        if self.kind == "max":
            return f"{self.metric} {'<' if self.strict else '≤'} {format_value(self.bound)}"
        word = "drop" if self.kind == "max_drop" else "rise"
        return f"{self.metric} {word} ≤ {100 * self.bound:.4g}% vs baseline"

    def _describe_se(self) -> str:
        parts = ([f"margin {self.margin_se:g} SE"] if self.margin_se else []) + (
            [f"SE ≤ {format_value(self.max_se)}"] if self.max_se is not None else [])
        return f" ({', '.join(parts)})" if parts else ""

    def no_baseline(self) -> ConfigError:
        """The error for a relative rule given no baseline run."""
        return ConfigError(f"rule {self.describe()!r} needs a baseline run", source=self.origin,
                           hint="pass --baseline RUN or set baseline in the config")

    def threshold_se(self, baseline: float | None, se_baseline: float) -> float:
        """How much of the baseline's SE reaches a relative rule's threshold
        (d threshold / d baseline = 1 ∓ bound·sign(baseline)); 0 for absolute rules."""
        if not self.relative or baseline is None:
            return 0.0
        sign = -1.0 if self.kind == "max_drop" else 1.0
        return abs(1.0 + sign * self.bound * math.copysign(1.0, baseline)) * se_baseline

    def threshold(self, baseline: float | None) -> float:
        """The bound on the value itself (relative rules need the baseline's value)."""
        if not self.relative:
            return self.bound
        if baseline is None:
            raise self.no_baseline()
        step = self.bound * abs(baseline)
        return baseline - step if self.kind == "max_drop" else baseline + step

    def holds(self, value: float, threshold: float, se: float = 0.0) -> bool:
        """Whether ``value`` satisfies the rule, the bound moved ``margin_se``·``se`` in the
        value's favour; a missing (NaN) value never does, nor an SE above ``max_se``."""
        if math.isnan(value) or (self.max_se is not None and not se <= self.max_se):
            return False
        slack = self.margin_se * se if self.margin_se else 0.0
        if self.lower:
            return value > threshold - slack if self.strict else value >= threshold - slack
        return value < threshold + slack if self.strict else value <= threshold + slack

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Rule:
        return cls(**data)


@dataclass(frozen=True)
class Check:
    """One rule applied to one input: the value read, the bound it met or missed."""

    rule: Rule
    input: str
    value: float
    threshold: float
    baseline: float | None
    passed: bool
    se: float = math.nan  #: SE of value − threshold (run's, and baseline's for relative rules)

    @property
    def too_noisy(self) -> bool:
        """Failed because the SE is above the rule's ``max_se``."""
        return self.rule.max_se is not None and not self.se <= self.rule.max_se

    def bound_text(self) -> str:
        """The bound as a comparison, with the baseline for relative rules and the margin."""
        op = {"min": ">" if self.rule.strict else "≥", "max": "<" if self.rule.strict else "≤",
              "max_drop": "≥", "max_rise": "≤"}[self.rule.kind]
        text = f"{op} {format_value(self.threshold)}"
        if self.baseline is not None:
            sign = "−" if self.rule.kind == "max_drop" else "+"
            text += f" (baseline {format_value(self.baseline)} {sign} {100 * self.rule.bound:.4g}%)"
        if self.rule.margin_se and math.isfinite(self.se):
            slack = self.rule.margin_se * self.se
            moved = self.threshold - slack if self.rule.lower else self.threshold + slack
            text += (f" {'−' if self.rule.lower else '+'} {self.rule.margin_se:g}·SE "
                     f"= {format_value(moved)}")
        return text

    def message(self) -> str:
        """Why it failed (or that it passed), in one line."""
        verdict = "meets" if self.passed else "violates"
        se = f" ± {self.se:.2g}" if math.isfinite(self.se) else ""
        text = (f"{self.input}: {self.rule.metric} = {format_value(self.value)}{se} {verdict} "
                f"the bound {self.bound_text()}")
        if self.too_noisy:
            text += f"; SE {self.se:.2g} > max_se {format_value(self.rule.max_se)}: too noisy"
        return text


@dataclass
class GateResult:
    """Every check of a gate run; :attr:`passed` when all of them hold."""

    checks: list[Check]
    run: str = ""
    baseline: str | None = None
    notes: list[str] = field(default_factory=list)
    #: The analyzed inputs, whose ``warnings`` (zero rows, dropped rows, fallbacks) the CLI
    #: prints on stderr (not part of :meth:`to_dict`).
    inputs: list[InputResult] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        """Every check holds, and there was at least one (a gate that checked nothing fails)."""
        return bool(self.checks) and all(c.passed for c in self.checks)

    @property
    def failures(self) -> list[Check]:
        return [c for c in self.checks if not c.passed]

    def detail(self) -> str:
        """``2 of 2 rules hold`` or ``1 of 2 rules failed (rankme_frac ≥ 0.1)``."""
        n = len(self.checks)
        if not n:
            return "no rule could be checked (the run holds no input)"
        if self.passed:
            return f"{n} of {n} rules hold"
        names = ", ".join(dict.fromkeys(c.rule.describe() for c in self.failures))
        return f"{len(self.failures)} of {n} rules failed ({names})"

    def summary(self) -> str:
        """``PASS: 2 of 2 rules hold`` or ``FAIL: 1 of 2 rules failed (...)``."""
        return f"{'PASS' if self.passed else 'FAIL'}: {self.detail()}"

    def to_frame(self) -> pd.DataFrame:
        """One row per check: input, rule, metric, kind, value, bound, baseline, result."""
        return pd.DataFrame([{"input": c.input, "rule": c.rule.describe(),
                              "metric": c.rule.metric, "kind": c.rule.kind, "value": c.value,
                              "se": c.se, "margin_se": c.rule.margin_se,
                              "max_se": c.rule.max_se, "too_noisy": c.too_noisy,
                              "threshold": c.threshold, "bound": c.bound_text(),
                              "baseline": c.baseline, "origin": c.rule.origin,
                              "result": "PASS" if c.passed else "FAIL"} for c in self.checks])

    def frame(self) -> pd.DataFrame:
        """:meth:`to_frame` (the method name of reprdiag ≤ 0.x, kept for user code)."""
        return self.to_frame()

    def to_dict(self) -> dict[str, Any]:
        """The JSON of ``gate --format json``: passed, summary, run, baseline, notes, one row
        per check (:meth:`to_frame`) and the distinct ``rules`` the checks name."""
        rules = list(dict.fromkeys(c.rule for c in self.checks))
        return {"passed": self.passed, "summary": self.summary(), "run": self.run,
                "baseline": self.baseline, "notes": self.notes,
                "checks": _rows(self.to_frame()), "rules": [r.to_dict() for r in rules]}

    def to_json(self, indent: int | None = 2) -> str:
        return _dumps(self.to_dict(), indent)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> GateResult:
        rules = [Rule.from_dict(r) for r in data.get("rules", [])]
        by_text = {(r.describe(), r.origin): r for r in rules}
        checks = [Check(by_text[(row["rule"], row["origin"])], row["input"],
                        _float(row["value"]), _float(row["threshold"]),
                        None if row["baseline"] is None else float(row["baseline"]),
                        row["result"] == "PASS", _float(row["se"]))
                  for row in data["checks"]]
        return cls(checks, run=data.get("run", ""), baseline=data.get("baseline"),
                   notes=list(data.get("notes", [])))
