"""The streaming pass: source → chunks → :class:`StreamingMoments` + :class:`Reservoir`.

One read of the data. Each chunk is moved to the compute device, checked for NaN/Inf, folded
into the moments (two Gram products) and offered to the row sample. Memory is
O(d² + chunk·d + M·d) whatever N is.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
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


class Accumulator:
    """The streaming state of one input: feed it chunks with :meth:`add`, then :meth:`finish`.

    Chunks may come from a file (:func:`accumulate`), a model's forward hooks, or another
    process; ``first`` is the global index of a chunk's first row (it fixes which rows the
    seeded sample keeps, so the result does not depend on chunking).
    """

    def __init__(self, d: int, storage_dtype: str | torch.dtype, opts: StreamOptions,
                 label: str = "<input>"):
        self.label, self.opts = label, opts
        self.dtype = work_dtype(storage_dtype, opts.precision)
        self.device = torch.device("cpu") if opts.device.type == "mps" else opts.device
        self.moments = StreamingMoments(d, self.dtype, self.device)
        self.reservoir = Reservoir(opts.sample_size, opts.seed)
        self.bad = _NonFinite()
        self.rows_read = 0
        self.seconds = 0.0

    def add(self, first: int, rows: torch.Tensor) -> None:
        """Fold rows ``first … first+len(rows)−1`` into the moments and the sample."""
        t0 = time.perf_counter()
        x = rows.to(device=self.device, dtype=self.dtype, non_blocking=True)
        keep = self.bad.scan(first, x)
        if keep is None and self.bad.count == 0:
            self.moments.update(x)
            self.reservoir.update(first, x)
        elif self.opts.nan == "drop":
            kept = keep if keep is not None else torch.ones(len(x), dtype=torch.bool,
                                                            device=x.device)
            self.moments.update(x[kept])
            self.reservoir.update(first, x, kept)
        self.rows_read += rows.shape[0]
        self.seconds += time.perf_counter() - t0

    def finish(self) -> Accumulated:
        """Check what was read (NaN/Inf policy, enough rows) and return the statistics."""
        if self.bad.count and self.opts.nan == "error":
            raise InputError(f"has {self.bad.count} row(s) containing NaN or Inf "
                             f"(first at row {self.bad.first})", source=self.label,
                             hint="clean the data, or pass --nan drop to skip them")
        if self.moments.n < 2:
            raise InputError(f"has {self.moments.n} usable row(s); at least 2 are needed",
                             source=self.label, hint="check the data or the NaN policy")
        return Accumulated(self.moments, self.reservoir, self.rows_read, self.bad.count,
                           self.seconds)


def feed(acc: Accumulator, source: ArraySource, opts: StreamOptions,
         progress: Progress | None = None,
         ranges: Sequence[tuple[int, int]] | None = None) -> None:
    """Stream rows of ``source`` into ``acc``: all of them, or the global row ``ranges``
    (one process's share under ``torchrun``). Row indices stay global."""
    ranges = [(0, source.shape[0])] if ranges is None else ranges
    if progress:
        progress.start(source.label, sum(b - a for a, b in ranges))
    try:
        for start, stop in ranges:
            for first, rows in source.iter_chunks(chunk_rows_for(acc.moments.d, opts), start,
                                                  stop):
                acc.add(first, rows)
                if progress:
                    progress.advance(rows.shape[0])
    finally:
        if progress:
            progress.finish()


def accumulate(source: ArraySource, opts: StreamOptions,
               progress: Progress | None = None) -> Accumulated:
    """Stream ``source`` once into moments and a row sample."""
    _, d = check_shape(source)
    acc = Accumulator(d, source.dtype, opts, source.label)
    t0 = time.perf_counter()
    feed(acc, source, opts, progress)
    result = acc.finish()
    result.seconds = time.perf_counter() - t0
    return result
