"""The delete-a-block jackknife's statistics: every input's moments and sample without one block.

The K blocks are those of :class:`~reprdiag.stats.blocked.BlockedMoments` (a seeded hash of
the global row index); the moments of "every row except block b" are the total minus block b
(:func:`~reprdiag.stats.blocked.remove`), the row sample drops the same rows
(:func:`without_block`), and the statistics streamed beside the moments (class moments with
``--labels``, cross-moments with ``--pair``), kept per block as
:class:`~reprdiag.stats.blocked.BlockedStatistic`, are their total minus that block's part.
:mod:`reprdiag.uncertainty.estimator` recomputes every metric on them.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator, Mapping
from typing import Any

from reprdiag.errors import InputError
from reprdiag.statistics import Statistics
from reprdiag.stats import Reservoir, StreamingMoments
from reprdiag.stats.blocked import (
    MIN_BLOCKS,
    BlockedMoments,
    BlockedStatistic,
    block_labels,
    remove,
)


def without_block(sample: Reservoir, block: int, seed: int, blocks: int) -> Reservoir:
    """The row sample minus its rows of ``block`` (the same labels as the moments')."""
    keep = block_labels(sample.index, seed, blocks) != block
    return Reservoir(sample.capacity, sample.seed, sample.rows[keep], sample.priority[keep],
                     sample.index[keep], sample.seen - int((~keep).sum()))


def deleted_statistics(bm: BlockedMoments, total: StreamingMoments, sample: Reservoir,
                       extras: Mapping[str, Any] | None = None) -> Iterator[Statistics]:
    """:class:`Statistics` of every row outside block b (moments, sample and the blocked
    ``extras``), b = 0 … K−1.

    When the sample holds every row, so does each delete-one-block sample (so the N < d Gram
    path of the spectra stays available).
    """
    for b in range(bm.blocks):
        yield deleted_statistic(bm, total, sample, b, extras)


def deleted_statistic(bm: BlockedMoments, total: StreamingMoments, sample: Reservoir,
                      block: int, extras: Mapping[str, Any] | None = None) -> Statistics:
    """:class:`Statistics` of every row outside ``block``: O(d²) for the moments, O(M) for
    the sample, O(state) for each :class:`BlockedStatistic` of ``extras`` (by name:
    ``classes``, ``pair``; others are left out) (see :func:`deleted_statistics`)."""
    rest = functools.partial(without_block, sample, block, bm.seed, bm.blocks)
    # made on first use when the sample lacks rows anyway (first-order estimates never read it)
    stats = Statistics(remove(total, bm.parts[block]), rest() if sample.is_complete else rest)
    for name, blocked in (extras or {}).items():
        if isinstance(blocked, BlockedStatistic):
            if blocked.blocks != bm.blocks or blocked.seed != bm.seed:
                raise ValueError(f"{name}: {blocked.blocks} blocks of seed {blocked.seed}, "
                                 f"not the moments' {bm.blocks} of seed {bm.seed}")
            stats.extras[name] = blocked.without(block)
    return stats


def check_rows(n: int, blocks: int, label: str = "<input>") -> None:
    """Refuse inputs too small to split: at least 2 rows per block on average."""
    if n < 2 * blocks:
        raise InputError(f"has {n} rows, too few for {blocks} jackknife blocks "
                         f"(at least {2 * blocks} needed)", source=label,
                         hint=f"use --blocks {max(MIN_BLOCKS, n // 2)} or more rows"
                         if n >= 2 * MIN_BLOCKS else "run without --uncertainty")


__all__ = ["check_rows", "deleted_statistic", "deleted_statistics", "without_block"]
