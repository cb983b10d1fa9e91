"""The one analysis pipeline: sources + :class:`~reprdiag.config.AnalysisConfig` → Report.

:func:`run` is what ``reprdiag.analyze``, ``analyze_model`` and the CLI call::

    stream (engine: one pass per input, the companions beside it)
      → statistics → spectra → metrics (+ jackknife)  (:func:`summarize`)
      → Report                                      (:func:`make_report`)

It is the only place (with the CLI entry) that opens a distributed session: :func:`run`
joins ``torchrun``'s group for one analysis, :func:`joined` keeps one group for several
(``compare``, ``gate`` and ``analyze --gate`` analyze several runs). Under ``torchrun`` each
rank streams its share of the rows, the statistics are merged, and every rank computes the
same report.

A source set (:class:`Sources`) says how its inputs are streamed alone and across ranks:
:class:`FileSources` (files and tensors) here, :class:`reprdiag.models.extract.ModelSources`
(a model's layers over a dataset) in :mod:`reprdiag.models`.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from datetime import datetime, timezone
from functools import partial
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from reprdiag._version import __version__
from reprdiag.companions import label_source, pair_block_bytes, pair_source, streamed
from reprdiag.config import AnalysisConfig
from reprdiag.device import describe, resolve_device
from reprdiag.distributed import DistributedContext, refuse_in_memory, session
from reprdiag.engine import (
    Accumulated,
    Companion,
    Progress,
    StreamOptions,
    accumulate,
    check_shape,
    with_oom_fallback,
)
from reprdiag.errors import UsageError
from reprdiag.loaders import ArraySource, ConcatSource, TensorSource, open_sources
from reprdiag.loaders.base import check_pool
from reprdiag.metrics import compute, prepare, resolve
from reprdiag.metrics.floor import unresolved_counts, unresolved_dependence
from reprdiag.metrics.registry import for_input
from reprdiag.precision import MATERIAL
from reprdiag.results import InputResult, Report
from reprdiag.statistics import Statistics
from reprdiag.stats.blocked import block_labels, blocked_totals, memory_budget
from reprdiag.uncertainty import BlockMap, check_rows, deleted_spectra_path, estimate

Input = str | os.PathLike[str] | torch.Tensor | np.ndarray
Measured = tuple[Statistics, dict[str, list[float]], dict[str, float], float, float]


class Described(Protocol):
    """What a report row says about where its rows came from (an :class:`ArraySource`, or a
    model layer)."""

    @property
    def label(self) -> str: ...

    @property
    def path(self) -> Any: ...

    @property
    def key(self) -> str | None: ...

    @property
    def dtype(self) -> str: ...

    @property
    def file_size(self) -> int | None: ...


Streamed = Iterator[tuple[Described, Accumulated]]


class Sources(Protocol):
    """What :func:`run` reads: each input's accumulated statistics, one input at a time."""

    def alone(self, config: AnalysisConfig, device: torch.device,
              progress: Progress | None) -> Streamed:
        """One process: stream every input on ``device``."""
        ...

    def across(self, config: AnalysisConfig, ctx: DistributedContext,
               progress: Progress | None) -> Streamed:
        """Under ``torchrun``: stream this rank's share, merge every rank's statistics."""
        ...

    def options(self, config: AnalysisConfig) -> dict[str, Any]:
        """The report's ``options``: the config's, with what these sources add."""
        ...


def run(sources: Sources, config: AnalysisConfig, *, device: str | torch.device = "auto",
        progress: Progress | None = None, backend: str = "auto",
        distributed: bool | DistributedContext | None = None) -> Report:
    """Stream ``sources``, compute ``config``'s metrics of each input, return the report.

    ``distributed``/``backend``: see :func:`reprdiag.distributed.session` (every rank returns
    the same report). The config was checked when it was made; the device is resolved here.
    """
    start = time.perf_counter()
    dev = resolve_device(device)
    with session(dev, backend, distributed) as ctx:
        if ctx is None:
            pairs = sources.alone(config, dev, progress)
        else:
            dev = ctx.device
            pairs = sources.across(config, ctx, progress)
        results = summarize_all(pairs, config, progress, ctx)
        world_size = ctx.world_size if ctx else 1
    return make_report(results, sources.options(config), dev, start, world_size)


# ---- sources: files and tensors ----


