"""Rank metrics: effective rank, RankMe, participation ratio, stable and numerical rank, α-ReQ."""

from __future__ import annotations

import math

import torch

from reprdiag.metrics.entropy import spectral_entropy
from reprdiag.metrics.registry import MetricValue, metric
from reprdiag.statistics import Statistics

RANKME_EPS = 1e-7
ALPHA_RANKS = (11, 100)


def _rank_bounds(n: int, d: int) -> tuple[float, float]:
    return (1.0, float(min(n, d)))


@metric("effective_rank", spectral=True,
        summary="Roy–Vetterli exp(entropy) of √λ/Σ√λ, centred data",
        range="[1, rank]", direction="higher", citation="Roy & Vetterli, EUSIPCO 2007",
        bounds=_rank_bounds)
def effective_rank(stats: Statistics) -> MetricValue:
    """Effective rank of the centred data.

    Formula: s_k = √λ_k (singular values of X−μ up to a constant), p_k = s_k/Σs,
    erank = exp(−Σ p_k ln p_k). Range [1, rank(C)]; higher is healthier. Roy & Vetterli's
    definition is on singular values: the exp-entropy of the eigenvalues λ (p_k = λ_k/Σλ), also
    called "effective rank" elsewhere, is a smaller number (145.31 vs 286.25 on the MiniLM
    sample).
    Complexity: O(N·d²) moments (shared) + O(d³) eigvalsh.
    Citation: Roy & Vetterli, "The effective rank: a measure of effective dimensionality",
    EUSIPCO 2007.

    >>> x = torch.cat([torch.eye(3), -torch.eye(3)]).double()
    >>> round(effective_rank(x), 9)
    3.0
    """
    s = stats.cov_eigenvalues.sqrt()
    if s.sum() <= 0:
        return 1.0
    return torch.exp(spectral_entropy(s / s.sum()))


@metric("rankme", spectral=True,
        summary="exp entropy of σ/Σσ + 1e-7, raw (uncentred) X",
        range="[1, min(N,d)]", direction="higher", citation="Garrido et al., ICML 2023, eq. 1",
        bounds=lambda n, d: (1.0 - 2 * RANKME_EPS, min(n, d) * 1.0001))
def rankme(stats: Statistics) -> MetricValue:
    """RankMe: smooth rank of the raw embeddings.

    Formula: σ_k the singular values of X (no centring), p_k = σ_k/Σσ + 1e-7,
    RankMe = exp(−Σ p_k ln p_k) over min(N, d) values. Range about [1, min(N, d)] (the
    +1e-7 can take it to 1 − 1e-7 when min(N, d) = 1);
    higher is healthier. Variants in circulation differ: stable-pretraining's ε = 1e-5 gives
    +2–3%; reptrix applies the formula to covariance eigenvalues λ (squared singular values of
    the centred data), a different quantity (−48% on the MiniLM sample).
    Complexity: O(N·d²) moments (shared) + O(d³) eigvalsh of XᵀX.
    Citation: Garrido, Balestriero, Najman, LeCun, "RankMe: Assessing the downstream
    performance of pretrained self-supervised representations by their rank", ICML 2023.

    >>> round(rankme(torch.eye(5)), 4)
    5.0
    """
    sigma = stats.spectra.singular_values
    if sigma.sum() <= 0:
        return 1.0
    p = sigma / sigma.sum() + RANKME_EPS
    return torch.exp(-(p * torch.log(p)).sum())


@metric("participation_ratio", spectral=True,
        summary="(Σλ)²/Σλ² of the covariance", range="[1, rank]",
        direction="higher", citation="Gao et al. 2017 (bioRxiv 214262)", bounds=_rank_bounds)
