"""Which rows each process reads: pure functions of sizes, a rank and the number of ranks.

Under ``torchrun`` every rank opens the same inputs and reads only its share: whole shards
when there are at least as many shards as ranks and they group evenly
(:func:`whole_shards`), else a near-equal slice of every shard (:func:`split_source`). A model
run over a dataset splits its batches the same way (:func:`share_rows`: whole batches of the
one-process run, so every rank feeds the model the very batches one process would).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

from reprdiag.loaders import ArraySource, ConcatSource

#: Whole shards go to ranks only when the busiest rank reads at most this × N/W rows (e.g.
#: 10 equal shards on 8 ranks would give two ranks twice the rows: row ranges instead).
SHARD_SLACK = 1.1
Ranges = list[tuple[int, int]]


def even_slices(n: int, parts: int) -> Ranges:
    """``parts`` contiguous ranges covering ``[0, n)`` whose lengths differ by at most one.

    >>> even_slices(10, 3)
    [(0, 3), (3, 6), (6, 10)]
    """
    return [(n * i // parts, n * (i + 1) // parts) for i in range(parts)]


def group_shards(sizes: Sequence[int], groups: int) -> list[range]:
    """Cut shards (in order) into ``groups`` non-empty contiguous groups, minimising the
    largest group's row count. Needs ``len(sizes) >= groups``; O(S log N).

    >>> group_shards([5, 1, 1, 1, 4], 3)
    [range(0, 1), range(1, 4), range(4, 5)]
    """
    if not 1 <= groups <= len(sizes):
        raise ValueError(f"cannot cut {len(sizes)} shards into {groups} non-empty groups")
    lo, hi = max(sizes), sum(sizes)
    while lo < hi:  # smallest cap for which a greedy cut needs at most `groups` groups
        mid = (lo + hi) // 2
        if len(_greedy_cut(sizes, mid, groups, force=False)) <= groups:
            hi = mid
        else:
            lo = mid + 1
    return _greedy_cut(sizes, lo, groups, force=True)


def _greedy_cut(sizes: Sequence[int], cap: int, groups: int, force: bool) -> list[range]:
    """Open a new group when the cap would be exceeded or (``force``) when exactly one shard
    is left for each group still to open."""
    starts, total = [0], 0
    for i, size in enumerate(sizes):
        to_open = groups - len(starts)
        if i > starts[-1] and (total + size > cap or (force and len(sizes) - i == to_open)):
            starts.append(i)
            total = 0
        total += size
    return [range(a, b) for a, b in zip(starts, [*starts[1:], len(sizes)], strict=True)]


def whole_shards(sizes: Sequence[int], world_size: int) -> list[range] | None:
    """Contiguous groups of whole shards, one per rank, when there are at least as many
    shards as ranks and the busiest rank reads at most :data:`SHARD_SLACK` × its even share
    of the rows; else ``None`` (the shards are then cut into row ranges).

    >>> whole_shards([100, 100, 100, 100], 2)
    [range(0, 2), range(2, 4)]
    >>> whole_shards([100, 100, 100], 2) is None  # 2/3 of the rows on one rank
    True
    """
    if len(sizes) < world_size:
        return None
    groups = group_shards(sizes, world_size)
    busiest = max(sum(sizes[i] for i in g) for g in groups)
    return groups if busiest <= SHARD_SLACK * math.ceil(sum(sizes) / world_size) else None


def split_source(source: ArraySource, rank: int, world_size: int) -> Ranges:
    """The global row ranges rank ``rank`` of ``world_size`` reads from ``source``.

    Shards of a :class:`ConcatSource` go whole to ranks when :func:`whole_shards` finds a
    balanced grouping (contiguous groups); otherwise each shard (a plain source is one
    shard) is sliced into ``world_size`` near-equal row ranges and a rank reads one of each.

    >>> import torch
    >>> from reprdiag.loaders import TensorSource
    >>> split_source(TensorSource(torch.zeros(10, 2)), 1, 3)
    [(3, 6)]
    """
    sizes = ([p.shape[0] for p in source.parts] if isinstance(source, ConcatSource)
             else [source.shape[0]])
    offsets = [sum(sizes[:i]) for i in range(len(sizes) + 1)]
    groups = whole_shards(sizes, world_size)
    if groups is not None:
        mine = groups[rank]
        return [(offsets[mine.start], offsets[mine.stop])]
    ranges = []
    for i, size in enumerate(sizes):
        a, b = even_slices(size, world_size)[rank]
        if a < b:
            ranges.append((offsets[i] + a, offsets[i] + b))
    return ranges


class Share(NamedTuple):
    """A rank's rows ``[start, stop)``: ``batches`` whole batches of the one-process run."""

    start: int
    stop: int
    batches: int


def share_rows(segments: Sequence[int], batch_size: int, rank: int, world_size: int) -> Share:
    """The contiguous rows of rank ``rank`` of ``world_size``, cut on batch boundaries.

    A one-process run batches each segment (a shard of a folder; one segment otherwise) in
    ``batch_size`` rows from its start. The B batches are split into ``world_size``
    contiguous runs whose lengths differ by at most one, so every rank feeds the model the
    very batches one process would (bit-identical activations). O(S) for S segments.

    >>> share_rows([100], 32, 1, 2)  # batches [0,32) [32,64) | [64,96) [96,100)
    Share(start=64, stop=100, batches=2)
    >>> share_rows([5], 32, 0, 2)  # more ranks than batches: an empty share
    Share(start=0, stop=0, batches=0)
    >>> share_rows([70, 40], 32, 1, 2)  # [0,32) [32,64) | [64,70) and shard 2: [70,102) ...
    Share(start=64, stop=110, batches=3)
    """
    counts = [math.ceil(n / batch_size) for n in segments]
    total = sum(counts)
    lo, hi = even_slices(total, world_size)[rank]
    return Share(_batch_start(segments, counts, batch_size, lo),
                 _batch_start(segments, counts, batch_size, hi), hi - lo)


def _batch_start(segments: Sequence[int], counts: Sequence[int], batch_size: int,
                 index: int) -> int:
    """The row where batch ``index`` starts (the row count when ``index`` is past the end)."""
    row = 0
    for n, count in zip(segments, counts, strict=True):
        if index < count:
            return row + index * batch_size
        row, index = row + n, index - count
    return row
