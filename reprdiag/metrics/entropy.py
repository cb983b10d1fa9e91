"""Entropy metrics: von Neumann entropy of the autocorrelation, and the ER vMF-KDE entropy."""

from __future__ import annotations

import math

import torch

from reprdiag.metrics import pairwise, sample, special
from reprdiag.metrics.registry import MetricValue, metric
from reprdiag.statistics import Statistics

KIM_2023 = "Kim et al., CVPR 2023 (get_vne, official repo)"


def spectral_entropy(p: torch.Tensor, floor: float = 0.0) -> torch.Tensor:
    """−Σ_k p_k ln p_k over the last axis, counting entries p_k ≤ ``floor`` as 0 (0·ln 0 = 0).

    Autograd-safe and free of host synchronisation: the log is taken of p clamped at the
    smallest normal number and the excluded terms are masked with ``torch.where``, so no
    ln 0 = −inf ever meets a zero (−inf·0 = NaN) in the forward or the backward pass. The
    gradient of a kept term is −(ln p_k + 1); excluded terms get 0.

    >>> float(spectral_entropy(torch.tensor([0.5, 0.5, 0.0, -1e-18], dtype=torch.float64)))
    0.6931471805599453
    """
    tiny = torch.finfo(p.dtype).tiny
    terms = -p * torch.log(p.clamp_min(tiny))
    return torch.where(p > floor, terms, torch.zeros_like(terms)).sum(dim=-1)


@metric("vne", spectral=True,
        summary="von Neumann entropy −Σ η ln η of ρ = ZᵀZ/N (rows normalized, no centring)",
        range="[0, ln min(N,d)]", direction="higher", citation=KIM_2023,
        bounds=lambda n, d: (0.0, math.log(min(n, d))))
def vne(stats: Statistics) -> MetricValue:
    """Von Neumann entropy of the autocorrelation of the normalized rows.

    Formula: ρ = ZᵀZ/N with z_i = x_i/‖x_i‖ (0 for a zero row; trace 1); VNE = −Σ_k η_k ln η_k over
    the eigenvalues η of ρ. Range [0, ln min(N, d)]: 0 when every row points the same way,
    ln d for an isotropic ρ. Higher is healthier.
    Complexity: O(N·d²) moments (shared), O(d³) eigvalsh (or O(N²d) on the N<d Gram path).
    Citation: Kim et al., "VNE: An Effective Method for Improving Deep Representation by
    Manipulating Eigenvalue Distribution", CVPR 2023.

    >>> round(vne(torch.eye(4)), 9)  # four orthogonal rows: ln 4
    1.386294361
    """
    # ρ is taken at trace 1: zero rows (z = 0, counted and reported as a warning) are left
    # out, which keeps VNE inside [0, ln min(N, d)] and removes the rounding of float32 z.
    eta = stats.autocorr_eigenvalues
    total = eta.sum()
    return spectral_entropy(eta / total) if total > 0 else 0.0


@metric("vne_normalized", spectral=True,
        summary="vne / ln min(N,d)", range="[0, 1]", direction="higher",
        citation=KIM_2023, bounds=lambda n, d: (0.0, 1.0))
def vne_normalized(stats: Statistics) -> MetricValue:
    """VNE divided by its maximum ln min(N, d); in [0, 1], higher is healthier.

    Complexity: that of :func:`vne`. (0 by convention when min(N, d) = 1.)

    >>> round(vne_normalized(torch.eye(4)), 12)
    1.0
    """
    m = min(stats.n, stats.d)
    return vne(stats) / math.log(m) if m > 1 else 0.0


def _er_entropy_deleted(stats: Statistics, labels: torch.Tensor, blocks: int,
                        kappa: float = 10.0, er_estimator: str = "plugin",
                        er_compat: str = "exact") -> list[float]:
    """``er_entropy`` of the sample without each jackknife block, from the sample's one
    shared pairwise pass split by block (:func:`reprdiag.metrics.sample.pair_sums`)."""
    ps = sample.pair_sums(stats, kappa, labels, blocks)
    if ps is None:
        return [math.nan] * blocks
    return [ps.er_entropy(er_estimator, er_compat, without=b) for b in range(blocks)]


def _er_ceiling(d: int) -> float:
    """ln area(S^{d−1}) plus float32 rounding room (the blockwise sums run in float32)."""
    top = special.log_sphere_area(d)
    return top + 1e-6 * max(1.0, abs(top))


@metric("er_entropy",
        summary="vMF kernel density entropy of the normalized sample (ER bound), κ=10",
        range="(−∞, ln|S^{d−1}|]", direction="higher",
        citation="Rodríguez-Gálvez et al., ICML 2023 (official entropy())",
        bounds=lambda n, d: (-math.inf, _er_ceiling(d)), uses_sample=True,
        deleted=_er_entropy_deleted)
def er_entropy(stats: Statistics, kappa: float = 10.0, er_estimator: str = "plugin",
               er_compat: str = "exact") -> float:
    """ER entropy: the von Mises–Fisher kernel density estimate of the entropy of the
    normalized rows e_i (a sample of M rows, all of them when N ≤ M).

    Formula: ℓ_i = −logsumexp_j(κ e_iᵀe_j) + ln M − ln C_d(κ), with
    C_d(κ) = κ^{d/2−1}/((2π)^{d/2} I_{d/2−1}(κ)); the plug-in estimator (default) is
    Σ_i softmax(−ℓ)_i ℓ_i and Joe's is mean_i ℓ_i (``er_estimator="joe"``). ``er_compat=
    "reference"`` reproduces the official float arithmetic ln(I_ν(κ) + 1e-7): once
    I_ν(κ) ≪ 1e-7 (d ≥ 52 at κ = 10) the 1e-7 guard, not an underflow, sets that term to
    ln 1e-7 = −16.1 (true ln I₁₉₁(10) = −508.2 at d = 384, I ≈ 1.96e-221 a normal float64), so
    the constant is off by 492 nats at d = 384 and about 1786 at d = 1000.
    Range: at most the log-area of the sphere (the uniform distribution); falls
    as the rows concentrate. Higher is healthier. Rows of norm exactly 0 have no direction,
    so they are left out of the sample (a zero vector is not a point of the sphere, and kept
    in, it would break the bound); NaN when every sampled row is zero.
    Complexity: O(M²·d/2) time blockwise (one pass over the sample's Gram blocks, shared
    with uniformity), O(block²) memory.
    Citation: Rodríguez-Gálvez, Blaas, Rodríguez, Theobald, "The Role of Entropy and
    Reconstruction in Multi-View Self-Supervised Learning", ICML 2023.

    >>> x = torch.eye(3, dtype=torch.float64).repeat(2, 1)
    >>> er_entropy(x) < er_entropy(torch.cat([x, -x]))
    True
    """
    pairwise.er_constant(stats.d, 1, kappa, er_compat)  # checks kappa and er_compat
    ps = sample.pair_sums(stats, kappa)  # one Gram pass shared with uniformity
    if ps is None:
        return math.nan  # no row has a direction: there is no density on the sphere
    stats.solvers["er_entropy"] = ps.solver
    return ps.er_entropy(er_estimator, er_compat)