def participation_ratio(stats: Statistics) -> MetricValue:
    """Participation ratio of the covariance spectrum.

    Formula: PR = (Σλ)²/Σλ². Range [1, rank(C)]; d for an isotropic covariance. Higher is
    healthier. Complexity: O(d³) eigvalsh on the shared moments.
    Citation: Gao et al., "A theory of multineuronal dimensionality, dynamics and
    measurement", 2017.

    >>> round(participation_ratio(torch.cat([torch.eye(4), -torch.eye(4)])), 9)
    4.0
    """
    lam = stats.cov_eigenvalues
    total_sq = (lam**2).sum()
    return lam.sum() ** 2 / total_sq if total_sq > 0 else 1.0


@metric("stable_rank", spectral=True,
        summary="Σλ/λ₁ of the covariance", range="[1, rank]",
        direction="higher", citation="Rudelson & Vershynin, J. ACM 2007", bounds=_rank_bounds)
def stable_rank(stats: Statistics) -> MetricValue:
    """Stable rank of the covariance: Σλ/λ₁, in [1, rank(C)]; higher is healthier.

    Complexity: O(d³) eigvalsh. Citation: Rudelson & Vershynin, "Sampling from large
    matrices: an approach through geometric functional analysis", J. ACM 2007.

    >>> round(stable_rank(torch.cat([torch.eye(4), -torch.eye(4)])), 9)
    4.0
    """
    lam = stats.cov_eigenvalues
    return lam.sum() / lam[0] if lam[0] > 0 else 1.0


@metric("numerical_rank", spectral=True,
        summary="#{λ_k > F}, F the error floor of the precision used (not N)",
        range="[0, min(N,d)]", direction="higher",
        citation="Golub & Van Loan, Matrix Computations",
        bounds=lambda n, d: (0.0, float(min(n, d))), discrete=True)
def numerical_rank(stats: Statistics, rank_tol: float | None = None) -> float:
    """Number of covariance eigenvalues the computation resolves from zero.

    Formula: #{λ_k > F}, F the covariance spectrum's error floor: the eigensolver's bound
    d·eps(float64)·λ₁ plus the rounding of the streamed products, u·c(n)·trace/(N−1), u the
    unit roundoff of the dtype the products were taken in and n the longest chunk (see
    :mod:`reprdiag.precision`). F/λ₁ depends on the precision and the chunking, not on N: the
    same distribution has the same numerical rank at any N (numpy's ``matrix_rank`` tolerance
    max(N, d)·eps is for singular values of the N×d matrix, and applied to eigenvalues it
    makes the rank shrink as N grows). ``rank_tol`` replaces F by ``rank_tol``·λ₁.
    Range [0, min(N, d)]; an integer; higher is healthier. Complexity: O(d³) eigvalsh.
    Citation: the numerical rank of Golub & Van Loan, "Matrix Computations" (SVD chapter).

    >>> numerical_rank(torch.randn(50, 8) @ torch.randn(8, 20))
    8.0
    """
    spectrum = stats.spectra.covariance
    lam = spectrum.values
    if lam[0] <= 0:
        return 0.0
    floor = rank_tol * lam[0] if rank_tol is not None else spectrum.floor
    return float((lam > floor).sum())


def power_law_fit(lam: torch.Tensor, ranks: tuple[int, int] = ALPHA_RANKS
                  ) -> tuple[float, float]:
    """Weighted least-squares fit of ln(λ_i/Σλ) = −α ln i + c over ranks ``lo…hi``.

    Weights 1/i; ranks clipped to the positive eigenvalues that exist. Returns (α, R²),
    R² being the weighted coefficient of determination. NaN when fewer than two ranks remain.

    >>> lam = torch.arange(1, 201, dtype=torch.float64) ** -1.5
    >>> [round(v, 9) for v in power_law_fit(lam)]
    [1.5, 1.0]
    """
    return tuple(float(v.detach()) if isinstance(v, torch.Tensor) else v
                 for v in _power_law_fit(lam, ranks))


