"""A uniform row sample of any stream: :class:`Reservoir` ("bottom-k" by a row hash).

The sample depends only on the seed and the rows' global indices (:func:`row_hash`), never on
chunk sizes or on how rows were split across files or processes, so two reservoirs merge
exactly. The pairwise metrics (ER entropy, partition isotropy, uniformity) read it.
Memory O(M·d) for a sample of M rows, whatever N is.
"""

from __future__ import annotations

import numpy as np
import torch


def row_hash(index: np.ndarray, seed: int) -> np.ndarray:
    """A pseudo-random int64 in [0, 2⁵³) for each global row index: splitmix64 of
    (seed, index) (Steele, Lea & Flood, OOPSLA 2014), top 53 bits. It depends only on the row's
    index and the seed, never on chunking or on how rows are split over files or processes:
    the sample's priorities (:func:`row_priority`) and the jackknife's block labels
    (:func:`reprdiag.stats.blocked.block_labels`, with a salted seed) both come from it.
    O(n), vectorized.

    >>> idx = np.arange(3, dtype=np.uint64)
    >>> row_hash(idx, 0).tolist() == row_hash(idx, 0).tolist() != row_hash(idx, 1).tolist()
    True
    >>> bool((row_hash(np.arange(1000, dtype=np.uint64), 1) < 2**53).all())
    True
    """
    with np.errstate(over="ignore"):
        z = index.astype(np.uint64) + np.uint64((seed * 0x9E3779B97F4A7C15 + 0x632BE59BD9B4E019)
                                                 % 2**64)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
    return (z >> np.uint64(11)).astype(np.int64)


def row_priority(first: int, n: int, seed: int) -> torch.Tensor:
    """Sampling priorities of rows ``first … first+n−1`` (int64 in [0, 2⁵³))."""
    return torch.from_numpy(row_hash(np.arange(first, first + n, dtype=np.uint64), seed))


