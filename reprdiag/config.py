"""The analysis options, written once: :class:`AnalysisConfig`.

``reprdiag.analyze``, ``analyze_model``, the CLI's ``analyze``/``compare``/``gate`` and the
:class:`~reprdiag.monitor.SpectralMonitor` all describe *what* to compute with the same ~15
options (metrics, precision, row sample, metric options, NaN policy, jackknife, labels, pair).
They build one frozen :class:`AnalysisConfig`, which checks every option when it is made (one
place, in the spirit of scikit-learn's parameter constraints: each check is a small function
in :data:`CONSTRAINTS`, and its message is the one the user sees with exit code 2), and whose
:meth:`AnalysisConfig.to_dict` is the ``options`` block of ``report.json``.

*Where* it runs (device, ``torchrun`` backend, progress bar) and *what* it reads (files, keys,
a model) are not part of the config: they go to :func:`reprdiag.pipeline.run` beside it.

This module imports no torch at import time (the CLI reads the defaults for ``--help``); the
checks import what they need when a config is made.

>>> AnalysisConfig(metrics=["vne"], seed=3).to_dict()["seed"]
3
>>> AnalysisConfig(kappa=0)
Traceback (most recent call last):
reprdiag.errors.UsageError: kappa must be a positive number, got 0; the vMF concentration κ \
is > 0 (default 10)
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, fields, replace
from typing import TYPE_CHECKING, Any

from reprdiag.defaults import DEFAULT_BLOCKS, DELETED_SPECTRA
from reprdiag.errors import UsageError, check_choice

if TYPE_CHECKING:
    import torch

    from reprdiag.engine import StreamOptions

#: The options that change metric values (passed to every metric that accepts them).
METRIC_OPTIONS = ("kappa", "er_estimator", "er_compat")
#: Options that only reading embedding files uses (a model run records its own pool).
FILE_OPTIONS = ("pool", "chunk_rows", "concat")


@dataclass(frozen=True)
class AnalysisConfig:
    """What to compute, and how: every option of ``reprdiag analyze`` that is written into the
    report. Checked when made (a :class:`~reprdiag.errors.UsageError` names the first bad
    option); :meth:`to_dict` is the report's ``options``.

    ``metrics`` (``None``: every metric the input supports) are checked against the registry,
    and against ``labels``/``pair`` for the metrics that need them.
    """

    kappa: float = 10.0
    er_estimator: str = "plugin"
    er_compat: str = "exact"
    sample_size: int = 16384
    seed: int = 0
    precision: str = "auto"
    pool: str | None = None
    nan: str = "error"
    chunk_rows: int | None = None
    concat: bool = False
    metrics: tuple[str, ...] | None = None
    uncertainty: bool = False
    blocks: int = DEFAULT_BLOCKS
    jackknife: str = "auto"
    labels: str | None = None
    pair: str | None = None

    def __post_init__(self) -> None:
        if self.metrics is not None:  # a list, a generator, ... → an immutable tuple
            object.__setattr__(self, "metrics", tuple(self.metrics) or None)
        for check in CONSTRAINTS:
            check(self)

    @classmethod
    def option_names(cls) -> tuple[str, ...]:
        """Every option's name, in report order."""
        return tuple(f.name for f in fields(cls))

    def replace(self, **changes: Any) -> AnalysisConfig:
        """A copy with ``changes`` (checked again)."""
        return replace(self, **changes)

    def metric_options(self) -> dict[str, Any]:
        """The options metrics accept (``kappa``, ``er_estimator``, ``er_compat``)."""
        return {name: getattr(self, name) for name in METRIC_OPTIONS}

    def extras(self) -> set[str]:
        """The extra statistics streamed beside the moments: ``classes`` for ``labels``,
        ``pair`` for ``pair`` (see :func:`reprdiag.metrics.registry.for_input`)."""
        return {name for name, spec in (("classes", self.labels), ("pair", self.pair)) if spec}

    def stream(self, device: torch.device) -> StreamOptions:
        """How to stream an input on ``device`` (no jackknife blocks yet: see
        :meth:`stream_for`)."""
        from reprdiag.engine import StreamOptions

        return StreamOptions(device, self.precision, self.chunk_rows, self.sample_size,
                             self.seed, self.nan)

    def stream_for(self, d: int, device: torch.device, label: str,
                   budget: int | None = None, extra: int = 0) -> StreamOptions:
        """The stream options of one input of width ``d``: with ``uncertainty``, K jackknife
        blocks fitted to the memory budget, ``budget`` bytes if given, with ``extra`` bytes
        per block beside the moments (a pair's cross-moments; see
        :func:`reprdiag.stats.blocked.fit_blocks`)."""
        opts = self.stream(device)
        if not self.uncertainty:
            return opts
        from reprdiag.stats.blocked import fit_blocks

        return replace(opts, blocks=fit_blocks(self.blocks, d, device, label, budget, extra))

    def to_dict(self, *, model: bool = False) -> dict[str, Any]:
        """The report's ``options``: every option (``blocks`` only with ``uncertainty``);
        ``model=True`` leaves out the file-reading ones (:data:`FILE_OPTIONS`: a model run
        records its own)."""
        out = asdict(self)
        out["metrics"] = list(self.metrics) if self.metrics else None
        out["blocks"] = self.blocks if self.uncertainty else None
        out["jackknife"] = self.jackknife if self.uncertainty else None
        if model:
            for name in FILE_OPTIONS:
                del out[name]
        return out


