"""Symmetric eigendecomposition with a backward that survives repeated eigenvalues, and the
matrix functions built on it (square root, inverse square root, spectral maps): the linear
algebra of :mod:`reprdiag.losses`, usable on its own.

>>> a = torch.diag(torch.tensor([4.0, 9.0], dtype=torch.float64))
>>> sqrtm(a, eps=0).diagonal().tolist()
[2.0, 3.0]
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch.autograd.function import once_differentiable

__all__ = ["EIG_METHODS", "SymEig", "inv_sqrtm", "spectral_map", "sqrtm", "sym_eig"]

#: ``method`` values of :func:`sym_eig` (first = default).
EIG_METHODS: tuple[str, ...] = ("taylor", "exact")
_F64 = torch.float64


# ---------------------------------------------------------------------------------------------
# Eigendecomposition with a Taylor (power-iteration-equivalent) backward
# ---------------------------------------------------------------------------------------------


def _inverse_gaps(vals: torch.Tensor, method: str, order: int) -> torch.Tensor:
    """F with F_ij ≈ 1/(λ_j − λ_i) for i ≠ j and F_ii = 0, for ascending eigenvalues.

    ``exact``: the reciprocal itself (±inf at a tie). ``taylor``: for the larger eigenvalue
    b and the smaller s of a pair, 1/(b − s) ≈ (1/b) Σ_{k=0}^{K} (s/b)^k (summed by Horner),
    with the sign of λ_j − λ_i given by the index order (eigh sorts ascending), so F stays
    antisymmetric even at ties. b is floored at max(|λ|)·d·eps (at least √tiny) so a zero
    eigenvalue gives a large finite factor; negative eigenvalues (rounding of a PSD matrix)
    count as 0 in the series.
    """
    d = vals.shape[-1]
    eye = torch.eye(d, dtype=torch.bool, device=vals.device)
    if method == "exact":
        diff = vals.unsqueeze(-2) - vals.unsqueeze(-1)  # [i, j] = λ_j − λ_i
        return torch.where(eye, torch.zeros_like(diff), 1.0 / diff)
    finfo = torch.finfo(vals.dtype)
    scale = vals.abs().amax(dim=-1, keepdim=True).unsqueeze(-1)
    floor = (scale * d * finfo.eps).clamp_min(finfo.tiny ** 0.5)
    pos = vals.clamp_min(0.0)
    big = torch.maximum(pos.unsqueeze(-1), pos.unsqueeze(-2)).clamp_min(floor)
    small = torch.minimum(pos.unsqueeze(-1), pos.unsqueeze(-2))
    ratio = (small / big).clamp_max(1.0)
    series = torch.ones_like(ratio)
    for _ in range(order):
        series = 1.0 + ratio * series
    upper = torch.triu(torch.ones(d, d, dtype=vals.dtype, device=vals.device), diagonal=1)
    sign = upper - upper.mT  # +1 above the diagonal (λ_j ≥ λ_i), −1 below, 0 on it
    return sign * series / big


class SymEig(torch.autograd.Function):
    """Symmetric eigendecomposition A = V diag(λ) Vᵀ: exact float64 forward, chosen backward.

    Forward: ``torch.linalg.eigh`` in float64 (ascending λ; outputs in A's dtype). Backward
    (for symmetric A): ∂L/∂A = sym(V (diag(∂L/∂λ) + F ∘ (Vᵀ ∂L/∂V)) Vᵀ) with F_ij = 1/(λ_j − λ_i)
    (``"exact"``, as ``torch.linalg.eigh``: inf/NaN at repeated eigenvalues) or its truncated
    Taylor series (``"taylor"``, see :func:`sym_eig`). Call it through :func:`sym_eig`.
    """

    @staticmethod
    def forward(ctx: torch.autograd.function.FunctionCtx, a: torch.Tensor, method: str,
                order: int) -> tuple[torch.Tensor, torch.Tensor]:
        vals, vecs = torch.linalg.eigh(a.to(_F64))
        ctx.save_for_backward(vals, vecs)
        ctx.method, ctx.order, ctx.dtype = method, order, a.dtype
        return vals.to(a.dtype), vecs.to(a.dtype)

    @staticmethod
    @once_differentiable
    def backward(ctx: torch.autograd.function.FunctionCtx, g_vals: torch.Tensor,
                 g_vecs: torch.Tensor) -> tuple[torch.Tensor, None, None]:
        vals, vecs = ctx.saved_tensors
        f = _inverse_gaps(vals, ctx.method, ctx.order)
        inner = f * (vecs.mT @ g_vecs.to(_F64)) + torch.diag_embed(g_vals.to(_F64))
        ga = vecs @ inner @ vecs.mT
        return ((ga + ga.mT) / 2).to(ctx.dtype), None, None


def sym_eig(a: torch.Tensor, method: str = "taylor",
            order: int = 100) -> tuple[torch.Tensor, torch.Tensor]:
    r"""Eigenvalues (ascending) and eigenvectors (columns) of symmetric (..., d, d) matrices,
    with a backward that survives repeated and close eigenvalues.

    Forward: exact, ``torch.linalg.eigh`` in float64 (the lower triangle is read), results in
    the input's dtype. Backward: the eigenvector gradient carries K_ij = 1/(λᵢ − λⱼ), which is
    infinite at repeated eigenvalues and huge at close ones. With ``method="taylor"`` (default)
    it is replaced, for λᵢ > λⱼ, by the truncated series (1/λᵢ) Σ_{k=0}^{K} (λⱼ/λᵢ)^k (sign
    flipped when λᵢ < λⱼ; K = ``order``); this is bounded by (K+1)/λᵢ, equals 1/(λᵢ − λⱼ) up
    to a relative error (λⱼ/λᵢ)^{K+1}, and is exactly the gradient of K power-iteration steps
    (Wang et al. 2019, 2022). Meant for PSD matrices (covariances): negative eigenvalues are
    treated as 0 in the series and a zero largest eigenvalue is floored at d·eps·max|λ|.
    ``method="exact"`` keeps 1/(λᵢ − λⱼ) (torch's own behaviour: NaN at ties).

    Complexity: O(d³) forward (one float64 ``eigh``) and backward (three products), plus
    O(K·d²) for the series. Reference: Y. Song, N. Sebe, W. Wang, "Why Approximate Matrix
    Square Root Outperforms Accurate SVD in Global Covariance Pooling?", ICCV 2021 (SVD-Taylor);
    W. Wang, Z. Dang, Y. Hu, P. Fua, M. Salzmann, "Robust Differentiable SVD", TPAMI 2022
    (Taylor = power-iteration gradient); "Backpropagation-Friendly Eigendecomposition",
    NeurIPS 2019.

    Args:
        a: (..., d, d) symmetric matrices.
        method: "taylor" or "exact".
        order: K, the highest power kept in the series (≥ 0).

    >>> a = torch.eye(3, dtype=torch.float64).requires_grad_()  # a triple eigenvalue
    >>> vals, vecs = sym_eig(a)
    >>> (vecs[:, 0] ** 4).sum().backward()
    >>> bool(torch.isfinite(a.grad).all())
    True
    """
    if method not in EIG_METHODS:
        raise ValueError(f"sym_eig: method must be 'taylor' or 'exact', got {method!r}")
    if int(order) < 0:
        raise ValueError(f"sym_eig: order must be >= 0, got {order}")
    if a.ndim < 2 or a.shape[-1] != a.shape[-2]:
        raise ValueError(f"sym_eig: expected (..., d, d) matrices, got {tuple(a.shape)}")
    return SymEig.apply(a, method, int(order))


def spectral_map(a: torch.Tensor, fn: Callable[[torch.Tensor], torch.Tensor],
                 method: str = "taylor", order: int = 100) -> torch.Tensor:
    """V diag(fn(λ)) Vᵀ for symmetric (..., d, d) ``a`` (a matrix function), via :func:`sym_eig`.

    Spectral clipping is ``spectral_map(c, lambda l: l.clamp(lo, hi))``. Complexity O(d³).

    >>> c = torch.diag(torch.tensor([4.0, 0.25], dtype=torch.float64))
    >>> spectral_map(c, lambda l: l.clamp(0.5, 2.0)).diagonal().tolist()
    [2.0, 0.5]
    """
    vals, vecs = sym_eig(a, method, order)
    return (vecs * fn(vals).unsqueeze(-2)) @ vecs.mT


def sqrtm(a: torch.Tensor, eps: float = 1e-12, method: str = "taylor",
          order: int = 100) -> torch.Tensor:
    """Principal square root V diag(√(max(λ, 0) + eps)) Vᵀ of PSD (..., d, d) matrices.

    ``eps`` keeps the derivative of √λ finite at λ = 0. Complexity O(d³).

    >>> sqrtm(torch.diag(torch.tensor([4.0, 9.0], dtype=torch.float64)), eps=0).diagonal().tolist()
    [2.0, 3.0]
    """
    return spectral_map(a, lambda v: (v.clamp_min(0.0) + eps).sqrt(), method, order)


def inv_sqrtm(a: torch.Tensor, eps: float = 1e-5, method: str = "taylor",
              order: int = 100) -> torch.Tensor:
    """Inverse square root V diag((max(λ, 0) + eps)^(−1/2)) Vᵀ: the ZCA whitening matrix of a
    covariance (``(x − μ) @ inv_sqrtm(C)`` has covariance ≈ I). Complexity O(d³).

    >>> c = torch.diag(torch.tensor([4.0, 0.25], dtype=torch.float64))
    >>> inv_sqrtm(c, eps=0).diagonal().tolist()
    [0.5, 2.0]
    """
    return spectral_map(a, lambda v: (v.clamp_min(0.0) + eps).rsqrt(), method, order)
