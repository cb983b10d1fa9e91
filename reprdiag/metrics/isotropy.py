"""Isotropy metrics: IsoScore, partition-function isotropy, average pairwise cosine."""

from __future__ import annotations

import math

import torch

from reprdiag.metrics import pairwise, sample
from reprdiag.metrics.rank import participation_ratio
from reprdiag.metrics.registry import MetricValue, metric
from reprdiag.statistics import Statistics


@metric("isoscore", spectral=True,
        summary="(PR − 1)/(d − 1), PR the covariance participation ratio",
        range="[0, 1]", direction="higher",
        citation="Rudman et al., Findings of ACL 2022 (IsoScore 2.0.1)",
        bounds=lambda n, d: (0.0, 1.0 + 1e-12))
def isoscore(stats: Statistics) -> MetricValue:
    """IsoScore: how uniformly the variance spreads over all d dimensions.

    Formula: (PR − 1)/(d − 1) with PR = (Σλ)²/Σλ² the participation ratio of the covariance;
    this equals, exactly, the algorithm of the IsoScore 2.0.1 package (PCA-rotate, normalize
    the variance vector to norm √d, then this ratio; the package rounds √n in float32, 1.3e-6
    off on collapsed data, where this is float64). Range [0, 1]: 1 isotropic, 0 one
    direction. Higher is healthier. Complexity: O(d³) eigvalsh on the shared moments.
    Citation: Rudman, Gillman, Rayne, Eickhoff, "IsoScore: Measuring the Uniformity of
    Embedding Space Utilization", Findings of ACL 2022.

    >>> round(isoscore(torch.cat([torch.eye(4), -torch.eye(4)])), 9)
    1.0
    """
    if stats.d == 1:
        return 1.0
    return (participation_ratio(stats) - 1.0) / (stats.d - 1.0)


def _kept_eigenvectors(stats: Statistics) -> torch.Tensor:
    """Which eigenvectors of XᵀX have a non-zero eigenvalue (boolean mask)."""
    vals = stats.spectra.raw.values
    return vals > vals[0] * stats.d * torch.finfo(torch.float64).eps * 16


def _candidate_directions(stats: Statistics) -> torch.Tensor:
    """Eigenvectors of XᵀX with non-zero eigenvalue, plus one null-space direction if any.

    Every null-space direction c has cᵀx_i = 0, so Z(c) = N for all of them: one represents
    them all, whichever solver path produced the vectors.
    """
    vecs = stats.spectra.raw.vectors[:, _kept_eigenvectors(stats)]
    if vecs.shape[1] < stats.d:
        gen = torch.Generator().manual_seed(0)
        v = torch.randn(stats.d, 1, dtype=torch.float64, generator=gen)
        for _ in range(2):  # re-orthogonalize once for accuracy
            v = v - vecs @ (vecs.T @ v)
        vecs = torch.cat([vecs, v / torch.linalg.vector_norm(v)], dim=1)
    return vecs


@metric("partition_isotropy", spectral=True,
        summary="min_c Z(c)/max_c Z(c), Z(c)=Σ exp(cᵀx), c = ±eigvecs of XᵀX",
        range="(0, 1]", direction="higher", citation="Mu & Viswanath, ICLR 2018",
        bounds=lambda n, d: (0.0, 1.0 + 1e-12), uses_sample=True, eigenvectors=True)
def partition_isotropy(stats: Statistics) -> float:
    """Partition-function isotropy of the raw rows (Arora et al. 2016; Mu & Viswanath).

    Formula: I = min_c Z(c)/max_c Z(c), Z(c) = Σ_i exp(cᵀx_i), c over both signs of each
    eigenvector of XᵀX; computed as exp(min − max) of logsumexp_i(cᵀx_i) on the row sample.
    Both signs, because an eigenvector's sign is arbitrary and the definition's min/max runs
    over directions: the widely copied code of Rajaee & Pilehvar takes each eigenvector with
    the solver's sign, which gives other values (0.722 vs 0.541 here on the MiniLM sample).
    Range (0, 1]; 1 is isotropic. Higher is healthier. Not scale-free (it depends on ‖x‖):
    for rows of large norm the ratio can fall below the smallest float and reads 0.
    Complexity: O(d³) eigh of XᵀX + O(M·d²) on a sample of M rows, blockwise. In the
    first-order jackknife (:mod:`reprdiag.uncertainty.estimator`) that pass keeps the sums
    per block, a second one the gradients of the extreme probes (O(M·d) each), and each
    deleted value costs O(d²·e) for the rotation of its e ≤ 32 extreme probes, not a new
    eigh and projection.
    Citation: Mu & Viswanath, "All-but-the-Top: Simple and Effective Postprocessing for Word
    Representations", ICLR 2018.

    >>> round(partition_isotropy(torch.cat([torch.eye(3), -torch.eye(3)])), 9)
    1.0
    """
    if stats.base is not None and stats.block is not None:
        return _first_order_deleted(stats)
    if stats.sample_groups is not None and stats.spectra.all_vectors:  # first-order jackknife
        return math.exp(sample.partition_sums(stats, _candidate_directions(stats)).log_ratio())
    return pairwise.partition_isotropy(stats.sample.to(torch.float64),
                                       _candidate_directions(stats))


