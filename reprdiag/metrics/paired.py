"""Paired-view metrics: two row-aligned sets X, X' (two augmentations, two modalities, teacher
and student), from statistics streamed in one pass over both.

:class:`PairMoments` holds the cross-moments of the two views (:class:`~reprdiag.similarity.
CrossMoments`: Σy, Σyyᵀ over the stacked columns, float64) and Σᵢ‖ẑᵢ − ẑ'ᵢ‖² of the
row-normalized views. Every metric is then O(d²) from them; N is unbounded.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from reprdiag.crossmoments import CrossMoments
from reprdiag.errors import InputError
from reprdiag.metrics.cka import linear_cka
from reprdiag.stats import ZERO_NORM


@dataclass
class PairMoments:
    """Streaming statistics of two row-aligned views (d and d' columns).

    >>> p = PairMoments(2, 2)
    >>> p.update(torch.tensor([[1., 0.], [0., 2.]]), torch.tensor([[2., 0.], [0., 1.]]))
    >>> p.n, round(alignment(p), 12)
    (2, 0.0)
    """

    d: int
    d_pair: int
    precision: str = "float64"
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    cross: CrossMoments = field(init=False)
    sq_distance: float = 0.0

    def __post_init__(self) -> None:
        self.cross = CrossMoments([self.d, self.d_pair], precision=self.precision,
                                  device=self.device)

    @property
    def n(self) -> int:
        return self.cross.n

    def update(self, rows: torch.Tensor, pair: torch.Tensor) -> None:
        """Add the same rows of both views. Cost O(n·(d + d')²)."""
        if rows.shape[0] != pair.shape[0]:
            raise InputError(f"a chunk has {rows.shape[0]} rows and its pair {pair.shape[0]}",
                             hint="the two views must be row-aligned")
        self.cross.update([rows, pair])
        z = _unit(rows.to(self.device, torch.float64))
        w = _unit(pair.to(self.device, torch.float64))
        if z.shape[1] == w.shape[1]:
            self.sq_distance += float(((z - w) ** 2).sum())


def _unit(x: torch.Tensor) -> torch.Tensor:
    return x / torch.linalg.vector_norm(x, dim=1, keepdim=True).clamp_min(ZERO_NORM)


def _same_width(p: PairMoments, what: str) -> None:
    if p.d != p.d_pair:
        raise InputError(f"{what} needs views of one width, got d = {p.d} and {p.d_pair}",
                         hint="pair embeddings of the same dimension")


def alignment(p: PairMoments) -> float:
    """Alignment loss: mean_i ‖ẑᵢ − ẑ'ᵢ‖² of the row-normalized views (α = 2).

    Range [0, 4]; 0 when every pair points the same way; lower is better aligned.
    Complexity O(N·d) in the pass. Citation: Wang & Isola, ICML 2020 (L_align, α = 2).
    """
    _same_width(p, "alignment")
    return p.sq_distance / p.n


def cross_correlation(p: PairMoments) -> torch.Tensor:
    """The d×d' Pearson cross-correlation of the views' columns (Barlow Twins' C).

    C_ij = cov(x_i, x'_j) / (std(x_i) std(x'_j)); a column without variance correlates 0
    (the reference code's batch norm adds ε = 1e-5 to the variance instead, which makes C
    depend on the data's scale).
    """
    m = p.cross
    mu = m.s / m.n
    cov = m.S - m.n * torch.outer(mu, mu)
    a, b = m.slices
    std = cov.diagonal().clamp_min(0).sqrt()
    scale = torch.outer(std[a], std[b])
    return torch.where(scale > 0, cov[a, b] / scale.clamp_min(1e-300), torch.zeros_like(scale))


def barlow_ondiag(p: PairMoments) -> float:
    """Barlow Twins invariance term, per dimension: mean_i (1 − C_ii)².

    Range [0, 4]; 0 when each dimension of one view is perfectly correlated with the same
    dimension of the other; lower is better. Complexity O(d²) from the moments.
    Citation: Zbontar et al., "Barlow Twins", ICML 2021 (the on-diagonal term, averaged).
    """
    _same_width(p, "barlow_ondiag")
    return float(((1 - cross_correlation(p).diagonal()) ** 2).mean())


def barlow_offdiag(p: PairMoments) -> float:
    """Barlow Twins redundancy term, per dimension: Σ_{i≠j} C_ij² / d.

    Range [0, d − 1]; lower = less redundancy between dimensions. Complexity O(d²).
    Citation: Zbontar et al., ICML 2021 (the off-diagonal term, divided by d as VICReg's
    covariance term is).
    """
    _same_width(p, "barlow_offdiag")
    c = cross_correlation(p)
    return float(((c**2).sum() - (c.diagonal() ** 2).sum()) / p.d)


def pair_cka(p: PairMoments) -> float:
    """Linear CKA between the two views (Kornblith et al., ICML 2019); see
    :func:`reprdiag.similarity.linear_cka`. Range [0, 1]; 1 for views equal up to an
    orthogonal map and scale."""
    return float(linear_cka(p.cross)[0, 1])
