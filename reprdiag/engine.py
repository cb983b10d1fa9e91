"""The streaming pass: source → chunks → :class:`StreamingMoments` + :class:`Reservoir`.

One read of the data. Each chunk is moved to the compute device, checked for NaN/Inf, folded
into the moments (two Gram products) and offered to the row sample. Memory is
O(d² + chunk·d + M·d) whatever N is.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Protocol

import torch

from reprdiag.errors import InputError
from reprdiag.loaders import ArraySource
from reprdiag.stats import Reservoir, StreamingMoments, work_dtype

NAN_POLICIES = ("error", "drop")
CHUNK_BYTES = 64 * 2**20  # target size of one chunk in the work dtype


class Progress(Protocol):
    """Where the pass reports rows read (the CLI plugs a rich progress bar in here)."""

    def start(self, label: str, total: int) -> None: ...

    def advance(self, rows: int) -> None: ...

    def finish(self) -> None: ...


@dataclass
class StreamOptions:
    """How to stream one source. ``chunk_rows=None`` sizes chunks to about 64 MiB."""

    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    precision: str = "auto"
    chunk_rows: int | None = None
    sample_size: int = 16384
    seed: int = 0
    nan: str = "error"


@dataclass
class Accumulated:
    """The result of one pass over a source."""

    moments: StreamingMoments
    reservoir: Reservoir
    rows_read: int
    rows_dropped: int
    seconds: float


def chunk_rows_for(width: int, opts: StreamOptions) -> int:
    """Rows per chunk: the option if set, else about :data:`CHUNK_BYTES` of float32 rows."""
    if opts.chunk_rows:
        return opts.chunk_rows
    return int(min(max(CHUNK_BYTES // (4 * max(width, 1)), 256), 1 << 20))


def check_shape(source: ArraySource) -> tuple[int, int]:
    """(N, d) of a 2-D source, refusing shapes nothing can be computed from."""
    n, d = source.shape
    if n == 0:
        raise InputError("has 0 rows", source=source.label, hint="nothing to analyze")
    if d == 0:
        raise InputError("has 0 columns", source=source.label, hint="nothing to analyze")
    if n == 1:
        raise InputError("has only 1 row; covariance needs at least 2", source=source.label,
                         hint="analyze more embeddings")
    return n, d


class _NonFinite:
    """Counts rows holding NaN or Inf and remembers the first one's index."""

    def __init__(self) -> None:
        self.count = 0
        self.first: int | None = None

    def scan(self, first: int, x: torch.Tensor) -> torch.Tensor | None:
        """Boolean mask of finite rows, or ``None`` when all rows are finite."""
        if not x.is_floating_point():  # integers cannot hold NaN
            return None
        ok = torch.isfinite(x).all(dim=1)
        bad = int((~ok).sum())
        if bad == 0:
            return None
        if self.first is None:
            self.first = first + int(torch.nonzero(~ok)[0, 0])
        self.count += bad
        return ok


def accumulate(source: ArraySource, opts: StreamOptions,
               progress: Progress | None = None) -> Accumulated:
    """Stream ``source`` once into moments and a row sample."""
    n, d = check_shape(source)
    dtype = work_dtype(source.dtype, opts.precision)
    stats_device = torch.device("cpu") if opts.device.type == "mps" else opts.device
    moments = StreamingMoments(d, dtype, stats_device)
    reservoir = Reservoir(opts.sample_size, opts.seed)
    bad = _NonFinite()
    t0 = time.perf_counter()
    if progress:
        progress.start(source.label, n)
    try:
        for first, rows in source.iter_chunks(chunk_rows_for(d, opts)):
            x = rows.to(device=stats_device, dtype=dtype, non_blocking=True)
            keep = bad.scan(first, x)
            if keep is None and bad.count == 0:
                moments.update(x)
                reservoir.update(first, x)
            elif opts.nan == "drop":
                kept = keep if keep is not None else torch.ones(len(x), dtype=torch.bool)
                moments.update(x[kept.to(x.device)])
                reservoir.update(first, x, kept.to(x.device))
            if progress:
                progress.advance(rows.shape[0])
    finally:
        if progress:
            progress.finish()
    if bad.count and opts.nan == "error":
        raise InputError(f"has {bad.count} row(s) containing NaN or Inf "
                         f"(first at row {bad.first})", source=source.label,
                         hint="clean the data, or pass --nan drop to skip them")
    if moments.n < 2:
        raise InputError(f"has {moments.n} finite row(s) left after dropping NaN/Inf rows",
                         source=source.label, hint="at least 2 rows are needed")
    return Accumulated(moments, reservoir, n, bad.count, time.perf_counter() - t0)
