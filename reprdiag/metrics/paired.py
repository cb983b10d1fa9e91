"""Paired-view metrics: two row-aligned sets X, X' (two augmentations, two modalities, teacher
and student), from statistics streamed in one pass over both.

:class:`~reprdiag.stats.cross.PairMoments` holds the cross-moments of the two views
(:class:`~reprdiag.stats.cross.CrossMoments`: Σy, Σyyᵀ over the stacked columns, float64) and
Σᵢ‖ẑᵢ − ẑ'ᵢ‖² of the row-normalized views. Every metric is then O(d²) from them; N is unbounded.
"""

from __future__ import annotations

import torch

from reprdiag.errors import InputError, UsageError
from reprdiag.metrics.cka import linear_cka
from reprdiag.metrics.registry import metric
from reprdiag.statistics import Statistics
from reprdiag.stats.cross import PairMoments


def _same_width(p: PairMoments, what: str) -> None:
    if p.d != p.d_pair:
        raise InputError(f"{what} needs views of one width, got d = {p.d} and {p.d_pair}",
                         hint="pair embeddings of the same dimension")


def alignment(p: PairMoments) -> float:
    """Alignment loss: mean_i ‖ẑᵢ − ẑ'ᵢ‖² of the row-normalized views (α = 2).

    Range [0, 4]; 0 when every pair points the same way; lower is better aligned.
    Complexity O(N·d) in the pass. Citation: Wang & Isola, ICML 2020 (L_align, α = 2).

    >>> p = PairMoments(2, 2)
    >>> p.update(torch.tensor([[1., 0.], [0., 2.]]), torch.tensor([[2., 0.], [0., 1.]]))
    >>> p.n, round(alignment(p), 12)
    (2, 0.0)
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
    :func:`reprdiag.metrics.cka.linear_cka`. Range [0, 1]; 1 for views equal up to an
    orthogonal map and scale."""
    return float(linear_cka(p.cross)[0, 1])


# -- registered metrics: computed when ``--pair`` streamed a second view ----------------------

def paired(x: torch.Tensor, x_pair: torch.Tensor) -> Statistics:
    """:class:`Statistics` of in-memory rows and their paired view (float64), for calling the
    paired-view metrics from a notebook: ``M.alignment(paired(x, x2))``."""
    x = torch.as_tensor(x).to(torch.float64)
    stats = Statistics.from_tensor(x)
    moments = PairMoments(x.shape[1], int(x_pair.shape[1]))
    moments.update(x, torch.as_tensor(x_pair))
    stats.extras["pair"] = moments
    return stats


def _example() -> Statistics:
    """A view and a copy of it rotated a little (for the doctests)."""
    x = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [2.0, -1.0]], dtype=torch.float64)
    angle = torch.tensor(0.1, dtype=torch.float64)
    rot = torch.stack([torch.stack([angle.cos(), -angle.sin()]),
                       torch.stack([angle.sin(), angle.cos()])])
    return paired(x, x @ rot)

def _pair(stats: Statistics) -> PairMoments:
    pair = stats.extras.get("pair")
    if pair is None:
        raise UsageError("paired-view metrics need a second view", hint="pass --pair KEY or "
                         "PATH[:KEY]")
    return pair


_CITE_WI = "Wang & Isola, ICML 2020"
_CITE_BT = "Zbontar et al., ICML 2021"


@metric("alignment", summary="mean ‖ẑ − ẑ'‖² of the two views' normalized rows (α = 2)",
        range="[0, 4]", direction="lower", citation=_CITE_WI, bounds=lambda n, d: (0.0, 4.0),
        needs="pair")
def alignment_metric(stats: Statistics) -> float:
    """Alignment of the paired views; see :func:`alignment`. Complexity O(N·d) in the pass.

    >>> round(alignment_metric(_example()), 6)  # every pair 0.1 rad apart: 2 − 2 cos 0.1
    0.009992
    """
    return alignment(_pair(stats))


@metric("barlow_ondiag", summary="mean_i (1 − C_ii)², C the views' cross-correlation",
        range="[0, 4]", direction="lower", citation=_CITE_BT, bounds=lambda n, d: (0.0, 4.0),
        needs="pair")
def barlow_ondiag_metric(stats: Statistics) -> float:
    """Barlow Twins' invariance term; see :func:`barlow_ondiag`. Complexity O(d²).

    >>> barlow_ondiag_metric(_example()) < 0.01
    True
    """
    return barlow_ondiag(_pair(stats))


@metric("barlow_offdiag", summary="Σ_{i≠j} C_ij² / d, C the views' cross-correlation",
        range="[0, d − 1]", direction="lower", citation=_CITE_BT,
        bounds=lambda n, d: (0.0, max(d - 1.0, 0.0) * 1.0001 + 1e-12), needs="pair")
def barlow_offdiag_metric(stats: Statistics) -> float:
    """Barlow Twins' redundancy term; see :func:`barlow_offdiag`. Complexity O(d²).

    >>> barlow_offdiag_metric(_example()) > 0
    True
    """
    return barlow_offdiag(_pair(stats))


@metric("pair_cka", summary="linear CKA between the two views", range="[0, 1]",
        direction="higher", citation="Kornblith et al., ICML 2019",
        bounds=lambda n, d: (0.0, 1.0 + 1e-12), needs="pair")
def pair_cka_metric(stats: Statistics) -> float:
    """Linear CKA of the paired views; see :func:`pair_cka`. Complexity O((d + d')²).

    >>> round(pair_cka_metric(_example()), 12)  # a rotation: CKA is exactly 1
    1.0
    """
    return pair_cka(_pair(stats))
