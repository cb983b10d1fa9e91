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
"""

from __future__ import annotations

import copy
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from reprdiag.defaults import DEFAULT_BLOCKS
from reprdiag.errors import ReprdiagWarning, ResourceError
from reprdiag.stats.moments import Scratch, StreamingMoments
from reprdiag.stats.reservoir import row_hash
from reprdiag.stats.state import Frame

MIN_BLOCKS = 5
BLOCK_SALT = 0x2545F4914F6CDD1D  # keeps block labels independent of the sample's priorities
BUDGET_ENV = "REPRDIAG_MEMORY_BUDGET"  # bytes; overrides the device's free memory / 2

_F64 = torch.float64


def block_labels(index: torch.Tensor, seed: int, blocks: int) -> torch.Tensor:
    """Block of each global row index: hash(seed, index) mod K (int64, on ``index``'s device).

    >>> labels = block_labels(torch.arange(10_000), seed=0, blocks=20)
    >>> int(labels.min()), int(labels.max()), bool(labels[:5].eq(labels[0]).all())
    (0, 19, False)
    """
    idx = index.detach().cpu().numpy().astype(np.uint64)
    labels = row_hash(idx, seed + BLOCK_SALT) % blocks
    return torch.from_numpy(labels).to(index.device)


def moment_bytes(d: int, blocks: int) -> int:
    """Memory of K blocks' d×d moment matrices: K·2·d²·8 bytes (float64 Σyyᵀ and Σzzᵀ).

    >>> moment_bytes(384, 20) / 2**20
    45.0
    """
    return blocks * 2 * d * d * 8


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
               budget: int | None = None) -> int:
    """K, lowered (with a warning) to what the memory budget holds; never below 5.

    ``budget`` (bytes) replaces :func:`memory_budget` of ``device`` (e.g. the smallest of
    several ranks', so they all fit the same K). Raises :class:`ResourceError` (exit 3) when
    even 5 blocks do not fit.
    """
    budget = memory_budget(device) if budget is None else budget
    if moment_bytes(d, blocks) <= budget:
        return blocks
    fits = budget // moment_bytes(d, 1)
    need = moment_bytes(d, MIN_BLOCKS) / 2**20
    if fits < MIN_BLOCKS:
        raise ResourceError(f"--uncertainty needs {need:.0f} MiB for {MIN_BLOCKS} blocks of "
                            f"{d}×{d} moments, over the memory budget of "
                            f"{budget / 2**20:.0f} MiB", source=label,
                            hint="run without --uncertainty, or on a device with more memory")
    warnings.warn(f"{label}: --blocks {blocks} needs {moment_bytes(d, blocks) / 2**20:.0f} MiB "
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
