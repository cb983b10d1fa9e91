"""The library API: ``analyze`` turns files or tensors into a :class:`Report`.

The CLI is a thin layer over this module; a notebook user calls the same functions::

    import reprdiag
    report = reprdiag.analyze("emb.safetensors")
    report.metrics["vne"], report.to_frame()
"""

from __future__ import annotations

import math
import os
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import nullcontext
from dataclasses import asdict, dataclass, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from reprdiag._version import __version__
from reprdiag.companions import LabelCompanion, PairCompanion, label_source, pair_source
from reprdiag.defaults import DEFAULT_BLOCKS
from reprdiag.device import describe, resolve_device
from reprdiag.distributed import DistributedContext, refuse_in_memory, session
from reprdiag.engine import (
    NAN_POLICIES,
    Accumulated,
    Companion,
    Progress,
    StreamOptions,
    accumulate,
    check_shape,
    is_out_of_memory,
    release_device_memory,
)
from reprdiag.errors import ResourceError, UsageError, check_choice
from reprdiag.loaders import ArraySource, ConcatSource, TensorSource, open_sources
from reprdiag.loaders.base import check_pool
from reprdiag.metrics import Statistics, compute, prepare, resolve
from reprdiag.metrics.floor import unresolved_counts, unresolved_dependence
from reprdiag.metrics.pairwise import ER_COMPAT, ER_ESTIMATORS
from reprdiag.metrics.registry import for_input
from reprdiag.precision import MATERIAL, PRECISIONS
from reprdiag.results import InputResult, Report
from reprdiag.stats.blocked import MIN_BLOCKS, block_labels, fit_blocks
from reprdiag.uncertainty import BlockMap, check_rows, estimate

Input = str | os.PathLike[str] | torch.Tensor | np.ndarray


@dataclass(frozen=True)
class MetricOptions:
    """Options that change metric values; all are written into the report."""

    kappa: float = 10.0
    er_estimator: str = "plugin"
    er_compat: str = "exact"

    def validate(self) -> None:
        if not (math.isfinite(self.kappa) and self.kappa > 0):
            raise UsageError(f"kappa must be a positive number, got {self.kappa}",
                             hint="the vMF concentration κ is > 0 (default 10)")
        check_choice(self.er_estimator, ER_ESTIMATORS, "ER estimator")
        check_choice(self.er_compat, ER_COMPAT, "ER arithmetic")


def validate_stream(opts: StreamOptions) -> None:
    """Refuse stream options no pass can run with (sample < 2, chunk < 1, unknown names)."""
    if opts.sample_size < 2:
        raise UsageError(f"sample size must be at least 2, got {opts.sample_size}",
                         hint="pairwise metrics need pairs of rows (default 16384)")
    if opts.chunk_rows is not None and opts.chunk_rows < 1:
        raise UsageError(f"chunk size must be at least 1 row, got {opts.chunk_rows}")
    check_choice(opts.precision, PRECISIONS, "precision")
    check_choice(opts.nan, NAN_POLICIES, "NaN policy")


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


def spectra_lists(stats: Statistics) -> dict[str, list[float]]:
    """The spectra every report carries (docs/design.md §3): λ, η and σ, descending."""
    sp = stats.spectra
    return {"covariance": sp.covariance.values.tolist(),
            "autocorrelation": sp.autocorrelation.values.tolist(),
            "singular_values": sp.singular_values.tolist()}


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


def _measure(acc: Accumulated, metric_names: Sequence[str] | None,
             metric_opts: MetricOptions, step: Callable[[str], None] = lambda _: None
             ) -> tuple[Statistics, dict[str, list[float]], dict[str, float], float, float]:
    stats = Statistics(acc.moments, acc.reservoir, acc.precision)
    stats.extras = acc.extras
    if acc.blocks is not None:  # one sample pass serves the plain and the jackknife values
        stats.sample_groups = (block_labels(acc.reservoir.index, acc.blocks.seed,
                                            acc.blocks.blocks), acc.blocks.blocks)
    infos = for_input(metric_names, acc.extras)
    step("spectra")
    prepare(stats, infos)  # one eigh of XᵀX serves σ and partition isotropy's vectors
    t0 = time.perf_counter()
    spectra = spectra_lists(stats)
    t1 = time.perf_counter()
    step("metrics")
    values = compute(stats, infos, asdict(metric_opts))
    return stats, spectra, values, t1 - t0, time.perf_counter() - t1


