"""Linear CKA (Kornblith et al., ICML 2019) and its debiased form, from streamed cross-moments.

CKA(X, Y) = ‖YᵀX‖²_F / (‖XᵀX‖_F ‖YᵀY‖_F) on centred, row-aligned X and Y. The debiased variant
(Nguyen, Raghu & Kornblith, ICLR 2021) uses the unbiased HSIC of Song et al. (JMLR 2012) in
Kornblith's feature-space form; both come from one :class:`~reprdiag.stats.cross.CrossMoments`.
"""

from __future__ import annotations

import numpy as np
import torch

from reprdiag.errors import UsageError
from reprdiag.stats.cross import CrossMoments


def _centred(m: CrossMoments) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """C = Σ(y−μ)(y−μ)ᵀ, μ (shifted coordinates) and m = ‖μₐ‖² per input."""
    mu = m.s / m.n
    cross = m.S - m.n * torch.outer(mu, mu)
    norms = torch.stack([mu[sl] @ mu[sl] for sl in m.slices])
    return cross, mu, norms


def _row_norm_products(m: CrossMoments, mu: torch.Tensor, norms: torch.Tensor,
                       traces: torch.Tensor) -> torch.Tensor:
    """Σᵢ ‖zₐᵢ‖²‖z_bᵢ‖² for centred rows z = y − μ, for every pair (a, b), from the moments.

    Expanding ‖zᵢ‖² = qᵢ − 2yᵢᵀμ + ‖μ‖² gives
    W_ab − 2μ_b·U_ab − 2μₐ·U_ba + 4μₐᵀS_abμ_b + m_b tr Sₐₐ + mₐ tr S_bb − 3n mₐm_b.
    """
    L = len(m.slices)
    out = torch.empty(L, L, dtype=torch.float64, device=m.S.device)
    for a, sa in enumerate(m.slices):
        for b, sb in enumerate(m.slices):
            out[a, b] = (m.W[a, b] - 2 * mu[sb] @ m.U[a, sb] - 2 * mu[sa] @ m.U[b, sa]
                         + 4 * mu[sa] @ m.S[sa, sb] @ mu[sb] + norms[b] * traces[a]
                         + norms[a] * traces[b] - 3 * m.n * norms[a] * norms[b])
    return out


def hsic_matrix(m: CrossMoments, debiased: bool = False) -> torch.Tensor:
    """The L×L matrix of (scaled) linear HSIC values between inputs.

    Biased: ‖C_ab‖²_F with C_ab the centred cross-moment block. Debiased (Song et al. 2012 in the
    feature-space form of Kornblith's reference code):
    ‖C_ab‖²_F − n/(n−2) Σᵢ‖zₐᵢ‖²‖z_bᵢ‖² + tr Cₐₐ tr C_bb / ((n−1)(n−2)), which needs n > 3.
    """
    cross, mu, norms = _centred(m)
    L = len(m.slices)
    hsic = torch.empty(L, L, dtype=torch.float64, device=cross.device)
    for a, sa in enumerate(m.slices):
        for b, sb in enumerate(m.slices):
            hsic[a, b] = (cross[sa, sb] ** 2).sum()
    if not debiased:
        return hsic
    n = m.n
    if n <= 3:
        raise UsageError(f"debiased CKA needs at least 4 rows, got {n}",
                         hint="use the biased estimate (drop --debiased)")
    centred_traces = torch.stack([cross[sl, sl].trace() for sl in m.slices])
    raw_traces = torch.stack([m.S[sl, sl].trace() for sl in m.slices])
    rows = _row_norm_products(m, mu, norms, raw_traces)
    return hsic - n / (n - 2) * rows + torch.outer(centred_traces, centred_traces) / (
        (n - 1) * (n - 2))


def linear_cka(m: CrossMoments, debiased: bool = False) -> np.ndarray:
    """Linear CKA between every pair of inputs: HSIC_ab / √(HSIC_aa · HSIC_bb).

    Range [0, 1] for the biased estimate (the debiased one can dip slightly below 0 for
    unrelated inputs); 1 on the diagonal. Complexity O(D²) from the moments. An input with no
    variance (every row equal) has no defined CKA: NaN in its row and column.

    >>> x = torch.randn(500, 8, dtype=torch.float64)
    >>> m = CrossMoments([8, 8])
    >>> m.update([x, 3 * x + 1])
    >>> np.round(linear_cka(m), 12).tolist()
    [[1.0, 1.0], [1.0, 1.0]]
    """
    hsic = hsic_matrix(m, debiased)
    diag = hsic.diagonal().clamp_min(0)
    scale = torch.sqrt(torch.outer(diag, diag))
    out = torch.where(scale > 0, hsic / scale.clamp_min(torch.finfo(torch.float64).tiny),
                      torch.full_like(hsic, float("nan")))
    return out.cpu().numpy()
