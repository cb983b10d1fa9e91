"""Differentiable spectral losses for training, and an eigendecomposition with a robust backward.

Every function takes a batch of embeddings ``x`` of shape (..., N, d) (leading axes are
independent batches), runs on the tensor's device, and returns a tensor that autograd can
differentiate. The formulas are those of :mod:`reprdiag.metrics` (docs/design.md §3), evaluated on
the batch instead of on streamed moments; the shared pieces (the spectral entropy, the VICReg
terms of a covariance, ER entropy's constant and reduction) are imported from there, so each
formula lives in one place.

- :func:`vne` / :class:`VNELoss`: von Neumann entropy of ρ = ZᵀZ/N (Kim et al., CVPR 2023).
- :func:`vicreg_std`, :func:`cov_offdiag` / :class:`VarianceLoss`, :class:`CovarianceLoss`:
  VICReg's variance and covariance terms of one branch (Bardes et al., ICLR 2022).
- :func:`er_entropy` / :class:`EREntropyLoss`: the vMF kernel-density entropy of the batch
  (Rodríguez-Gálvez et al., ICML 2023), through log-sum-exp.
- :func:`sym_eig`, :func:`spectral_map`, :func:`sqrtm`, :func:`inv_sqrtm` (defined in
  :mod:`reprdiag.linalg`, re-exported here): an exact float64 ``eigh`` forward whose backward
  replaces 1/(λᵢ − λⱼ) by a truncated Taylor series (``method="taylor"``), for losses that
  need eigenvectors (whitening, square roots, clipping).

A module's ``forward`` returns the term to *add* to the task loss, signed so that a positive
``coef`` pushes the representation towards health: ``VNELoss(coef)(z) = −coef·vne(z)`` (the
regulariser ``loss = task_loss − coef·vne(z)``; a negative ``coef`` lowers the entropy, as
Kim et al.'s VNE⁻), ``VarianceLoss(coef)(z) = coef·vicreg_std(z)``.

>>> z = torch.randn(64, 8, requires_grad=True)
>>> loss = VNELoss(coef=0.1)(z)
>>> loss.backward()
>>> bool(torch.isfinite(z.grad).all())
True
"""

from __future__ import annotations

import math

import torch
from torch import nn

from reprdiag.linalg import EIG_METHODS, SymEig, inv_sqrtm, spectral_map, sqrtm, sym_eig
from reprdiag.metrics.covariance import offdiag_term, variance_hinge
from reprdiag.metrics.entropy import spectral_entropy
from reprdiag.metrics.pairwise import er_constant, er_reduce

__all__ = ["EIG_METHODS", "CovarianceLoss", "EREntropyLoss", "SymEig", "VNELoss",
           "VarianceLoss", "alignment", "batch_covariance", "cov_offdiag", "er_entropy",
           "inv_sqrtm", "normalize_rows", "spectral_map", "sqrtm", "sym_eig", "uniformity",
           "vicreg_std", "vne"]

#: ``normalize_rows``' guard: torch's eps, which keeps the gradient finite at a zero row. The
#: metrics (reprdiag.stats.normalize_rows) have none: only an exactly zero row is zero there.
NORM_EPS = 1e-12


# ---------------------------------------------------------------------------------------------
# Batch statistics
# ---------------------------------------------------------------------------------------------


def _batch(x: torch.Tensor, name: str, min_rows: int = 1) -> torch.Tensor:
    """Check a (..., N, d) batch; half and bfloat16 are promoted to float32."""
    if not isinstance(x, torch.Tensor) or x.ndim < 2:
        raise ValueError(f"{name}: expected a (..., N, d) tensor, got "
                         f"{tuple(getattr(x, 'shape', ()))}")
    if x.shape[-2] < min_rows or x.shape[-1] < 1:
        raise ValueError(f"{name}: needs at least {min_rows} row(s) and 1 column, got "
                         f"{tuple(x.shape)}")
    if not x.is_floating_point():
        return x.to(torch.get_default_dtype())
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x


def normalize_rows(x: torch.Tensor) -> torch.Tensor:
    """z = x / max(‖x‖₂, 1e-12) row by row, differentiable (unlike the metrics of
    docs/design.md §3, rows of norm below 1e-12 shrink towards 0 here: the guard keeps
    gradients finite).

    >>> normalize_rows(torch.tensor([[3.0, 4.0], [0.0, 0.0]])).tolist()
    [[0.6000000238418579, 0.800000011920929], [0.0, 0.0]]
    """
    return nn.functional.normalize(x, p=2.0, dim=-1, eps=NORM_EPS)


def batch_covariance(x: torch.Tensor) -> torch.Tensor:
    """C = (X − μ)ᵀ(X − μ)/(N − 1), the unbiased covariance of a (..., N, d) batch.

    >>> batch_covariance(torch.tensor([[1.0, 2.0], [3.0, 4.0]])).tolist()
    [[2.0, 2.0], [2.0, 2.0]]
    """
    x = _batch(x, "batch_covariance", min_rows=2)
    xc = x - x.mean(dim=-2, keepdim=True)
    return xc.mT @ xc / (x.shape[-2] - 1)


