"""Uniformity of the normalized rows on the sphere (Wang & Isola, ICML 2020)."""

from __future__ import annotations

import math

import torch

from reprdiag.metrics import sample
from reprdiag.metrics.pairwise import UNIFORMITY_T
from reprdiag.metrics.registry import metric
from reprdiag.statistics import Statistics


def _uniformity_of(mean: float) -> float:
    """ln of the pair mean, kept inside the documented range [−4t, 0] (float32 Gram entries
    can exceed ±1 by a rounding step)."""
    if mean != mean:  # NaN: fewer than two rows with a direction
        return math.nan
    return min(0.0, max(-4 * UNIFORMITY_T, math.log(mean)))


def _uniformity_deleted(stats: Statistics, labels: torch.Tensor, blocks: int) -> list[float]:
    """``uniformity`` of the sample without each jackknife block, from the sample's one
    shared pairwise pass split by block (no pass per block)."""
    ps = sample.pair_sums(stats, None, labels, blocks)
    if ps is None:
        return [math.nan] * blocks
    return [_uniformity_of(ps.pair_mean(without=b)) for b in range(blocks)]


@metric("uniformity", summary="ln mean_{i<j} exp(−2‖zᵢ−zⱼ‖²) of the normalized sample",
        range="[−8, 0]", direction="lower", citation="Wang & Isola, ICML 2020",
        bounds=lambda n, d: (-4 * UNIFORMITY_T, 0.0), uses_sample=True,
        deleted=_uniformity_deleted)
def uniformity(stats: Statistics) -> float:
    """Uniformity loss of the normalized rows z = x/‖x‖ on the unit sphere.

    Formula: ln mean_{i<j} exp(−t‖zᵢ − zⱼ‖²), t = 2, over all pairs of the row sample (all
    rows when N ≤ the sample size); zero rows have no direction and are left out.
    Range [−4t, 0] = [−8, 0]: 0 when every row points the same way (complete collapse), about
    −2t = −4 for rows spread uniformly over a high-dimensional sphere. Lower is more uniform
    (healthier). NaN with fewer than two rows that have a direction.
    Complexity: O(M²·d/2) time in blocks, O(block²) memory: the blocks of the sample's Gram
    matrix are formed once for this metric and ER entropy (the same float32 upper-triangle
    pass on float32 samples of ≥ 2048 rows; :func:`reprdiag.metrics.pairwise.pair_sums`).
    Citation: Wang & Isola, "Understanding Contrastive Representation Learning through
    Alignment and Uniformity on the Hypersphere", ICML 2020 (L_uniform, t = 2).

    >>> round(uniformity(torch.ones(5, 3, dtype=torch.float64)), 12)
    0.0
    >>> round(uniformity(torch.tensor([[1.0, 0.0], [-1.0, 0.0]], dtype=torch.float64)), 12)
    -8.0
    """
    ps = sample.pair_sums(stats, None)  # the Gram pass ER entropy reads too
    if ps is None:
        return math.nan
    stats.solvers["uniformity"] = ps.solver
    return _uniformity_of(ps.pair_mean())