@dataclass(frozen=True)
class FileSources:
    """Embedding files or in-memory tensors: every 2-D array of each, or the ``keys``
    (``config.concat`` joins files as row shards; ``config.pool`` reduces >2-D arrays)."""

    inputs: Input | Sequence[Input]
    keys: Sequence[str] | None = None

    def open(self, config: AnalysisConfig) -> list[ArraySource]:
        return gather_sources(self.inputs, self.keys, config.pool, config.concat)

    def alone(self, config: AnalysisConfig, device: torch.device,
              progress: Progress | None) -> Streamed:
        def one(s: ArraySource) -> tuple[ArraySource, Accumulated]:
            budget = memory_budget(device) if config.uncertainty else None
            opts = stream_for(s, config, device, budget)
            return s, accumulate(s, opts, progress,
                                 companions_for(s, config, opts.blocks, budget))

        return (one(s) for s in self.open(config))

    def across(self, config: AnalysisConfig, ctx: DistributedContext,
               progress: Progress | None) -> Streamed:
        refuse_in_memory(self.inputs)
        budget = ctx.memory_budget() if config.uncertainty else None  # the same K on every rank
        fitted: dict[int, StreamOptions] = {}  # each input's K, fitted once (one warning)

        def options_of(s: ArraySource) -> StreamOptions:
            if id(s) not in fitted:
                fitted[id(s)] = stream_for(s, config, ctx.device, budget)
            return fitted[id(s)]

        return ctx.accumulate_each(
            lambda: self.open(config), config.stream(ctx.device), progress, check=check_shape,
            stream_for=options_of,
            companions_for=lambda s: companions_for(s, config, options_of(s).blocks, budget))

    def options(self, config: AnalysisConfig) -> dict[str, Any]:
        return config.to_dict()