# ---------------------------------------------------------------------------------------------
# Functional losses
# ---------------------------------------------------------------------------------------------


def vne(x: torch.Tensor, floor: float | None = None) -> torch.Tensor:
    r"""Von Neumann entropy of a batch, differentiable: the regulariser of Kim et al.

    Formula: z_i = x_i / max(‖x_i‖, 1e-12), ρ = ZᵀZ/N (trace 1), VNE = −Σ_k η_k ln η_k over the
    eigenvalues η of ρ (the same value as the metric :func:`reprdiag.metrics.vne`). When
    N < d the N×N Gram matrix ZZᵀ/N is decomposed instead (same non-zero eigenvalues).
    Eigenvalues ≤ ``floor`` count as 0 (default: the machine epsilon of the compute dtype,
    the solver's rounding level since ‖ρ‖ ≤ 1); the sum has no ``nansum``.

    Gradient: ∂VNE/∂ρ = −V diag(ln η + 1) Vᵀ (``eigvalsh``'s backward uses only the
    eigenvectors, so repeated eigenvalues are harmless). Eigenvalues at or below the floor
    get a zero gradient instead of ln 0 · 0 = NaN, so rank-deficient batches (N < d, dead
    dimensions, collapse) train without NaN. The naive ``-(η * η.log()).nansum()`` is finite
    in the forward pass but NaN in the backward as soon as one eigenvalue is 0 or negative.

    Range: [0, ln min(N, d)]; higher = more spread out. Complexity: O(N·d·min(N, d)) for ρ
    plus O(min(N, d)³) for ``eigvalsh``. Half precision is computed in float32.
    Reference: J. Kim, S. Kang, D. Hwang, J. Shin, W. Rhee, "VNE: An Effective Method for
    Improving Deep Representation by Manipulating Eigenvalue Distribution", CVPR 2023.

    Args:
        x: (..., N, d) embeddings.
        floor: eigenvalues at or below it are treated as 0.

    >>> round(float(vne(torch.eye(4, dtype=torch.float64))), 9)  # four orthogonal rows: ln 4
    1.386294361
    """
    z = normalize_rows(_batch(x, "vne"))
    n, d = z.shape[-2:]
    rho = (z @ z.mT if n < d else z.mT @ z) / n
    eta = torch.linalg.eigvalsh(rho)
    return spectral_entropy(eta, torch.finfo(eta.dtype).eps if floor is None else floor)


def vicreg_std(x: torch.Tensor, eps: float = 1e-4) -> torch.Tensor:
    """VICReg variance term of a batch: mean_k relu(1 − √(C_kk + eps)), C the unbiased covariance.

    Same formula as :func:`reprdiag.metrics.vicreg_std` (shared code). Range [0, 1); lower =
    healthier. Gradient finite everywhere (eps > 0). Complexity O(N·d²) (O(N·d) would do for
    the diagonal; the covariance is formed once and shared). Reference: Bardes, Ponce,
    LeCun, "VICReg", ICLR 2022 (official ``main_vicreg.py``, one branch).

    >>> round(float(vicreg_std(torch.tensor([[2.0, 0.0], [-2.0, 0.0]]))), 6)
    0.495
    """
    return variance_hinge(batch_covariance(x), eps)


def cov_offdiag(x: torch.Tensor) -> torch.Tensor:
    """VICReg covariance term of a batch: Σ_{i≠j} C_ij² / d.

    Same formula as :func:`reprdiag.metrics.cov_offdiag` (shared code). Range [0, ∞); lower =
    decorrelated. Complexity O(N·d²). Reference: Bardes, Ponce, LeCun, ICLR 2022.

    >>> float(cov_offdiag(torch.cat([torch.eye(3), -torch.eye(3)])))
    0.0
    """
    return offdiag_term(batch_covariance(x))


def uniformity(x: torch.Tensor, t: float = 2.0) -> torch.Tensor:
    """Uniformity loss of a batch: ln mean_{i<j} exp(−t‖zᵢ − zⱼ‖²), z = x/‖x‖ (Wang & Isola).

    Same formula as :func:`reprdiag.metrics.uniformity` (there on a row sample). Range
    [−4t, 0]; lower = more uniform on the sphere. Differentiable (log-sum-exp over the upper
    triangle of the pairwise distances). Complexity O(N²·d). Reference: Wang & Isola,
    "Understanding Contrastive Representation Learning through Alignment and Uniformity on the
    Hypersphere", ICML 2020 (``lunif``, t = 2).

    >>> round(float(uniformity(torch.tensor([[1.0, 0.0], [-1.0, 0.0]]))), 6)
    -8.0
    """
    z = normalize_rows(_batch(x, "uniformity", min_rows=2))
    n = z.shape[-2]
    i, j = torch.triu_indices(n, n, offset=1, device=z.device)
    sq = (z[..., i, :] - z[..., j, :]).pow(2).sum(dim=-1)
    return torch.logsumexp(-t * sq, dim=-1) - math.log(i.numel())