def measure(acc: Accumulated, metric_names: Sequence[str] | None, metric_opts: MetricOptions,
            label: str, progress: Progress | None = None
            ) -> tuple[Statistics, dict[str, list[float]], dict[str, float], float, float]:
    """Spectra and metrics of accumulated statistics; a device out-of-memory in the
    eigen-solves moves the statistics to the CPU and computes them there (noted in
    ``acc.notes``). A ``progress`` sink with a ``phase`` method hears of each step."""
    phase = getattr(progress, "phase", None)

    def step(name: str) -> None:
        if phase is not None:
            phase(f"{label} · {name}")

    try:
        return _measure(acc, metric_names, metric_opts, step)
    except (torch.OutOfMemoryError, MemoryError, RuntimeError) as exc:
        if not is_out_of_memory(exc):
            raise
        if acc.moments.device.type == "cpu":
            raise ResourceError("out of memory on the CPU while computing the spectra",
                                source=label, hint="use a smaller --sample-size, or a "
                                "machine with more memory") from exc
        device = acc.moments.device
    release_device_memory()
    acc.notes.append(f"out of memory on {device} in the spectra; computed them on the CPU")
    acc.moments, acc.reservoir = acc.moments.to("cpu"), acc.reservoir.to("cpu")
    return _measure(acc, metric_names, metric_opts, step)


def precision_record(stats: Statistics, acc: Accumulated, metric_names: Sequence[str] | None,
                     metric_opts: MetricOptions, values: dict[str, float]) -> dict[str, Any]:
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
        moment_metrics = [i for i in for_input(metric_names, stats.extras) if i.needs is None]
        moved = unresolved_dependence(stats, moment_metrics, asdict(metric_opts), values)
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


def summarize(source: Described, acc: Accumulated, metric_names: Sequence[str] | None,
              metric_opts: MetricOptions, progress: Progress | None = None,
              block_map: BlockMap | None = None) -> InputResult:
    """Metrics and spectra of one accumulated source (with jackknife estimates when the
    pass kept per-block moments; ``block_map`` spreads the blocks, see
    :func:`reprdiag.uncertainty.estimate`)."""
    stats, spectra, values, t_spectra, t_metrics = measure(acc, metric_names, metric_opts,
                                                           source.label, progress)
    if hasattr(progress, "phase"):
        progress.phase(None)  # type: ignore[union-attr]
    precision = precision_record(stats, acc, metric_names, metric_opts, values)
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
        jk = estimate(acc.blocks, acc.moments, acc.reservoir, resolve(metric_names),
                      asdict(metric_opts), values, stats.cov_eigenvalues, progress=progress,
                      label=source.label, block_map=block_map, stats=stats)
        result.uncertainty, result.uncertainty_method = jk.metrics, jk.method
        result.spectra_se = {"covariance": jk.spectrum_se}
        result.timings["uncertainty_s"] = time.perf_counter() - t0
    return result


