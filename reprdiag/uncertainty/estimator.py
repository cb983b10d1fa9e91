"""Jackknife standard errors, bias and intervals of every continuous metric.

Every metric is recomputed on the K delete-one-block statistics of
:mod:`reprdiag.uncertainty.deleted` (moments, row sample, and with ``--labels``/``--pair`` the
class and cross-moments, without block b), or, for metrics
with a one-pass ``deleted`` function (ER entropy, uniformity), all K at once. Blocks are
random, so their sizes m_b differ a little; the estimator is the weighted delete-m_b jackknife
of Busing, Meijer & van der Leeden (Statistics and Computing 9, 1999), which is the textbook
delete-a-group jackknife when all blocks are equal. With θ̂ the full estimate, θ₍b₎ the
estimate without block b, N = Σm_b and h_b = N/m_b:

    θ_J  = K·θ̂ − Σ_b (1 − m_b/N)·θ₍b₎            (bias-corrected estimate)
    θ̃_b = h_b·θ̂ − (h_b − 1)·θ₍b₎                  (pseudo-values)
    SE²  = (1/K)·Σ_b (θ̃_b − θ_J)² / (h_b − 1)
    bias = θ̂ − θ_J                                  ((K−1)(mean θ₍b₎ − θ̂) for equal blocks)
    interval = θ̂ ± t_{K−1, (1+level)/2}·SE

Deleted spectra (``deleted_spectra``): ``"exact"`` decomposes every block's moment matrices
again (K more eigendecompositions of each spectrum used, and partition isotropy's K more
O(M·d²) projections); ``"first-order"`` updates the full data's decompositions instead
(:func:`reprdiag.spectrum.first_order`: λ_k + v_kᵀΔv_k, one O(d³) product per block for
the covariance spectrum, whose per-eigenvalue SE the report gives; metrics of the other two
spectra linearized, θ + ⟨Δ_b, V·diag(∂θ/∂λ)·Vᵀ⟩, O(d²) per block
(:mod:`reprdiag.uncertainty.linear`, recorded in ``uncertainty_method.linearized``); and
partition isotropy's per-block sums with a first-order rotation of its directions). A block
is 1/K of the data, so the update's error is second order in that share: against the exact
deletions the standard errors agreed to 0.5 % (1 % for partition isotropy, 4 % for
alpha_req_r2) at 20,000 × 384 with K = 20, but were 25 % low for effective rank and RankMe
at 2,000 × 384, where a block (100 rows) is smaller than d. ``"auto"`` (the default) takes
first order when every block holds at least d rows (N/K ≥ d), else exact; the report's
``uncertainty_method`` records which ran (exact whenever the spectra take the N×N Gram
path). The jackknife's bias estimate is itself second
order (at 20,000 × 384: −0.60 for effective rank from exact deletions, −0.002 from
first-order ones), so on the first-order path spectral metrics report no bias (NaN; JSON
null); SE and intervals are unaffected. On the CPU, exact blocks run side by side on the
CPU's threads, one torch thread each (LAPACK's eigensolvers scale poorly over threads);
first-order blocks, one d×d×d product each, run one after the other on all of torch's
threads, which a matrix product uses well (20,000 × 768, 2 cores: the K blocks 1.15 s in
turn against 1.50 s side by side; equal at d = 512, 0.05 s slower at d = 384).
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from reprdiag.defaults import DELETED_SPECTRA
from reprdiag.device import serial_map, threaded_map
from reprdiag.engine import Progress
from reprdiag.metrics import MetricInfo, Statistics, compute
from reprdiag.metrics.registry import option_kwargs
from reprdiag.stats import Reservoir, StreamingMoments
from reprdiag.stats.blocked import BlockedMoments, BlockedStatistic, block_labels
from reprdiag.uncertainty.deleted import deleted_statistic
from reprdiag.uncertainty.linear import Linear, linearize

#: ``block_map(f, K)`` → ``[f(0), …, f(K − 1)]``, however the calls are spread.
BlockMap = Callable[[Callable[[int], Any], int], list[Any]]

LEVEL = 0.95
METHOD = "jackknife"


def deleted_spectra_path(mode: str, n: int, d: int, blocks: int, gram: bool = False) -> str:
    """``"first-order"`` or ``"exact"``: how the K deleted spectra of an N × d input are
    computed under ``mode`` (``"auto"``: first order when N/K ≥ d); always exact when the
    spectra take the N×N ``gram`` path (N ≲ 0.68·d, every row at hand), which has no d×d
    decompositions to update and small Gram matrices per deletion.

    >>> deleted_spectra_path("auto", 20000, 384, 20), deleted_spectra_path("auto", 2000, 384, 20)
    ('first-order', 'exact')
    """
    if mode not in DELETED_SPECTRA:
        raise ValueError(f"deleted_spectra must be one of {DELETED_SPECTRA}, got {mode!r}")
    if gram:
        return "exact"
    if mode == "auto":
        return "first-order" if n >= blocks * d else "exact"
    return mode


def t_two_sided_cdf(t: float, df: int) -> float:
    """P(|T| ≤ t) for Student's t with integer ``df`` (closed form, A&S 26.7.3–26.7.4).

    >>> round(t_two_sided_cdf(1.0, 1), 12)  # Cauchy: 2·atan(1)/π
    0.5
    """
    theta = math.atan(t / math.sqrt(df))
    c2, s = math.cos(theta) ** 2, math.sin(theta)
    if df % 2 == 0:
        term = total = 1.0
        for k in range(1, df // 2):
            term *= (2 * k - 1) / (2 * k) * c2
            total += term
        return s * total
    if df == 1:
        return 2 * theta / math.pi
    term = total = math.cos(theta)
    for k in range(1, (df - 1) // 2):
        term *= (2 * k) / (2 * k + 1) * c2
        total += term
    return 2 / math.pi * (theta + s * total)


def t_quantile(level: float, df: int) -> float:
    """t with P(|T| ≤ t) = ``level`` (two-sided), by bisection on the closed-form CDF.

    >>> round(t_quantile(0.95, 19), 4), round(t_quantile(0.95, 4), 4)
    (2.093, 2.7764)
    """
    lo, hi = 0.0, 1.0
    while t_two_sided_cdf(hi, df) < level:
        lo, hi = hi, 2 * hi
    for _ in range(64):
        mid = (lo + hi) / 2
        if t_two_sided_cdf(mid, df) < level:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2


def jackknife(full: np.ndarray | float, deleted: np.ndarray, sizes: Sequence[int],
              level: float = LEVEL) -> dict[str, np.ndarray]:
    """SE, bias and interval of an estimate from its delete-one-block values (vectorized).

    ``deleted`` has one row per block (shape (K, …) like ``full``); ``sizes`` are the blocks'
    row counts. Empty blocks are skipped; fewer than two non-empty blocks, or any non-finite
    value, give NaN. Formulas in the module docstring. Complexity O(K·size of ``full``).

    >>> out = jackknife(2.0, np.array([1.0, 2.0, 3.0]), [10, 10, 10])
    >>> float(out["se"]) ** 2, float(out["bias"])  # (K−1)/K·Σ(θ₍b₎−θ̄)² = 2/3·2
    (1.3333333333333333, 0.0)
    """
    full = np.asarray(full, dtype=np.float64)
    deleted = np.asarray(deleted, dtype=np.float64)
    m = np.asarray(sizes, dtype=np.float64)
    deleted = deleted[m > 0]
    m = m[m > 0]
    k = m.size
    if k < 2:
        nan = np.full(full.shape, np.nan)
        return {"se": nan, "bias": nan, "ci_low": nan, "ci_high": nan}
    shape = (k,) + (1,) * full.ndim
    n, h = m.sum(), (m.sum() / m).reshape(shape)
    theta_j = k * full - ((1 - m / n).reshape(shape) * deleted).sum(axis=0)
    pseudo = h * full - (h - 1) * deleted
    se = np.sqrt((((pseudo - theta_j) ** 2) / (h - 1)).sum(axis=0) / k)
    half = t_quantile(level, k - 1) * se
    return {"se": se, "bias": full - theta_j, "ci_low": full - half, "ci_high": full + half}


@dataclass
class JackknifeResult:
    """Per-metric ``{se, ci_low, ci_high, bias}``, the covariance spectrum's SE, and how."""

    metrics: dict[str, dict[str, float]]
    spectrum_se: list[float]
    method: dict[str, Any] = field(default_factory=dict)