def alignment(x: torch.Tensor, y: torch.Tensor, alpha: float = 2.0) -> torch.Tensor:
    """Alignment loss of paired batches: mean_i ‖ẑᵢ − ẑ'ᵢ‖^α of the normalized rows.

    Same formula as :func:`reprdiag.metrics.alignment` at α = 2. Range [0, 2^α]; lower = the
    views agree. Complexity O(N·d). Reference: Wang & Isola, ICML 2020 (``lalign``).

    >>> float(alignment(torch.eye(2), 3 * torch.eye(2)))
    0.0
    """
    z, w = normalize_rows(_batch(x, "alignment")), normalize_rows(_batch(y, "alignment"))
    if z.shape != w.shape:
        raise ValueError(f"alignment: paired batches differ in shape {tuple(z.shape)} vs "
                         f"{tuple(w.shape)}")
    return (z - w).norm(dim=-1).pow(alpha).mean(dim=-1)


def er_entropy(x: torch.Tensor, kappa: float = 10.0, estimator: str = "plugin",
               compat: str = "exact") -> torch.Tensor:
    r"""ER entropy of a batch, differentiable (vMF kernel-density entropy of the rows).

    Formula: e_i = x_i/‖x_i‖, ℓ_i = −logsumexp_j(κ e_iᵀe_j) + ln N − ln C_d(κ) (j over all rows,
    i included), then the plug-in Σ softmax(−ℓ)_i ℓ_i (default) or Joe's mean_i ℓ_i. The
    constant and the reduction are those of :func:`reprdiag.metrics.pairwise.er_entropy`
    (``er_constant``, ``er_reduce``, with the exact log-Bessel); the metric itself detaches
    and works blockwise over a large sample, this one holds the whole N×N logit matrix and
    differentiates through ``logsumexp``.

    Range: at most about ln |S^{d−1}|; higher = more spread out. Complexity: O(N²·d) time,
    O(N²) memory. Reference: Rodríguez-Gálvez et al., "The Role of Entropy and Reconstruction
    in Multi-View Self-Supervised Learning", ICML 2023.

    >>> x = torch.eye(4, dtype=torch.float64)
    >>> round(float(er_entropy(x)), 10)
    0.6495310445
    """
    e = normalize_rows(_batch(x, "er_entropy"))
    n, d = e.shape[-2:]
    const = er_constant(d, n, kappa, compat)
    ell = const - torch.logsumexp(kappa * (e @ e.mT), dim=-1)
    return er_reduce(ell, estimator)


# ---------------------------------------------------------------------------------------------
# Modules
# ---------------------------------------------------------------------------------------------


class _Regularizer(nn.Module):
    """``forward(x) = sign · coef · fn(x, **options)``: the term to add to the task loss."""

    sign = 1.0

    def __init__(self, coef: float = 1.0, **options: object):
        super().__init__()
        self.coef = float(coef)
        self.options = options

    def value(self, x: torch.Tensor) -> torch.Tensor:
        """The unsigned quantity (the metric's value on this batch)."""
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (self.sign * self.coef) * self.value(x)

    def extra_repr(self) -> str:
        return ", ".join([f"coef={self.coef}", *(f"{k}={v!r}" for k, v in self.options.items())])


class VNELoss(_Regularizer):
    """−coef · :func:`vne` (x): with coef > 0 training raises the batch's von Neumann entropy
    (Kim et al.'s VNE⁺), with coef < 0 it lowers it (VNE⁻). Option: ``floor``.

    >>> VNELoss(coef=0.5)
    VNELoss(coef=0.5)
    """

    sign = -1.0

    def value(self, x: torch.Tensor) -> torch.Tensor:
        return vne(x, **self.options)


class VarianceLoss(_Regularizer):
    """coef · :func:`vicreg_std` (x), VICReg's variance hinge (their default coef is 25).

    >>> float(VarianceLoss(coef=25.0)(torch.tensor([[2.0, 2.0], [-2.0, -2.0]])))
    0.0
    """

    def value(self, x: torch.Tensor) -> torch.Tensor:
        return vicreg_std(x, **self.options)


class CovarianceLoss(_Regularizer):
    """coef · :func:`cov_offdiag` (x), VICReg's covariance term (their default coef is 1).

    >>> float(CovarianceLoss()(torch.cat([torch.eye(3), -torch.eye(3)])))
    0.0
    """

    def value(self, x: torch.Tensor) -> torch.Tensor:
        return cov_offdiag(x, **self.options)


class EREntropyLoss(_Regularizer):
    """−coef · :func:`er_entropy` (x): coef > 0 spreads the rows over the sphere. Options:
    ``kappa``, ``estimator``, ``compat``.

    >>> EREntropyLoss(coef=0.1, kappa=10.0)
    EREntropyLoss(coef=0.1, kappa=10.0)
    """

    sign = -1.0

    def value(self, x: torch.Tensor) -> torch.Tensor:
        return er_entropy(x, **self.options)