@contextmanager
def joined(options: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Analyze options whose analyses all run in one process group.

    ``compare`` and ``gate`` analyze several runs; under ``torchrun`` they join the group once
    (with ``options``' ``device``, ``backend`` and ``distributed``, as :func:`run`) and hand
    each :func:`reprdiag.analyze` call the same context, instead of joining and leaving it per
    run. Outside ``torchrun`` the options come back with ``distributed=False``.
    """
    given = options.get("distributed")
    if given is False or isinstance(given, DistributedContext):
        yield options
        return
    device = resolve_device(options.get("device", "auto"))
    with session(device, options.get("backend", "auto"), given) as ctx:
        yield {**options, "distributed": ctx if ctx is not None else False}


def gather_sources(inputs: Input | Sequence[Input], keys: Sequence[str] | None = None,
                   pool: str | None = None, concat: bool = False) -> list[ArraySource]:
    """Open every input and list the 2-D sources to analyze, in order.

    With ``concat`` the files are row shards of one dataset: sources with the same key are
    joined into one :class:`ConcatSource`.
    """
    check_pool(pool)
    if isinstance(inputs, str | os.PathLike | torch.Tensor | np.ndarray):
        inputs = [inputs]
    if not inputs:
        raise UsageError("no input given", hint="pass at least one embedding file or tensor")
    per_input: list[list[ArraySource]] = []
    for i, item in enumerate(inputs):
        if isinstance(item, torch.Tensor | np.ndarray):
            from reprdiag.loaders import as_rows

            name = "tensor" if len(inputs) == 1 else f"tensor{i}"
            per_input.append([as_rows(TensorSource(item, name), pool)])
        else:
            per_input.append(open_sources(Path(item), keys, pool))
    if not concat:
        return [s for group in per_input for s in group]
    return _join_shards(per_input)


def _join_shards(per_input: list[list[ArraySource]]) -> list[ArraySource]:
    order = [s.key for s in per_input[0]]
    joined = []
    for key in order:
        parts = []
        for group in per_input:
            match = [s for s in group if s.key == key]
            if not match:
                raise UsageError(f"key {key!r} is missing from a shard", source=str(
                    group[0].path if group else "?"), hint="--concat needs the same keys in "
                    "every file")
            parts.append(match[0])
        joined.append(ConcatSource(parts))
    return joined


def stream_for(source: ArraySource, config: AnalysisConfig, device: torch.device,
               budget: int | None = None) -> StreamOptions:
    """The stream options of one file input (jackknife blocks fitted to ``budget``, with a
    paired view's blocked cross-moments counted); a row count the blocks cannot split fails
    before anything is read."""
    n, d = source.shape
    extra = 0
    if config.uncertainty and config.pair:
        extra = pair_block_bytes(d, int(pair_source(config.pair, source).shape[1]))
    out = config.stream_for(d, device, source.label, budget, extra)
    if out.blocks:
        check_rows(n, out.blocks, source.label)
    return out


def companions_for(source: ArraySource, config: AnalysisConfig, blocks: int = 0,
                   budget: int | None = None
                   ) -> Callable[[torch.device], list[Companion]] | None:
    """What the pass over ``source`` streams beside its moments, checked before reading;
    ``blocks`` > 0: per jackknife block (the K of the pass's moments), each block's per-class
    second moments as large as a plain run's while ``budget`` (bytes, the one K was fitted
    to) holds K of them (:func:`reprdiag.companions.streamed`)."""
    if not (config.labels or config.pair):
        return None
    label_src = label_source(config.labels, source) if config.labels else None
    pair_src = pair_source(config.pair, source) if config.pair else None
    return partial(streamed, label_src, pair_src, source.shape[1], blocks=blocks,
                   seed=config.seed, budget=budget)


# ---- statistics → spectra → metrics ----


def spectra_lists(stats: Statistics) -> dict[str, list[float]]:
    """The spectra every report carries (docs/design.md §3): λ, η and σ, descending."""
    sp = stats.spectra
    return {"covariance": sp.covariance.values.tolist(),
            "autocorrelation": sp.autocorrelation.values.tolist(),
            "singular_values": sp.singular_values.tolist()}


def input_warnings(acc: Accumulated) -> list[str]:
    """What the user should know about one input's numbers: fallbacks, dropped and zero rows."""
    notes = list(acc.notes)
    if acc.rows_dropped:
        notes.append(f"dropped {acc.rows_dropped} of {acc.rows_read} rows holding NaN or Inf "
                     "(--nan drop); the metrics describe the other rows")
    if acc.moments.n_zero:
        notes.append(f"{acc.moments.n_zero} of {acc.moments.n} rows are all zeros; x/‖x‖ is "
                     "undefined for them and they count as the zero vector in the normalized "
                     "metrics")
    return notes


def statistics(acc: Accumulated) -> Statistics:
    """What the metrics of one accumulated input are computed from: its moments, row sample
    and companions' statistics (labels, pair); with jackknife blocks, which block each sampled
    row belongs to (one sample pass then serves the plain and the deleted values)."""
    stats = Statistics(acc.moments, acc.reservoir, acc.precision)
    stats.extras = blocked_totals(acc.extras)  # per-block companions: their totals
    if acc.blocks is not None:
        stats.sample_groups = (block_labels(acc.reservoir.index, acc.blocks.seed,
                                            acc.blocks.blocks), acc.blocks.blocks)
    return stats


def _measure(acc: Accumulated, config: AnalysisConfig,
             step: Callable[[str], None] = lambda _: None) -> Measured:
    stats = statistics(acc)
    if acc.blocks is not None and deleted_spectra_path(
            config.jackknife, acc.moments.n, acc.moments.d, acc.blocks.blocks,
            stats.spectra.use_gram) == "first-order":
        stats.spectra.all_vectors = True  # the jackknife will update these decompositions
    infos = for_input(config.metrics, acc.extras)
    step("spectra")
    prepare(stats, infos)  # one eigh of XᵀX serves σ and partition isotropy's vectors
    t0 = time.perf_counter()
    stats.spectra.solve_all()  # the three eigensolves side by side on the CPU's threads
    spectra = spectra_lists(stats)
    t1 = time.perf_counter()
    step("metrics")
    values = compute(stats, infos, config.metric_options())
    return stats, spectra, values, t1 - t0, time.perf_counter() - t1


def measure(acc: Accumulated, config: AnalysisConfig, label: str,
            progress: Progress | None = None) -> Measured:
    """Spectra and metrics of accumulated statistics; a device out-of-memory in the
    eigen-solves moves the statistics to the CPU and computes them there (noted in
    ``acc.notes``). A ``progress`` sink with a ``phase`` method hears of each step."""
    phase = getattr(progress, "phase", None)

    def step(name: str) -> None:
        if phase is not None:
            phase(f"{label} · {name}")

    def attempt(opts: StreamOptions, _: int) -> Measured:
        if opts.device.type == "cpu" and acc.moments.device.type != "cpu":  # the fallback
            acc.moments, acc.reservoir = acc.moments.to("cpu"), acc.reservoir.to("cpu")
        return _measure(acc, config, step)

    return with_oom_fallback(attempt, StreamOptions(device=acc.moments.device), 0, label,
                             acc.notes, step="spectra")


def precision_record(stats: Statistics, acc: Accumulated, config: AnalysisConfig,
                     values: dict[str, float]) -> dict[str, Any]:
    """What ``report.json`` says about precision: the work dtype and why, the products'
    relative error bound, each spectrum's floor and how many eigenvalues lie at or below it,
    and (float32 path only) the metrics that depend materially on those
    (:func:`reprdiag.metrics.floor.unresolved_dependence`); a warning names them."""
    sp = stats.spectra
    record: dict[str, Any] = {
        **acc.precision.to_json(),
        "floors": {"covariance": sp.covariance.floor,
                   "autocorrelation": sp.autocorrelation.floor,
                   "singular_values": sp.raw_eigenvalues.floor ** 0.5},
        "unresolved": unresolved_counts(stats)}
    if acc.precision.dtype != torch.float64:
        moment_metrics = [i for i in for_input(config.metrics, stats.extras) if i.needs is None]
        moved = unresolved_dependence(stats, moment_metrics, config.metric_options(), values)
        record["sensitive"] = {k: list(v) for k, v in moved.items()}
        if moved:
            acc.notes.append(floor_warning(record, moved))
    return record


def floor_warning(record: dict[str, Any], moved: dict[str, tuple[float, float]]) -> str:
    """One line: which metrics float32 rounding leaves uncertain, by how much, and the fix."""
    counts = record["unresolved"]
    spans = ", ".join(f"{k} in [{lo:.6g}, {hi:.6g}]" for k, (lo, hi) in moved.items())
    return (f"float32 products leave {counts['covariance']} covariance, "
            f"{counts['singular_values']} raw and {counts['autocorrelation']} autocorrelation "
            f"eigenvalues below their error floor; these metrics depend on them by more than "
            f"{MATERIAL:g} relative: {spans}; use --precision float64 for exact values")


def summarize(source: Described, acc: Accumulated, config: AnalysisConfig,
              progress: Progress | None = None, block_map: BlockMap | None = None
              ) -> InputResult:
    """Metrics and spectra of one accumulated source (with jackknife estimates when the
    pass kept per-block moments; ``block_map`` spreads the blocks, see
    :func:`reprdiag.uncertainty.estimate`)."""
    stats, spectra, values, t_spectra, t_metrics = measure(acc, config, source.label, progress)
    if hasattr(progress, "phase"):
        progress.phase(None)  # type: ignore[union-attr]
    precision = precision_record(stats, acc, config, values)
    path = str(source.path) if source.path is not None else None
    result = InputResult(
        name=source.label, n=acc.moments.n, d=acc.moments.d, dtype=source.dtype,
        metrics=values, spectra=spectra, solver=stats.paths(), path=path,
        key=source.key, file_size=source.file_size, sample_size=int(acc.reservoir.rows.shape[0]),
        rows_dropped=acc.rows_dropped, zero_rows=acc.moments.n_zero,
        timings={"read_and_moments_s": acc.seconds, "spectra_s": t_spectra,
                 "metrics_s": t_metrics}, warnings=input_warnings(acc), precision=precision)
    if acc.blocks is not None:
        check_rows(acc.moments.n, acc.blocks.blocks, source.label)
        t0 = time.perf_counter()
        jk = estimate(acc.blocks, acc.moments, acc.reservoir, resolve(config.metrics),
                      config.metric_options(), values, stats.cov_eigenvalues,
                      progress=progress, label=source.label, block_map=block_map, stats=stats,
                      extras=acc.extras, deleted_spectra=config.jackknife)
        result.uncertainty, result.uncertainty_method = jk.metrics, jk.method
        result.spectra_se = {"covariance": jk.spectrum_se}
        result.timings["uncertainty_s"] = time.perf_counter() - t0
    return result


def summarize_all(pairs: Iterable[tuple[Described, Accumulated]], config: AnalysisConfig,
                  progress: Progress | None = None, ctx: DistributedContext | None = None
                  ) -> list[InputResult]:
    """:func:`summarize` each input as its statistics come. Under ``torchrun`` every rank
    computes the same metrics from the merged statistics, the jackknife's K blocks spread over
    the ranks; a failure on one rank (e.g. device memory in the eigen-solves) is raised on
    every rank before the next input's merge, so the others do not wait at it until the
    timeout."""
    results = []
    for source, acc in pairs:
        with ctx.agree() if ctx is not None else nullcontext():
            results.append(summarize(source, acc, config, progress,
                                     ctx.map_blocks if ctx is not None else None))
    return results


def make_report(results: list[InputResult], options: dict[str, Any], device: torch.device,
                start: float, world_size: int = 1) -> Report:
    """Wrap per-input results with provenance: version, command line, device, timings."""
    return Report(inputs=results, options=options, device=describe(device), version=__version__,
                  command=list(sys.argv), world_size=world_size,
                  created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
                  timings={"total_s": time.perf_counter() - start})
