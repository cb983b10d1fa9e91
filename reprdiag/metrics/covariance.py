"""Covariance metrics: the VICReg covariance and variance terms, normalized std."""

from __future__ import annotations

import math

import torch

from reprdiag.metrics.registry import metric
from reprdiag.statistics import Statistics

VICREG = "Bardes, Ponce, LeCun, ICLR 2022 (official main_vicreg.py, one branch)"


def _offdiag_sq(c: torch.Tensor) -> torch.Tensor:
    """Σ_{i≠j} C_ij² over the last two axes (batched, differentiable)."""
    return (c**2).sum(dim=(-2, -1)) - (torch.diagonal(c, dim1=-2, dim2=-1) ** 2).sum(dim=-1)


def offdiag_term(c: torch.Tensor) -> torch.Tensor:
    """Σ_{i≠j} C_ij² / d of a (..., d, d) covariance: the formula of :func:`cov_offdiag`.

    A tensor function (batched, differentiable) shared by the metric and
    :func:`reprdiag.losses.cov_offdiag`.

    >>> float(offdiag_term(torch.tensor([[1.0, 0.5], [0.5, 1.0]])))
    0.25
    """
    return _offdiag_sq(c) / c.shape[-1]


def variance_hinge(c: torch.Tensor, eps: float = 1e-4) -> torch.Tensor:
    """mean_k relu(1 − √(C_kk + eps)) of a (..., d, d) covariance: the formula of
    :func:`vicreg_std` (batched, differentiable; shared with :func:`reprdiag.losses.vicreg_std`).

    >>> round(float(variance_hinge(torch.diag(torch.tensor([0.0, 4.0])))), 6)
    0.495
    """
    var = torch.diagonal(c, dim1=-2, dim2=-1)
    return torch.relu(1.0 - torch.sqrt(var + eps)).mean(dim=-1)


@metric("cov_offdiag", summary="VICReg covariance term Σ_{i≠j} C_ij² / d", range="[0, ∞)",
        direction="lower", citation=VICREG, bounds=lambda n, d: (0.0, math.inf))
def cov_offdiag(stats: Statistics) -> float:
    """Off-diagonal covariance mass, the VICReg covariance loss of one branch.

    Formula: Σ_{i≠j} C_ij² / d with C the unbiased covariance. Range [0, ∞), 0 for
    decorrelated features; scale-dependent. Lower is healthier. Complexity: O(d²) on the
    shared moments. Citation: Bardes, Ponce, LeCun, "VICReg: Variance-Invariance-Covariance
    Regularization for Self-Supervised Learning", ICLR 2022.

    >>> cov_offdiag(torch.cat([torch.eye(3), -torch.eye(3)]))
    0.0
    """
    return float(offdiag_term(stats.spectra.matrix("covariance")))


@metric("cov_offdiag_frac", summary="Σ_{i≠j} C_ij² / Σ_{i,j} C_ij², scale-free",
        range="[0, 1)", direction="lower", citation=VICREG, bounds=lambda n, d: (0.0, 1.0))
def cov_offdiag_frac(stats: Statistics) -> float:
    """Share of the squared covariance mass that lies off the diagonal.

    Formula: Σ_{i≠j} C_ij² / Σ_{i,j} C_ij². Range [0, 1): 0 for decorrelated features, near
    1 − 1/d for a rank-one covariance. Scale-free. Lower is healthier. Complexity: O(d²).

    >>> round(cov_offdiag_frac(torch.tensor([[1., 1.], [-1., -1.], [2., 2.]])), 12)
    0.5
    """
    c = stats.spectra.matrix("covariance")
    total = (c**2).sum()
    return float(_offdiag_sq(c) / total) if total > 0 else 0.0


@metric("vicreg_std", summary="VICReg variance hinge mean_k relu(1 − √(C_kk + 1e-4))",
        range="[0, 1)", direction="lower", citation=VICREG, bounds=lambda n, d: (0.0, 1.0))
def vicreg_std(stats: Statistics) -> float:
    """The VICReg variance term of one branch: how many features have std below 1.

    Formula: mean_k max(0, 1 − √(C_kk + 1e-4)). Range [0, 1): 0 when every feature's std
    is ≥ 1, near 1 at complete collapse. Lower is healthier; scale-dependent.
    Complexity: O(d) from the shared moments.

    >>> vicreg_std(torch.tensor([[2., 0.], [-2., 0.]]))  # one feature healthy, one dead
    0.495
    """
    return float(variance_hinge(stats.spectra.matrix("covariance")))


@metric("std_normalized", summary="√d · mean_k std_k(z): 0 at complete collapse, ≈1 healthy",
        range="[0, ~1]", direction="higher",
        citation="Lightly collapse monitor (× √d); Chen & He, SimSiam, CVPR 2021",
        bounds=lambda n, d: (0.0, math.sqrt(n / max(n - 1, 1)) + 1e-9))
def std_normalized(stats: Statistics) -> float:
    """Normalized per-dimension std of the L2-normalized rows.

    Formula: √d · mean_k std_k(z) (unbiased std over rows of z = x/‖x‖). About 1 for
    isotropic embeddings (each coordinate of a random unit vector has std 1/√d) and 0 when
    every row points the same way (complete collapse). Range [0, ~1]: at most √(N/(N−1)),
    since Σ_k var_k(z) ≤ N/(N−1)·mean‖z‖² ≤ N/(N−1) and mean_k std_k ≤ √(mean_k var_k).
    Higher is healthier. This is Lightly's ``std_of_l2_normalized`` (mean_k std_k(z), about
    1/√d when healthy) times √d, so that one scale reads the same at every d.
    Complexity: O(d) from the shared moments, or O(N·d) two-pass over the rows when all of
    them are at hand (then identical rows give exactly 0).
    Citation: Chen & He, "Exploring Simple Siamese Representation Learning", CVPR 2021
    (the std of ℓ2-normalized outputs), as monitored by Lightly.

    >>> std_normalized(torch.ones(4, 3))
    0.0
    """
    std = stats.z_variance().sqrt()
    return float(math.sqrt(stats.d) * std.mean())