def summarize_all(pairs: Iterable[tuple[Described, Accumulated]],
                  metric_names: Sequence[str] | None, metric_opts: MetricOptions,
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
            results.append(summarize(source, acc, metric_names, metric_opts, progress,
                                     ctx.map_blocks if ctx is not None else None))
    return results


def check_blocks(uncertainty: bool, blocks: int) -> None:
    """Refuse ``blocks`` < 5 when ``uncertainty`` asks for the jackknife."""
    if uncertainty and blocks < MIN_BLOCKS:
        raise UsageError(f"--blocks must be at least {MIN_BLOCKS}, got {blocks}",
                         hint=f"the jackknife needs several blocks (default {DEFAULT_BLOCKS})")


def blocked_stream(stream: StreamOptions, d: int, label: str, uncertainty: bool,
                   blocks: int, budget: int | None = None) -> StreamOptions:
    """The stream options of one input of width ``d``: with ``uncertainty``, K jackknife blocks
    fitted to the memory budget, ``budget`` bytes if given (see
    :func:`reprdiag.stats.blocked.fit_blocks`)."""
    if not uncertainty:
        return stream
    return replace(stream, blocks=fit_blocks(blocks, d, stream.device, label, budget))


def _stream_for(source: ArraySource, stream: StreamOptions, uncertainty: bool,
                blocks: int, budget: int | None = None) -> StreamOptions:
    n, d = source.shape
    out = blocked_stream(stream, d, source.label, uncertainty, blocks, budget)
    if out.blocks:
        check_rows(n, out.blocks, source.label)  # before reading anything
    return out


def analyze(inputs: Input | Sequence[Input], *, keys: Sequence[str] | None = None,
            metrics: Sequence[str] | None = None, concat: bool = False,
            pool: str | None = None, device: str | torch.device = "auto",
            precision: str = "auto", chunk_rows: int | None = None,
            sample_size: int = 16384, seed: int = 0, kappa: float = 10.0,
            er_estimator: str = "plugin", er_compat: str = "exact", nan: str = "error",
            uncertainty: bool = False, blocks: int = DEFAULT_BLOCKS,
            progress: Progress | None = None, backend: str = "auto",
            distributed: bool | DistributedContext | None = None,
            labels: str | None = None, pair: str | None = None) -> Report:
    """Analyze embedding files or tensors and return a :class:`Report`.

    ``inputs`` is a path, a tensor/array, or a list of them; every 2-D array of each file is
    one input unless ``keys`` picks some (``concat`` joins files as row shards). The other
    arguments mirror the CLI options of ``reprdiag analyze``. Under ``torchrun`` the rows are
    split over the ranks and merged (``distributed``, ``backend``: see
    :func:`reprdiag.distributed.session`); every rank returns the same report.
    ``uncertainty=True`` adds delete-a-block jackknife standard errors, bias and 95% intervals
    (``blocks`` K ≥ 5, default 20; costs K more metric evaluations and K·2·d²·8 bytes of
    moments): see :attr:`Report.uncertainty` and :mod:`reprdiag.uncertainty`.
    ``labels`` (``KEY`` of the same file or ``PATH[:KEY]``: one class id per row) adds the
    label metrics (nc1, lidar, ...), ``pair`` (a second, row-aligned set of embeddings) the
    paired-view metrics (alignment, Barlow Twins terms, CKA); both are streamed in the same
    pass (:mod:`reprdiag.companions`).

    >>> import torch, reprdiag
    >>> rep = reprdiag.analyze(torch.eye(4, dtype=torch.float64), metrics=["vne"], device="cpu")
    >>> round(rep.metrics["vne"], 6)
    1.386294
    """
    start = time.perf_counter()
    metric_opts = MetricOptions(kappa, er_estimator, er_compat)
    metric_opts.validate()
    for_input(metrics, extras_named(labels, pair))  # unknown names fail before any reading
    check_companions(labels, pair, uncertainty)
    dev = resolve_device(device)
    stream = StreamOptions(dev, precision, chunk_rows, sample_size, seed, nan)
    validate_stream(stream)
    check_blocks(uncertainty, blocks)
    with session(dev, backend, distributed) as ctx:
        if ctx is None:
            pairs: Iterator[tuple[ArraySource, Accumulated]] = (
                (s, accumulate(s, _stream_for(s, stream, uncertainty, blocks), progress,
                               companions_for(s, labels, pair)))
                for s in gather_sources(inputs, keys, pool, concat))
        else:
            refuse_in_memory(inputs)
            stream.device = dev = ctx.device
            budget = ctx.memory_budget() if uncertainty else None  # the same K on every rank
            pairs = ctx.accumulate_each(
                lambda: gather_sources(inputs, keys, pool, concat), stream, progress,
                check=check_shape,
                stream_for=lambda s: _stream_for(s, stream, uncertainty, blocks, budget),
                companions_for=lambda s: companions_for(s, labels, pair))
        results = summarize_all(pairs, metrics, metric_opts, progress, ctx)
        world_size = ctx.world_size if ctx else 1
    options: dict[str, Any] = {**asdict(metric_opts), "sample_size": sample_size, "seed": seed,
                               "precision": precision, "pool": pool, "nan": nan,
                               "chunk_rows": chunk_rows, "concat": concat,
                               "metrics": list(metrics) if metrics else None,
                               "uncertainty": uncertainty,
                               "blocks": blocks if uncertainty else None,
                               "labels": labels, "pair": pair}
    return make_report(results, options, dev, start, world_size)


def extras_named(labels: str | None, pair: str | None) -> set[str]:
    """The extra statistics that ``labels`` and ``pair`` stream (see :func:`for_input`)."""
    return {name for name, spec in (("classes", labels), ("pair", pair)) if spec}


def check_companions(labels: str | None, pair: str | None, uncertainty: bool) -> None:
    """Refuse what labels and paired views do not support yet: the jackknife."""
    if uncertainty and (labels or pair):
        raise UsageError("--uncertainty does not cover --labels/--pair yet",
                         hint="run the jackknife without them, or the label/pair metrics "
                         "without --uncertainty")


def companions_for(source: ArraySource, labels: str | None, pair: str | None
                   ) -> Callable[[torch.device], list[Companion]] | None:
    """What the pass over ``source`` streams beside its moments, checked before reading."""
    if not (labels or pair):
        return None
    label_src = label_source(labels, source) if labels else None  # checked before the pass
    pair_src = pair_source(pair, source) if pair else None
    d = source.shape[1]

    def build(device: torch.device) -> list[Companion]:
        out: list[Companion] = []
        if label_src is not None:
            out.append(LabelCompanion(label_src, d, device))
        if pair_src is not None:
            out.append(PairCompanion(pair_src, d, device))
        return out

    return build


def make_report(results: list[InputResult], options: dict[str, Any], device: torch.device,
                start: float, world_size: int = 1) -> Report:
    """Wrap per-input results with provenance: version, command line, device, timings."""
    return Report(inputs=results, options=options, device=describe(device), version=__version__,
                  command=list(sys.argv), world_size=world_size,
                  created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
                  timings={"total_s": time.perf_counter() - start})
