"""Uniformity of the normalized rows on the sphere (Wang & Isola, ICML 2020)."""

from __future__ import annotations

import math

import torch

from reprdiag.metrics.registry import metric
from reprdiag.statistics import Statistics

UNIFORMITY_T = 2.0


def pair_mean_exp(z: torch.Tensor, t: float = UNIFORMITY_T, block_rows: int = 2048) -> float:
    """mean over pairs i < j of exp(−t‖zᵢ − zⱼ‖²) for rows of norm 1.

    ‖zᵢ − zⱼ‖² = 2 − 2zᵢᵀzⱼ ∈ [0, 4], so every term lies in [e^{−4t}, 1]: no shift is needed.
    Blocks I ≤ J of the Gram matrix are formed in the rows' dtype (float32 or float64), in
    place; each block's row sums (in that dtype: float32 sums of at most block_rows terms in
    [e^{−8}, 1] are good to ~1e-7 relative) are added in float64. A diagonal block, being
    symmetric, counts (its sum − its trace) / 2. Time O(M²·d/2), memory one block_rows² block.
    """
    m = z.shape[0]
    total = torch.zeros((), dtype=torch.float64, device=z.device)
    for i0 in range(0, m, block_rows):
        rows = z[i0:i0 + block_rows]
        for j0 in range(i0, m, block_rows):
            block = rows @ z[j0:j0 + block_rows].T
            block.mul_(2 * t).sub_(2 * t).exp_()
            part = block.sum(dim=1).to(torch.float64).sum()
            if j0 == i0:
                part = (part - block.diagonal().to(torch.float64).sum()) / 2
            total += part
    return float(total) / (m * (m - 1) / 2)


@metric("uniformity", summary="ln mean_{i<j} exp(−2‖zᵢ−zⱼ‖²) of the normalized sample",
        range="[−8, 0]", direction="lower", citation="Wang & Isola, ICML 2020",
        bounds=lambda n, d: (-4 * UNIFORMITY_T, 0.0), uses_sample=True)
def uniformity(stats: Statistics) -> float:
    """Uniformity loss of the normalized rows z = x/‖x‖ on the unit sphere.

    Formula: ln mean_{i<j} exp(−t‖zᵢ − zⱼ‖²), t = 2, over all pairs of the row sample (all
    rows when N ≤ the sample size); zero rows have no direction and are left out.
    Range [−4t, 0] = [−8, 0]: 0 when every row points the same way (complete collapse), about
    −2t = −4 for rows spread uniformly over a high-dimensional sphere. Lower is more uniform
    (healthier). NaN with fewer than two rows that have a direction.
    Complexity: O(M²·d) time in blocks, O(block²) memory.
    Citation: Wang & Isola, "Understanding Contrastive Representation Learning through
    Alignment and Uniformity on the Hypersphere", ICML 2020 (L_uniform, t = 2).

    >>> round(uniformity(torch.ones(5, 3, dtype=torch.float64)), 12)
    0.0
    >>> round(uniformity(torch.tensor([[1.0, 0.0], [-1.0, 0.0]], dtype=torch.float64)), 12)
    -8.0
    """
    on_sphere = stats.sample.ne(0).any(dim=1)  # every non-zero row, at any scale
    if int(on_sphere.sum()) < 2:
        return math.nan
    z = stats.normalized_sample[on_sphere]
    z = z if z.dtype in (torch.float32, torch.float64) else z.float()
    # float32 Gram entries can exceed ±1 by a rounding step: keep the documented range
    return min(0.0, max(-4 * UNIFORMITY_T, math.log(pair_mean_exp(z))))
