"""The report: what ``analyze`` returns and ``report.json`` holds (docs/design.md §5)."""

from __future__ import annotations

import functools
import json
import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from reprdiag.errors import InputError, source_label
from reprdiag.loaders import check_regular_file
from reprdiag.report.schema import SCHEMA_VERSION, validate_report

SPECTRUM_KINDS = ("covariance", "autocorrelation", "singular_values")


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
        data["metrics"] = {k: (math.nan if v is None else float(v))
                           for k, v in data["metrics"].items()}
        data["uncertainty"] = {m: {k: (math.nan if v is None else float(v))
                                   for k, v in est.items()}
                               for m, est in data.get("uncertainty", {}).items()}
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in data.items() if k in known})


def _finite_or_none(value: float) -> float | None:
    return value if math.isfinite(value) else None


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

    ``metrics`` is ``{metric: value}`` for a single input and ``{input: {metric: value}}``
    for several; :meth:`to_frame` gives one row per input either way.
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
        return json.dumps(self.to_dict(), indent=indent, allow_nan=False, ensure_ascii=False)

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
        JSON Schema (:mod:`reprdiag.report.schema`): exit 2 naming the first bad field."""
        path = Path(path)
        if path.is_dir():
            path = path / "report.json"
        if os.path.lexists(path) and not path.is_dir():  # a FIFO would block in open()
            check_regular_file(path, what="a report.json")
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError as exc:
            raise InputError("no report.json here", source=source_label(path.parent),
                             hint="pass a run folder written by analyze --out, or a file"
                             ) from exc
        except IsADirectoryError as exc:
            raise InputError("is a folder, not a report", source=source_label(path),
                             hint="re-run reprdiag analyze --out to rewrite it") from exc
        except (json.JSONDecodeError, UnicodeDecodeError, ValueError) as exc:
            raise InputError(f"is not a valid reprdiag report ({exc})",
                             source=source_label(path),
                             hint="re-run reprdiag analyze --out to rewrite it") from exc
        validate_report(data, path)
        return cls.from_dict(data)

    def save(self, out_dir: str | Path, plots: bool = True, plot_format: str = "png") -> Path:
        """Write report.json, metrics.csv, spectrum.csv, summary.md and plots to ``out_dir``."""
        from reprdiag.report.export import save_report

        return save_report(self, Path(out_dir), plots=plots, plot_format=plot_format)