class Reservoir:
    """A uniform sample without replacement of at most ``capacity`` rows ("bottom-k").

    Each row gets a pseudo-random priority from a hash of (seed, global row index); the sample
    is the ``capacity`` rows of lowest priority. It therefore depends only on the seed and the
    rows, never on chunk sizes or on how rows were split across files or processes, and two
    reservoirs merge exactly. Memory O(capacity·d).

    Rows live in one preallocated buffer; an incoming row that beats the current worst priority
    overwrites an evicted slot, so a chunk costs O(chunk + rows kept·d), not O(capacity·d).
    :attr:`rows`, :attr:`priority` and :attr:`index` are in increasing row index.

    >>> r = Reservoir(capacity=3, seed=0)
    >>> r.update(0, torch.arange(10.).reshape(5, 2))
    >>> r.rows.shape, r.seen, r.is_complete
    (torch.Size([3, 2]), 5, False)
    """

    def __init__(self, capacity: int, seed: int = 0, rows: torch.Tensor | None = None,
                 priority: torch.Tensor | None = None, index: torch.Tensor | None = None,
                 seen: int = 0, dtype: torch.dtype | None = None):
        self.capacity, self.seed = int(capacity), seed
        self.dtype = dtype  # the narrowest dtype rows are kept in (None: the rows' own)
        self.seen = seen
        self._count = 0
        self._buf: torch.Tensor | None = None  # rows; the first _count are valid, any order
        self._prio: torch.Tensor | None = None
        self._idx: torch.Tensor | None = None
        self._view: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None
        if rows is not None:  # a given sample (rows, priority and index in matching order)
            self.rows, self.priority, self.index = rows, priority, index

    # -- reading --------------------------------------------------------------------------
    def _sorted(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None:
        if self._buf is None:
            return None
        if self._view is None:
            n = self._count
            rows, prio, idx = self._buf[:n], self._prio[:n], self._idx[:n]
            if n > 1 and not bool((idx[1:] > idx[:-1]).all()):
                order = torch.argsort(idx)
                rows, prio, idx = rows[order], prio[order], idx[order]
            self._view = (rows, prio, idx)
        return self._view

    @property
    def rows(self) -> torch.Tensor | None:
        """The sampled rows, in increasing global index (``None`` before any row)."""
        view = self._sorted()
        return None if view is None else view[0]

    @property
    def priority(self) -> torch.Tensor | None:
        view = self._sorted()
        return None if view is None else view[1]

    @property
    def index(self) -> torch.Tensor | None:
        """Global row index of each sampled row, increasing."""
        view = self._sorted()
        return None if view is None else view[2]

    # Assigning a sample: set rows, priority and index together (one tuple assignment), in
    # matching order; the next read sorts them by index.
    @rows.setter
    def rows(self, value: torch.Tensor) -> None:
        self._buf, self._count, self._view = value, value.shape[0], None

    @priority.setter
    def priority(self, value: torch.Tensor) -> None:
        self._prio, self._view = value, None

    @index.setter
    def index(self, value: torch.Tensor) -> None:
        self._idx, self._view = value, None

    @property
    def is_complete(self) -> bool:
        """True when every row seen is in the sample."""
        return self._buf is not None and self._count == self.seen

    # -- building -------------------------------------------------------------------------
    def update(self, first: int, rows: torch.Tensor, keep: torch.Tensor | None = None) -> None:
        """Offer rows whose global indices are ``first, first+1, …``.

        ``keep`` (a boolean mask) drops rows, e.g. non-finite ones, without changing the
        indices, and so the priorities, of the others.
        """
        n = rows.shape[0]
        prio = row_priority(first, n, self.seed).to(rows.device)
        idx = torch.arange(first, first + n, device=rows.device)
        if keep is not None:
            rows, prio, idx = rows[keep], prio[keep], idx[keep]
        self.seen += rows.shape[0]
        if rows.shape[0] == 0:
            return
        if self._count >= self.capacity:
            beats = prio < self._prio[: self._count].max()
            if not bool(beats.any()):
                return
            rows, prio, idx = _take(torch.nonzero(beats).flatten(), rows, prio, idx)
        self._absorb(rows, prio, idx)

    def to(self, device: torch.device | str) -> Reservoir:
        """The same sample with its tensors on ``device``."""
        moved = [None if t is None else t.to(device)
                 for t in (self.rows, self.priority, self.index)]
        return Reservoir(self.capacity, self.seed, *moved, seen=self.seen, dtype=self.dtype)

    def state(self) -> dict[str, torch.Tensor]:
        """The sample as tensors: ``seen`` (0-d int64) and, once a row was kept, ``rows``,
        ``priority`` and ``index`` in increasing row index. :meth:`from_state` rebuilds it."""
        out = {"seen": torch.tensor(self.seen, dtype=torch.int64)}
        view = self._sorted()
        if view is not None:
            out["rows"], out["priority"], out["index"] = view
        return out

    @classmethod
    def from_state(cls, state: dict[str, torch.Tensor], capacity: int, seed: int = 0,
                   dtype: torch.dtype | None = None) -> Reservoir:
        """The reservoir whose :meth:`state` is ``state``.

        >>> r = Reservoir(3, seed=1)
        >>> r.update(0, torch.arange(10.).reshape(5, 2))
        >>> back = Reservoir.from_state(r.state(), 3, seed=1)
        >>> torch.equal(back.rows, r.rows), back.seen
        (True, 5)
        """
        return cls(capacity, seed, state.get("rows"), state.get("priority"), state.get("index"),
                   seen=int(state["seen"]), dtype=dtype)

    def below(self, limit: int | None) -> Reservoir:
        """The rows whose priority is at most ``limit`` (every row when ``None``), with the
        same count of rows seen: what a process contributes to a merged sample whose k-th
        smallest priority is ``limit`` (:func:`sample_threshold`)."""
        view = self._sorted()
        if view is None:
            return Reservoir(self.capacity, self.seed, seen=self.seen, dtype=self.dtype)
        rows, prio, idx = view
        if limit is not None:
            rows, prio, idx = _take(torch.nonzero(prio <= limit).flatten(), rows, prio, idx)
        return Reservoir(self.capacity, self.seed, rows, prio, idx, seen=self.seen,
                         dtype=self.dtype)

    def merge(self, other: Reservoir) -> None:
        """Combine with a reservoir over other rows (same seed, disjoint global indices)."""
        self.seen += other.seen
        view = other._sorted()
        if view is not None:
            dev = self._buf.device if self._buf is not None else view[0].device
            self._absorb(*(t.to(dev) for t in view))

    def _reserve(self, rows: torch.Tensor, size: int) -> None:
        """Grow the buffers (geometrically, up to ``capacity``) to hold ``size`` rows."""
        have = 0 if self._buf is None else self._buf.shape[0]
        if min(size, self.capacity) <= have:
            return
        size = min(self.capacity, max(size, 2 * have))
        like = rows if self._buf is None else self._buf
        buf = torch.empty((size, *like.shape[1:]), dtype=like.dtype, device=like.device)
        prio = torch.empty(size, dtype=torch.int64, device=like.device)
        idx = torch.empty(size, dtype=torch.int64, device=like.device)
        if self._buf is not None:
            n = self._count
            buf[:n], prio[:n], idx[:n] = self._buf[:n], self._prio[:n], self._idx[:n]
        self._buf, self._prio, self._idx = buf, prio, idx

    def _absorb(self, rows: torch.Tensor, prio: torch.Tensor, idx: torch.Tensor) -> None:
        self._view = None
        dtype = rows.dtype if self.dtype is None else torch.promote_types(rows.dtype, self.dtype)
        if self._buf is not None:
            dtype = torch.promote_types(self._buf.dtype, dtype)  # never narrow a row
            if self._buf.dtype != dtype:
                self._buf = self._buf.to(dtype)
        if rows.shape[0] > self.capacity:
            best = torch.topk(prio, self.capacity, largest=False).indices
            rows, prio, idx = _take(best, rows, prio, idx)
        n, k = self._count, rows.shape[0]
        if n + k <= self.capacity:
            slots = torch.arange(n, n + k, device=prio.device)
        else:  # keep the capacity lowest priorities of old ∪ new; new rows fill freed slots
            both = torch.cat([self._prio[:n], prio])
            best = torch.topk(both, self.capacity, largest=False).indices
            kept_old = torch.zeros(n, dtype=torch.bool, device=prio.device)
            kept_old[best[best < n]] = True
            new = best[best >= n] - n
            rows, prio, idx = _take(new, rows, prio, idx)
            slots = torch.cat([torch.nonzero(~kept_old).flatten(),
                               torch.arange(n, self.capacity, device=prio.device)])
        rows = rows.to(dtype)  # only the rows kept are converted
        self._reserve(rows, n + k)
        self._buf.index_copy_(0, slots, rows)
        self._prio.index_copy_(0, slots, prio)
        self._idx.index_copy_(0, slots, idx)
        self._count = min(self.capacity, n + k)


def _take(which: torch.Tensor, *tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Rows ``which`` of each tensor (``index_select``: far faster than mask indexing on CPU)."""
    return tuple(t.index_select(0, which) for t in tensors)


def sample_threshold(priorities: list[torch.Tensor | None], capacity: int) -> int | None:
    """The largest priority the bottom-``capacity`` sample of the union of several samples
    keeps (``None``: it keeps every row): the k-th smallest of their priorities.

    >>> sample_threshold([torch.tensor([5, 9]), None, torch.tensor([1, 7])], 3)
    7
    """
    present = [p for p in priorities if p is not None and p.numel()]
    if not present:
        return None
    allp = torch.cat(present)
    if allp.numel() <= capacity:
        return None
    return int(torch.kthvalue(allp, capacity).values)
