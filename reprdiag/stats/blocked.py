"""Blocked moments: K per-block :class:`StreamingMoments` of a seeded row partition, one pass.

Each row goes to one of K blocks by a hash of (seed, global row index) —
:func:`~reprdiag.stats.reservoir.row_hash` with a salted seed — so the assignment depends only
on the row's index and the seed: not on chunk sizes, not on how rows were split into files,
and not on the row order of the file (blocks are scattered, never contiguous runs of a file
sorted by class or time). Moments are kept per block; the total is their exact merge, and the
moments of "every row except block b" are the total minus block b (:func:`remove`, the exact
inverse of the merge). The delete-a-block jackknife (:mod:`reprdiag.uncertainty`) is built on it.

Cost: the same O(N·d²) Gram products as a plain pass (each row is multiplied once, in its
block), but K times the d×d moment memory: K·2·d²·8 bytes (Σyyᵀ and Σzzᵀ per block).

:class:`BlockedStatistic` does the same for the statistics streamed beside the moments (class
moments with ``--labels``, the views' cross-moments with ``--pair``): K copies, fed by the same
block assignment, whose total minus one block is the statistic of the other rows, exactly.
"""

from __future__ import annotations

import copy
import os
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import numpy as np
import torch

from reprdiag.defaults import DEFAULT_BLOCKS
from reprdiag.errors import ReprdiagWarning, ResourceError
from reprdiag.stats.moments import Scratch, StreamingMoments
from reprdiag.stats.reservoir import row_hash
from reprdiag.stats.state import Frame, Mergeable

MIN_BLOCKS = 5
BLOCK_SALT = 0x2545F4914F6CDD1D  # keeps block labels independent of the sample's priorities
BUDGET_ENV = "REPRDIAG_MEMORY_BUDGET"  # bytes; overrides the device's free memory / 2

_F64 = torch.float64
S = TypeVar("S", bound=Mergeable)


def block_labels(index: torch.Tensor, seed: int, blocks: int) -> torch.Tensor:
    """Block of each global row index: hash(seed, index) mod K (int64, on ``index``'s device).

    >>> labels = block_labels(torch.arange(10_000), seed=0, blocks=20)
    >>> int(labels.min()), int(labels.max()), bool(labels[:5].eq(labels[0]).all())
    (0, 19, False)
    """
    idx = index.detach().cpu().numpy().astype(np.uint64)
    labels = row_hash(idx, seed + BLOCK_SALT) % blocks
    return torch.from_numpy(labels).to(index.device)


def moment_bytes(d: int, blocks: int, extra: int = 0) -> int:
    """Memory of K blocks' d×d moment matrices: K·2·d²·8 bytes (float64 Σyyᵀ and Σzzᵀ), plus
    ``extra`` bytes per block (the blocked statistics streamed beside them, e.g. a pair's
    cross-moments).

    >>> moment_bytes(384, 20) / 2**20
    45.0
    """
    return blocks * (2 * d * d * 8 + extra)


def memory_budget(device: torch.device) -> int:
    """Bytes the blocked moments may use: ``$REPRDIAG_MEMORY_BUDGET`` if set, else half the
    device's free memory (CUDA: ``mem_get_info``; CPU: MemAvailable of /proc/meminfo, or the
    available pages)."""
    env = os.environ.get(BUDGET_ENV)
    if env:
        return int(float(env))
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0]) // 2
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024 // 2
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") // 2
    except (ValueError, OSError, AttributeError):  # pragma: no cover - exotic platforms
        return 2**62


