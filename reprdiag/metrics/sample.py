"""The row sample's shared pairwise pass: ER entropy and uniformity both reduce the Gram
matrix of the same normalized rows, so its blocks are formed once per :class:`Statistics`.

:func:`pair_sums` computes :func:`reprdiag.metrics.pairwise.pair_sums` on the sample's rows
that have a direction (non-zero rows; a zero vector is not a point of the sphere) the first
time either metric asks, and keeps it in ``stats.shared``; the metrics stay pure functions of
the statistics. When the statistics carry the jackknife's block labels of the sample
(``stats.sample_groups``), the pass splits its sums by block, and the same pass then serves
the plain values and every delete-a-block value (:func:`deleted`).
"""

from __future__ import annotations

import threading

import torch

from reprdiag.metrics import pairwise
from reprdiag.metrics.pairwise import PairSums
from reprdiag.statistics import Statistics

_KEY = "pair_sums"
_PARTITION_KEY = "partition_sums"
_LOCK = threading.Lock()  # jackknife blocks run on threads and may ask at the same time


def directions(stats: Statistics) -> torch.Tensor:
    """Mask of the sample rows that have a direction: every non-zero row, at any scale."""
    return stats.sample.ne(0).any(dim=1)


def pair_sums(stats: Statistics, kappa: float | None = 10.0,
              labels: torch.Tensor | None = None, groups: int = 1) -> PairSums | None:
    """The sample's pair sums at ER kernel concentration ``kappa`` (``None``: whichever pass
    was made, else the default 10), split by ``labels`` (one per sample row, 0 … groups−1)
    or by ``stats.sample_groups`` when set; ``None`` when no row has a direction.

    Computed once per (kappa, grouping) and cached in ``stats.shared``: a request without
    labels is served by any pass of that kappa (the full sums are the sums over groups).
    Complexity: that of :func:`reprdiag.metrics.pairwise.pair_sums`, O(M²·d/2), once.
    """
    keep = directions(stats)
    if not bool(keep.any()):
        return None
    cached: tuple[torch.Tensor | None, PairSums] | None = stats.shared.get(_KEY)
    if cached is not None:
        have_labels, ps = cached
        same_kappa = kappa is None or ps.kappa == float(kappa)
        if same_kappa and (labels is None or (have_labels is not None and ps.groups == groups
                                               and torch.equal(have_labels, labels))):
            return ps
    if labels is None and stats.sample_groups is not None:
        labels, groups = stats.sample_groups
    e = stats.normalized_sample[keep]
    kept = None if labels is None else labels.to(keep.device)[keep]
    ps = pairwise.pair_sums(e, 10.0 if kappa is None else kappa, kept, groups)
    stats.shared[_KEY] = (labels, ps)
    return ps


def partition_sums(stats: Statistics, directions: torch.Tensor,
                   every_gradient: bool = False) -> pairwise.PartitionSums:
    """Partition isotropy's per-block sums of the sample (``stats.sample_groups``, else one
    group) along ``directions`` and the gradients of the extreme ones in the eigenvectors
    of XᵀX (``every_gradient``: of all; :func:`reprdiag.metrics.pairwise.partition_sums`),
    computed once per statistics and kept in ``stats.shared``: the plain value and every
    first-order deleted value read it. Complexity O(M·d·k), once."""
    key = _PARTITION_KEY + ("_all" if every_gradient else "")
    with _LOCK:
        cached = stats.shared.get(key)
        if cached is None:
            labels, groups = stats.sample_groups or (
                torch.zeros(stats.sample.shape[0], dtype=torch.long), 1)
            cached = pairwise.partition_sums(stats.sample, directions,
                                             stats.spectra.raw.vectors, labels, groups,
                                             extremes=None if every_gradient else 16)
            stats.shared[key] = cached
        return cached


__all__ = ["directions", "pair_sums", "partition_sums"]