def _padded(values: torch.Tensor, length: int) -> np.ndarray:
    out = np.zeros(length)
    v = values.cpu().numpy()[:length]
    out[: v.size] = v
    return out


def estimate(blocked: BlockedMoments, total: StreamingMoments, sample: Reservoir,
             infos: Sequence[MetricInfo], options: dict[str, object],
             values: dict[str, float], eigenvalues: torch.Tensor, level: float = LEVEL,
             progress: Progress | None = None, label: str = "<input>",
             block_map: BlockMap | None = None, stats: Statistics | None = None,
             extras: Mapping[str, Any] | None = None,
             deleted_spectra: str = "auto") -> JackknifeResult:
    """Recompute every continuous metric (not ``discrete`` ones) and the covariance spectrum
    on the K delete-one-block statistics and turn them into jackknife estimates.

    Moment metrics use the blocks' row counts; sample metrics (``uses_sample``) the blocks'
    counts within the sample. Complexity: K × (the metrics' own cost after the pass).
    ``block_map(f, K)`` evaluates ``f`` on every block (default: :func:`threaded_map` for
    exact deletions on the CPU, else :func:`serial_map`: module docstring; under
    ``torchrun``, :meth:`~reprdiag.distributed.DistributedContext.map_blocks` spreads the
    blocks over the ranks, K/W each). ``stats``: the statistics the plain values came from
    (of ``total`` and ``sample``); metrics with a one-pass ``deleted`` then reuse what they
    cached there (the sample's pairwise pass, split by block when ``stats.sample_groups``
    was set before the plain values were computed). ``extras``: the statistics streamed
    beside the moments, by name; those kept per block
    (:class:`~reprdiag.stats.blocked.BlockedStatistic`: class moments, cross-moments) give
    the label and paired-view metrics their deleted values, with the moments' block sizes
    (metrics of extras streamed whole get no estimate). ``deleted_spectra``: ``"auto"``,
    ``"first-order"`` or ``"exact"`` (module docstring; :func:`deleted_spectra_path`).
    """
    full = stats if stats is not None else Statistics(total, sample)
    path = deleted_spectra_path(deleted_spectra, total.n, total.d, blocked.blocks,
                                full.spectra.use_gram)
    kept_per_block = {k for k, v in (extras or {}).items() if isinstance(v, BlockedStatistic)}
    unblocked = set(full.extras) - kept_per_block  # streamed whole: no deleted values to give
    continuous = [i for i in infos if not i.discrete and i.name in values
                  and i.needs not in unblocked]
    deleted: dict[str, list[float]] = {i.name: [] for i in continuous}
    labels = block_labels(sample.index, blocked.seed, blocked.blocks)
    if full.sample_groups is None:
        full.sample_groups = (labels, blocked.blocks)
    for info in continuous:  # metrics that compute all K deletions in one pass
        if info.deleted is not None:
            deleted[info.name] = info.deleted(full, labels, blocked.blocks,
                                              **option_kwargs(info, options))
    one_by_one = [i for i in continuous if i.deleted is None]
    advancing = threading.Lock()
    for part in (extras or {}).values():  # merge each one's blocks once, before the threads
        if isinstance(part, BlockedStatistic):
            part.merged_state()
    linear: dict[str, Linear] = {}
    if path == "first-order":  # the base decompositions, with vectors, before the threads
        for name in ("covariance", "autocorrelation", "raw"):
            full.spectra.with_vectors(name)
            full.spectra.matrix(name)
        linear = linearize(full, [i for i in one_by_one if i.spectral and not i.uses_sample],
                           options)
        one_by_one = [i for i in one_by_one if i.name not in linear]

    def one_block(b: int) -> tuple[dict[str, float], np.ndarray]:
        stats = deleted_statistic(blocked, total, sample, b, extras)
        if path == "first-order":
            stats.base, stats.block = full, b
        found = compute(stats, one_by_one, options)  # XᵀX decomposed once (metrics.prepare)
        found.update({name: lin.deleted(stats) for name, lin in linear.items()})
        if progress:
            with advancing:  # blocks may run on several threads
                progress.advance(1)
        return found, _padded(stats.cov_eigenvalues, eigenvalues.numel())

    if progress:
        progress.start(f"{label} · jackknife", blocked.blocks, unit="blocks")
    try:
        side_by_side = torch.device(total.device).type == "cpu" and path == "exact"
        default = threaded_map if side_by_side else serial_map
        per_block = (block_map or default)(one_block, blocked.blocks)
    finally:
        if progress:
            progress.finish()
    for found, _ in per_block:
        for name, value in found.items():
            deleted[name].append(value)
    spectra = [spectrum for _, spectrum in per_block]
    in_sample = torch.bincount(labels.cpu(), minlength=blocked.blocks).tolist()
    out = {}
    for info in continuous:
        est = jackknife(values[info.name], np.array(deleted[info.name]),
                        in_sample if info.uses_sample else blocked.sizes, level)
        out[info.name] = {k: float(v) for k, v in est.items()}
        if path == "first-order" and info.spectral:  # bias is second order: not estimated
            out[info.name]["bias"] = math.nan
    spec = jackknife(eigenvalues.cpu().numpy(), np.stack(spectra), blocked.sizes, level)["se"]
    method = {"method": METHOD, "blocks": blocked.blocks, "level": level, "seed": blocked.seed,
              "interval": "estimate ± t(K−1)·se", "deleted_spectra": path}
    if path == "first-order":
        method["linearized"] = sorted(linear)
    return JackknifeResult(out, spec.tolist(), method)


__all__ = [
    "DELETED_SPECTRA",
    "LEVEL",
    "METHOD",
    "JackknifeResult",
    "deleted_spectra_path",
    "estimate",
    "jackknife",
    "serial_map",
    "t_quantile",
    "t_two_sided_cdf",
    "threaded_map",
]