def fit_blocks(blocks: int, d: int, device: torch.device, label: str = "<input>",
               budget: int | None = None, extra: int = 0) -> int:
    """K, lowered (with a warning) to what the memory budget holds; never below 5.

    ``budget`` (bytes) replaces :func:`memory_budget` of ``device`` (e.g. the smallest of
    several ranks', so they all fit the same K); ``extra``: bytes per block beside the
    moments (see :func:`moment_bytes`). Raises :class:`ResourceError` (exit 3) when even 5
    blocks do not fit.
    """
    budget = memory_budget(device) if budget is None else budget
    if moment_bytes(d, blocks, extra) <= budget:
        return blocks
    fits = budget // moment_bytes(d, 1, extra)
    need = moment_bytes(d, MIN_BLOCKS, extra) / 2**20
    if fits < MIN_BLOCKS:
        raise ResourceError(f"--uncertainty needs {need:.0f} MiB for {MIN_BLOCKS} blocks of "
                            f"{d}×{d} moments{' (and --pair cross-moments)' if extra else ''}, "
                            f"over the memory budget of {budget / 2**20:.0f} MiB", source=label,
                            hint="run without --uncertainty, or on a device with more memory")
    warnings.warn(f"{label}: --blocks {blocks} needs "
                  f"{moment_bytes(d, blocks, extra) / 2**20:.0f} MiB "
                  f"of moments, over the memory budget of {budget / 2**20:.0f} MiB; using "
                  f"{fits} blocks", ReprdiagWarning, stacklevel=2)
    return int(fits)


def remove(total: StreamingMoments, part: StreamingMoments) -> StreamingMoments:
    """The moments of ``total``'s rows minus ``part``'s (the exact inverse of ``merge``)."""
    p = part if part.shift is None or torch.equal(part.shift, total.shift) else part.rebased(
        total.shift)
    out = StreamingMoments(total.d, total.dtype, total.device, total.n - p.n,
                           total.n_zero - p.n_zero, total.shift.clone())
    out.sum_y = total.sum_y - p.sum_y
    out.sum_yy = total.sum_yy - p.sum_yy
    out.sum_z = total.sum_z - p.sum_z
    out.sum_zz = total.sum_zz - p.sum_zz
    return out