# ---- the constraints: one small check each, run in this order when a config is made ----


def _kappa(c: AnalysisConfig) -> None:
    if not (isinstance(c.kappa, int | float) and math.isfinite(c.kappa) and c.kappa > 0):
        raise UsageError(f"kappa must be a positive number, got {c.kappa}",
                         hint="the vMF concentration κ is > 0 (default 10)")


def _er_options(c: AnalysisConfig) -> None:
    from reprdiag.metrics.pairwise import ER_COMPAT, ER_ESTIMATORS

    check_choice(c.er_estimator, ER_ESTIMATORS, "ER estimator")
    check_choice(c.er_compat, ER_COMPAT, "ER arithmetic")


def _metrics(c: AnalysisConfig) -> None:
    """Unknown names, and names needing labels or a pair not given, fail before any reading."""
    from reprdiag.metrics.registry import for_input

    for_input(c.metrics, c.extras())


def _stream(c: AnalysisConfig) -> None:
    """Options no pass can run with: sample < 2, chunk < 1, unknown names."""
    from reprdiag.engine import NAN_POLICIES
    from reprdiag.precision import PRECISIONS

    if c.sample_size < 2:
        raise UsageError(f"sample size must be at least 2, got {c.sample_size}",
                         hint="pairwise metrics need pairs of rows (default 16384)")
    if c.chunk_rows is not None and c.chunk_rows < 1:
        raise UsageError(f"chunk size must be at least 1 row, got {c.chunk_rows}")
    check_choice(c.precision, PRECISIONS, "precision")
    check_choice(c.nan, NAN_POLICIES, "NaN policy")


def _jackknife(c: AnalysisConfig) -> None:
    """Refuse a ``jackknife`` (deleted-spectra path) other than auto, first-order, exact."""
    check_choice(c.jackknife, DELETED_SPECTRA, "--jackknife path")


def _blocks(c: AnalysisConfig) -> None:
    """Refuse ``blocks`` < 5 when ``uncertainty`` asks for the jackknife."""
    from reprdiag.stats.blocked import MIN_BLOCKS

    if c.uncertainty and c.blocks < MIN_BLOCKS:
        raise UsageError(f"--blocks must be at least {MIN_BLOCKS}, got {c.blocks}",
                         hint=f"the jackknife needs several blocks (default {DEFAULT_BLOCKS})")


def _pool(c: AnalysisConfig) -> None:
    from reprdiag.loaders.base import check_pool

    check_pool(c.pool)


#: Every check of :class:`AnalysisConfig`, in the order they run.
CONSTRAINTS: tuple[Callable[[AnalysisConfig], None], ...] = (
    _kappa, _er_options, _metrics, _stream, _blocks, _jackknife, _pool)


def analysis_config(metrics: Sequence[str] | None = None, **options: Any) -> AnalysisConfig:
    """An :class:`AnalysisConfig` from keyword options, refusing names it does not know with
    a one-line :class:`~reprdiag.errors.UsageError` (not a ``TypeError``)."""
    known = AnalysisConfig.option_names()
    unknown = [k for k in options if k not in known]
    if unknown:
        raise UsageError(f"unknown analysis option {unknown[0]!r}",
                         hint="valid: " + ", ".join(known))
    return AnalysisConfig(metrics=tuple(metrics) if metrics else None, **options)