def _first_order_deleted(stats: Statistics) -> float:
    """Partition isotropy without jackknife block ``stats.block``, to first order: the base's
    per-block sums without that block, each probe direction c_k = v_k moved by its first-order
    rotation δv_k = Σ_j v_j A_jk/(λ_k − λ_j), A = Vᵀ(M_b − M)V (M = XᵀX, M_b without the
    block; pairs whose gap is not at least twice |A_jk| are left unrotated: there first
    order does not hold), lnZ changed by ∇lnZ·δv_k, for the probes at the extremes of lnZ
    (all of them when another comes within twice the largest change of the min or max)."""
    probes = _candidate_directions(stats.base)
    sums = sample.partition_sums(stats.base, probes)
    value = sums.log_ratio(without=stats.block, shift=sums.rotation_shift(_rotation(stats, sums)))
    if value is None:  # a probe without a gradient could be the min or max here
        sums = sample.partition_sums(stats.base, probes, every_gradient=True)
        value = sums.log_ratio(without=stats.block,
                               shift=sums.rotation_shift(_rotation(stats, sums)))
    return math.exp(value)


def _rotation(stats: Statistics, sums: pairwise.PartitionSums) -> torch.Tensor:
    """R (basis × probes): R_jk = A_jk/(λ_k − λ_j) (0 where |λ_k − λ_j| ≤ 2|A_jk|) for the
    probes whose gradient ``sums`` holds (``graded``), 0 for the others and for the
    null-space probe, which does not rotate. Only those columns of A = Vᵀ(M_b − M)V are
    formed: O(d²·e) for e graded probes instead of the O(d³) of all of A."""
    base = stats.base.spectra.raw
    lam, v = base.values, base.vectors
    k = sums.pos.shape[1]
    eigen = torch.nonzero(_kept_eigenvectors(stats.base)).flatten()  # probe k → eigenvector
    graded = sums.graded.cpu().view(2, k).any(dim=0)[: eigen.numel()]
    columns = eigen[graded]
    moved = stats.moments.second_moment_times(v[:, columns]) \
        - stats.base.moments.second_moment_times(v[:, columns])  # (M_b − M)·V[:, columns]
    a = v.T @ moved.to(v.device)  # A[:, columns]
    gap = lam[columns][None, :] - lam[:, None]  # gap[j, i] = λ_(columns i) − λ_j
    rotation = torch.zeros(v.shape[1], k, dtype=a.dtype)
    rotation[:, torch.nonzero(graded).flatten()] = torch.where(
        gap.abs() > 2 * a.abs(), a / gap, torch.zeros_like(a))  # the diagonal's gap is 0
    return rotation


@metric("avg_cosine", summary="mean cosine similarity over pairs i≠j, exact from streaming sums",
        range="[−1/(N−1), 1]", direction="lower", citation="Ethayarajh, EMNLP 2019",
        bounds=lambda n, d: (-1.0 / max(n - 1, 1) - 1e-9, 1.0 + 1e-9))
def avg_cosine(stats: Statistics) -> float:
    """Average pairwise cosine similarity (anisotropy).

    Formula: mean over pairs i≠j of z_iᵀz_j = (‖Σz‖² − Σ‖z_i‖²)/(N(N−1)), exact from the
    streaming sums (Σ‖z_i‖² = N unless rows are zero; zero rows count as cosine 0).
    Range [−1/(N−1), 1]; near 0 is isotropic, 1 when all rows point the same way. Lower is
    healthier. Complexity: O(N·d) (from the shared moments).
    Citation: Ethayarajh, "How Contextual are Contextualized Word Representations?",
    EMNLP 2019.

    >>> round(avg_cosine(torch.ones(5, 3)), 12)
    1.0
    """
    m = stats.moments
    if m.n < 2:
        return 0.0
    pair_sum = m.sum_z @ m.sum_z - torch.trace(m.sum_zz)
    value = float(pair_sum / (m.n * (m.n - 1)))
    # z is normalized in the work dtype (float32 for float32/16 data), so ‖z‖² = 1 ± ~1e-7:
    # a value past the range's ends is that rounding, not a cosine.
    return min(max(value, -1.0 / (m.n - 1)), 1.0)