@dataclass
class BlockedMoments:
    """K :class:`StreamingMoments`, one per block of a seeded pseudo-random row partition.

    Every block uses the same shift (the mean of the first chunk), so merging blocks and
    removing one from the total are plain sums and differences, O(K·d²).

    >>> x = torch.randn(500, 3, dtype=torch.float64)
    >>> bm = BlockedMoments(3, blocks=5)
    >>> bm.update(0, x[:200]); bm.update(200, x[200:])
    >>> total = bm.total()
    >>> total.n, bool(torch.allclose(total.covariance(), torch.cov(x.T)))
    (500, True)
    """

    d: int
    dtype: torch.dtype = _F64
    device: torch.device | str = "cpu"
    blocks: int = DEFAULT_BLOCKS
    seed: int = 0
    parts: list[StreamingMoments] = field(init=False)

    def __post_init__(self) -> None:
        self.parts = [StreamingMoments(self.d, self.dtype, self.device)
                      for _ in range(self.blocks)]
        shared = Scratch()  # the blocks are updated one after the other: one set of buffers
        for part in self.parts:
            part.scratch = shared
        self._sorted: torch.Tensor | None = None  # reused buffer of a chunk sorted by block

    def update(self, first: int, rows: torch.Tensor, keep: torch.Tensor | None = None,
               dtype: torch.dtype | None = None) -> None:
        """Add rows ``first, first+1, …`` (``keep`` drops some without renumbering the rest),
        multiplied in ``dtype`` (default: the moments' own)."""
        labels = block_labels(torch.arange(first, first + rows.shape[0]), self.seed,
                              self.blocks).to(rows.device)
        if keep is not None:
            rows, labels = rows[keep], labels[keep]
        if self.parts[0].shift is None and rows.shape[0]:
            shift = rows.to(dtype or self.dtype).mean(dim=0, dtype=_F64)
            for part in self.parts:
                part.shift = shift.to(part.device).clone()
        order = torch.argsort(labels, stable=True)
        counts = torch.bincount(labels, minlength=self.blocks).tolist()
        buf = self._sorted
        if buf is None or buf.shape[0] < rows.shape[0] or buf.shape[1:] != rows.shape[1:] \
                or buf.dtype != rows.dtype or buf.device != rows.device:
            buf = self._sorted = torch.empty_like(rows, memory_format=torch.contiguous_format)
        ordered = torch.index_select(rows, 0, order, out=buf[: rows.shape[0]])
        # every block's share fits buffers sized for the whole chunk: allocated once
        self.parts[0].scratch.reserve(rows.shape[0], self.d, dtype or self.dtype, rows.device)
        for part, chunk in zip(self.parts, torch.split(ordered, counts), strict=True):
            part.update(chunk, dtype)

    @property
    def sizes(self) -> list[int]:
        """Rows in each block."""
        return [p.n for p in self.parts]

    def total(self) -> StreamingMoments:
        """All rows: the exact merge of the blocks (a sum, as they share one shift)."""
        out = StreamingMoments(self.d, self.dtype, self.device)
        first = self.parts[0]
        if first.shift is None:
            return out
        out.shift = first.shift.clone()
        for name in ("sum_y", "sum_yy", "sum_z", "sum_zz"):
            setattr(out, name, sum(getattr(p, name) for p in self.parts))
        out.n, out.n_zero = sum(p.n for p in self.parts), sum(p.n_zero for p in self.parts)
        return out

    # -- merging (the protocol of :mod:`reprdiag.stats.state`) ------------------------------
    def frame(self) -> Frame:
        """The blocks' common shift (they all take the first chunk's mean)."""
        return self.parts[0].frame()

    def common_frame(self, frames: Sequence[Frame]) -> Frame:
        return self.parts[0].common_frame(frames)

    def state(self, frame: Frame | None = None) -> dict[str, torch.Tensor]:
        """Every block's :meth:`StreamingMoments.state` about ``frame``'s shift, as
        ``"b/name"`` (b the block)."""
        return {f"{b}/{k}": v for b, part in enumerate(self.parts)
                for k, v in part.state(frame).items()}

    def with_state(self, frame: Frame, state: dict[str, torch.Tensor]) -> BlockedMoments:
        """Blocked moments configured like these, holding ``state`` about ``frame``."""
        out = copy.copy(self)  # no K zero blocks allocated only to be replaced
        out._sorted = None
        out.parts = [part.with_state(frame, {k.split("/", 1)[1]: v for k, v in state.items()
                                             if k.startswith(f"{b}/")})
                     for b, part in enumerate(self.parts)]
        shared = out.parts[0].scratch
        for part in out.parts:
            part.scratch = shared
        return out