def _power_law_fit(lam: torch.Tensor, ranks: tuple[int, int]
                   ) -> tuple[MetricValue, MetricValue]:
    """:func:`power_law_fit` as 0-d tensors that keep the graph back to ``lam``."""
    positive = int((lam > 0).sum())
    lo, hi = ranks[0], min(ranks[1], positive)
    if hi - lo + 1 < 2:
        return math.nan, math.nan
    i = torch.arange(lo, hi + 1, dtype=torch.float64)
    y = torch.log(lam[lo - 1: hi] / lam.sum())
    x = torch.log(i)
    w = 1.0 / i
    xm, ym = (w * x).sum() / w.sum(), (w * y).sum() / w.sum()
    sxx = (w * (x - xm) ** 2).sum()
    slope = (w * (x - xm) * (y - ym)).sum() / sxx
    resid = y - (ym + slope * (x - xm))
    ss_tot = (w * (y - ym) ** 2).sum()
    r2 = 1.0 - (w * resid**2).sum() / ss_tot if ss_tot > 0 else math.nan
    return -slope, r2


def _alpha_ranks(stats: Statistics) -> tuple[int, int]:
    # Agrawal et al. fit ranks 11…100; fall back to all ranks when fewer than two exist there.
    positive = int((stats.cov_eigenvalues > 0).sum())
    return ALPHA_RANKS if positive >= ALPHA_RANKS[0] + 1 else (1, ALPHA_RANKS[1])


@metric("alpha_req", spectral=True,
        summary="power-law decay α of λ_i/Σλ, weighted fit over ranks 11…100",
        range="[0, ∞)", direction="neutral",
        citation="Agrawal et al., NeurIPS 2022 (α-ReQ)", bounds=lambda n, d: (-math.inf, math.inf))
def alpha_req(stats: Statistics, alpha_ranks: tuple[int, int] | None = None
              ) -> MetricValue:
    """α-ReQ: the decay coefficient of the covariance eigenspectrum.

    Formula: least squares of ln(λ_i/Σλ) = −α ln i + c with weights 1/i over ranks
    i = 11…100 (``alpha_ranks`` overrides; clipped to the positive eigenvalues; when fewer
    than 12 exist, all ranks are fitted). Typical range [0, ∞): small α is a flat
    (high-dimensional) spectrum, large α a fast-decaying one; Agrawal et al. find α near 1
    best, so direction is neutral. α depends on the fit range (MiniLM sample: 0.830 here,
    1.754 for an unweighted fit over ranks 12…381): compare values fitted alike.
    Complexity: O(d³) eigvalsh + O(d) fit.
    Citation: Agrawal et al., "α-ReQ: Assessing Representation Quality in Self-Supervised
    Learning by measuring eigenspectrum decay", NeurIPS 2022.

    >>> x = torch.randn(4000, 30, dtype=torch.float64) * torch.arange(1, 31) ** -0.5
    >>> 0.7 < alpha_req(x, alpha_ranks=(1, 30)) < 1.3
    True
    """
    return _power_law_fit(stats.cov_eigenvalues, alpha_ranks or _alpha_ranks(stats))[0]


@metric("alpha_req_r2", spectral=True,
        summary="weighted R² of the α-ReQ fit, ranks 11…100",
        range="(−∞, 1]",
        direction="neutral", citation="Agrawal et al., NeurIPS 2022 (α-ReQ)",
        bounds=lambda n, d: (-math.inf, 1.0 + 1e-12))
def alpha_req_r2(stats: Statistics, alpha_ranks: tuple[int, int] | None = None
                 ) -> MetricValue:
    """Weighted R² of the α-ReQ fit: how well a power law describes the spectrum; ≤ 1.

    Weights 1/i over ranks 11…100, as the fit itself. This is not the official α-ReQ code's
    ``fit_R2`` (an unweighted R² over ranks 12–500) nor its ``fit_R2_100``: on the MiniLM
    sample this gives 0.996, an unweighted fit over ranks 12…381 0.852.
    Complexity: that of :func:`alpha_req`.

    >>> lam_x = torch.randn(4000, 30, dtype=torch.float64) * torch.arange(1, 31) ** -0.5
    >>> alpha_req_r2(lam_x, alpha_ranks=(1, 30)) > 0.8
    True
    """
    return _power_law_fit(stats.cov_eigenvalues, alpha_ranks or _alpha_ranks(stats))[1]