class BlockedStatistic(Generic[S]):
    """K copies of a mergeable statistic (:mod:`reprdiag.stats.state`: class moments, the
    views' cross-moments), one per jackknife block, fed by the block assignment of
    :class:`BlockedMoments` (:func:`block_labels` of the global row index and the seed).

    :meth:`split` routes a chunk's rows to their blocks (the caller folds each share into
    its part, with the statistic's own ``update``); :meth:`total` is the exact merge of the
    parts (their states summed in one frame) and :meth:`without` the total minus one part's
    state: the statistic of every row outside that block, exactly, without reading the data
    again. ``tidy`` is applied to each such deleted statistic (e.g.
    :meth:`~reprdiag.stats.classes.ClassMoments.nonempty`, dropping classes that lived only
    in that block). Memory: K times the statistic's own. It merges across processes like
    any statistic (frame and state per block), so ``torchrun`` ranks sum it exactly.

    >>> from reprdiag.stats.classes import ClassMoments
    >>> x, y = torch.arange(12.).reshape(6, 2), torch.tensor([0, 0, 1, 1, 2, 2])
    >>> bs = BlockedStatistic([ClassMoments(2) for _ in range(3)], seed=0)
    >>> for part, (rows, ids) in bs.split(0, [x, y]):
    ...     part.update(rows, ids)
    >>> bs.total().counts.tolist()
    [2.0, 2.0, 2.0]
    """

    def __init__(self, parts: Sequence[S], seed: int = 0, tidy: Callable[[S], S] | None = None):
        self.parts = list(parts)
        self.seed = seed
        self.tidy = tidy
        self._merged: tuple[Frame, dict[str, torch.Tensor]] | None = None

    @property
    def blocks(self) -> int:
        """K, the number of blocks."""
        return len(self.parts)

    def split(self, first: int, arrays: Sequence[torch.Tensor],
              keep: torch.Tensor | None = None) -> Iterator[tuple[S, list[torch.Tensor]]]:
        """(part, its rows of every array) for each block holding rows of this chunk.

        ``arrays`` are row-aligned (rows ``first, first+1, …``; each on its own device);
        ``keep`` drops rows without renumbering the rest. One gather per array, O(n·width).
        """
        self._merged = None
        n = arrays[0].shape[0]
        labels = block_labels(torch.arange(first, first + n), self.seed, self.blocks)
        if keep is not None:
            labels = labels[keep.cpu()]
            arrays = [a[keep.to(a.device)] for a in arrays]
        order = torch.argsort(labels, stable=True)
        counts = torch.bincount(labels, minlength=self.blocks).tolist()
        pieces = [a.index_select(0, order.to(a.device)).split(counts) for a in arrays]
        for b, part in enumerate(self.parts):
            if counts[b]:
                yield part, [p[b] for p in pieces]

    def merged_state(self) -> tuple[Frame, dict[str, torch.Tensor]]:
        """The parts' common frame and the sum of their states in it (computed once, kept
        until the next :meth:`split`). O(K × the statistic's state)."""
        if self._merged is None:
            frame = self.parts[0].common_frame([p.frame() for p in self.parts])
            total: dict[str, torch.Tensor] = {}
            for part in self.parts:
                for k, v in part.state(frame).items():
                    total[k] = total[k] + v if k in total else v.clone()
            self._merged = frame, total
        return self._merged

    def total(self) -> S:
        """The statistic of every row: the exact merge of the K parts."""
        frame, state = self.merged_state()
        return self.parts[0].with_state(frame, dict(state))

    def without(self, block: int) -> S:
        """The statistic of every row outside ``block``: the total's state minus that part's
        (in the total's frame), then ``tidy``. O(the statistic's state)."""
        frame, state = self.merged_state()
        part = self.parts[block].state(frame)
        out = self.parts[0].with_state(frame, {k: v - part[k] for k, v in state.items()})
        return self.tidy(out) if self.tidy is not None else out

    # -- merging (the protocol of :mod:`reprdiag.stats.state`) ------------------------------
    def frame(self) -> Frame:
        """Every part's frame (``"parts"``, in block order)."""
        return {"parts": [p.frame() for p in self.parts]}

    def common_frame(self, frames: Sequence[Frame]) -> Frame:
        """Block by block, the common frame of that block's parts."""
        return {"parts": [p.common_frame([f["parts"][b] for f in frames])
                          for b, p in enumerate(self.parts)]}

    def state(self, frame: Frame | None = None) -> dict[str, torch.Tensor]:
        """Every part's state in its frame of ``frame`` (default: its own), as ``"b/name"``."""
        frames = frame["parts"] if frame is not None else [None] * self.blocks
        return {f"{b}/{k}": v for b, (part, f) in enumerate(zip(self.parts, frames, strict=True))
                for k, v in part.state(f).items()}

    def with_state(self, frame: Frame, state: dict[str, torch.Tensor]) -> BlockedStatistic[S]:
        """Blocked statistics like these, holding ``state`` in ``frame``."""
        per: list[dict[str, torch.Tensor]] = [{} for _ in self.parts]
        for key, value in state.items():
            b, name = key.split("/", 1)
            per[int(b)][name] = value
        parts = [p.with_state(f, s) for p, f, s in zip(self.parts, frame["parts"], per,
                                                         strict=True)]
        return BlockedStatistic(parts, self.seed, self.tidy)


def blocked_totals(extras: dict[str, Any]) -> dict[str, Any]:
    """``extras`` (the statistics streamed beside the moments, by name) with every
    :class:`BlockedStatistic` replaced by its total (what the plain metric values need)."""
    return {k: v.total() if isinstance(v, BlockedStatistic) else v for k, v in extras.items()}
