"""The streaming pass: source → chunks → :class:`StreamingMoments` + :class:`Reservoir`.

One read of the data. Each chunk is moved to the compute device, checked for NaN/Inf, folded
into the moments (two Gram products) and offered to the row sample. Memory is
O(d² + chunk·d + M·d) whatever N is.

Faults are handled here, never printed: a GPU out-of-memory halves the chunk size and restarts
the pass, then falls back to the CPU; what happened is returned in :attr:`Accumulated.notes`
for the caller (the CLI prints it as ``reprdiag: warning: ...``).
"""

from __future__ import annotations

import contextlib
import copy
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Protocol, TypeVar

import torch

from reprdiag.errors import InputError, ResourceError
from reprdiag.loaders import ArraySource
from reprdiag.precision import Precision, choose
from reprdiag.prefetch import prefetch
from reprdiag.stats import Mergeable, Reservoir, StreamingMoments, work_dtype
from reprdiag.stats.blocked import BlockedMoments

NAN_POLICIES = ("error", "drop")
CHUNK_BYTES = 64 * 2**20  # target size of one chunk in the work dtype
MIN_CHUNK_ROWS = 256  # an out-of-memory below this many rows per chunk falls back to the CPU
#: A chunk whose largest |x| is outside this range is multiplied in float64 even when the work
#: dtype is float32: the squares of larger values overflow float32 sums, and when every value
#: is smaller they underflow. (Single tiny values beside ordinary ones do not matter: their
#: squares are far below float32's rounding of the sums.)
FLOAT32_SAFE = (2.0**-40, 2.0**40)
#: |x| outside this range cannot be handled in float64: metrics such as cov_offdiag sum
#: squared covariances, i.e. fourth powers of x, which over/underflow beyond it.
FLOAT64_SAFE = (1e-60, 1e60)
T = TypeVar("T")


class Progress(Protocol):
    """Where the pass reports rows read (the CLI plugs a rich progress bar in here)."""

    def start(self, label: str, total: int, unit: str = "rows") -> None: ...

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
    blocks: int = 0  # > 0: keep moments per jackknife block (--uncertainty)


class Companion(Protocol):
    """Statistics streamed beside the moments from a row-aligned second source (labels, a
    paired view): it reads its own rows ``first … first+len(rows)−1`` and folds them with the
    input's rows (``keep`` marks the finite rows when ``--nan drop`` leaves some out)."""

    name: str

    def update(self, first: int, rows: torch.Tensor, keep: torch.Tensor | None) -> None: ...

    def result(self) -> Any: ...


@dataclass
class Accumulated:
    """The result of one pass over a source."""

    moments: StreamingMoments
    reservoir: Reservoir
    rows_read: int
    rows_dropped: int
    seconds: float
    notes: list[str] = field(default_factory=list)  # fallbacks taken, for the caller to show
    blocks: BlockedMoments | None = None  # per-block moments when ``blocks`` was set
    precision: Precision = field(default_factory=Precision)  # how the products were computed
    extras: dict[str, Any] = field(default_factory=dict)  # companions' results, by name


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


@dataclass
class Tally:
    """What a pass counted beside its statistics (plain numbers, so processes exchange it).

    ``dropped`` rows held NaN or Inf (the first at global row ``first_dropped``);
    ``max_abs`` is the largest |x| among the rows kept; ``chunk_max`` the most rows one
    product summed and ``narrow`` whether any chunk was multiplied in float32 (together the
    error floor's inputs, :mod:`reprdiag.precision`); ``notes`` the fallbacks taken.
    """

    rows_read: int = 0
    seconds: float = 0.0
    dropped: int = 0
    first_dropped: int | None = None
    max_abs: float = 0.0
    chunk_max: int = 0
    narrow: bool = False
    notes: list[str] = field(default_factory=list)

    @classmethod
    def combined(cls, tallies: Sequence[Tally]) -> Tally:
        """The tally of passes over disjoint rows run side by side: counts summed, the
        earliest dropped row, the largest magnitude and product, the slowest pass.

        >>> Tally.combined([Tally(10, 1.0, 1, 7), Tally(5, 2.0, 2, 3, narrow=True)])
        Tally(rows_read=15, seconds=2.0, dropped=3, first_dropped=3, max_abs=0.0, \
chunk_max=0, narrow=True, notes=[])
        """
        firsts = [t.first_dropped for t in tallies if t.first_dropped is not None]
        return cls(sum(t.rows_read for t in tallies), max(t.seconds for t in tallies),
                   sum(t.dropped for t in tallies), min(firsts) if firsts else None,
                   max(t.max_abs for t in tallies), max(t.chunk_max for t in tallies),
                   any(t.narrow for t in tallies), [n for t in tallies for n in t.notes])


def finite_rows(x: torch.Tensor) -> torch.Tensor | None:
    """Boolean mask of the rows of ``x`` free of NaN and Inf, or ``None`` when all are.

    >>> finite_rows(torch.tensor([[1.0, float("nan")], [2.0, 3.0]])).tolist()
    [False, True]
    """
    if not x.is_floating_point():  # integers cannot hold NaN
        return None
    if bool(torch.isfinite(x.sum(dim=1)).all()):  # NaN/Inf propagate into the row sums
        return None
    ok = torch.isfinite(x).all(dim=1)  # exact check (a finite row's sum may overflow)
    return None if bool(ok.all()) else ok


class Accumulator:
    """The streaming state of one input: feed it chunks with :meth:`add`, then :meth:`finish`.

    Chunks may come from a file (:func:`accumulate`), a model's forward hooks, or another
    process; ``first`` is the global index of a chunk's first row (it fixes which rows the
    seeded sample keeps, so the result does not depend on chunking). ``n``, the number of
    rows when known in advance, lets ``--precision auto`` multiply small inputs in float64
    (:func:`reprdiag.precision.choose`).
    """

    def __init__(self, d: int, storage_dtype: str | torch.dtype, opts: StreamOptions,
                 label: str = "<input>", n: int | None = None):
        self.label, self.opts = label, opts
        self.companions: list[Companion] = []  # streamed beside the moments (labels, a pair)
        self.dtype, self.reason = choose(storage_dtype, opts.precision, n, d)
        self.device = torch.device("cpu") if opts.device.type == "mps" else opts.device
        self.moments = StreamingMoments(d, self.dtype, self.device)
        self.blocks = (BlockedMoments(d, self.dtype, self.device, opts.blocks, opts.seed)
                       if opts.blocks else None)
        #: dtype of the kept row sample: float32 for float32/16 data unless --precision
        #: float64 (its values are exact copies of the stored ones either way)
        self.sample_dtype = work_dtype(storage_dtype, opts.precision)
        self.reservoir = Reservoir(opts.sample_size, opts.seed, dtype=self.sample_dtype)
        self._convert: torch.Tensor | None = None  # reused work-dtype copy of a chunk
        self.tally = Tally()  # rows read and dropped, magnitudes, fallbacks taken
        #: the companions' statistics when they were given whole (a merge), by name
        self._extras: dict[str, Any] | None = None

    def add(self, first: int, rows: torch.Tensor) -> None:
        """Fold rows ``first … first+len(rows)−1`` into the moments and the sample.

        Each value is touched a fixed number of times: one ``aminmax`` (the largest |x|; a
        NaN or Inf anywhere makes it non-finite, so a clean chunk needs no other check), a
        conversion to the work dtype only when it differs (into a reused buffer), then the
        moments' passes (see :meth:`StreamingMoments.update`). Nothing of size chunk·d is
        allocated per chunk after the first. Chunks holding NaN/Inf take the exact, slower
        scan (:func:`finite_rows`).
        """
        t0 = time.perf_counter()
        tally = self.tally
        raw = rows.to(device=self.device, non_blocking=True)
        hi = _max_abs(raw)
        keep = None
        if not math.isfinite(hi):  # NaN or Inf somewhere in the chunk
            hi = _finite_range(raw)[1]
            keep = self._count_dropped(first, raw)
        tally.chunk_max = max(tally.chunk_max, rows.shape[0])
        if not tally.dropped or self.opts.nan == "drop":
            x = self._work_rows(raw, hi)
            if keep is None:
                tally.max_abs = max(tally.max_abs, hi)
            else:
                self._track_magnitude(x[keep])
            self._fold(first, x, keep)
            self.reservoir.update(first, self._sample_rows(raw, x), keep)
            for companion in self.companions:
                companion.update(first, x, keep)
        tally.rows_read += rows.shape[0]
        tally.seconds += time.perf_counter() - t0

    def _count_dropped(self, first: int, x: torch.Tensor) -> torch.Tensor | None:
        """Count the rows holding NaN/Inf (remembering the first's index); the finite mask."""
        ok = finite_rows(x)
        if ok is not None:
            if self.tally.first_dropped is None:
                self.tally.first_dropped = first + int(torch.nonzero(~ok)[0, 0])
            self.tally.dropped += int((~ok).sum())
        return ok

    def _work_rows(self, raw: torch.Tensor, hi: float) -> torch.Tensor:
        """``raw`` in the dtype its products are taken in: the work dtype, or float64 when
        the chunk's largest |x| is outside :data:`FLOAT32_SAFE` (its float32 squares would
        over/underflow). A conversion goes into a buffer reused from chunk to chunk."""
        wide = self.dtype == torch.float64 or not FLOAT32_SAFE[0] <= hi <= FLOAT32_SAFE[1]
        dtype = torch.float64 if wide else self.dtype
        self.tally.narrow = self.tally.narrow or not wide
        if raw.dtype == dtype:
            return raw
        buf = self._convert
        if buf is None or buf.dtype != dtype or buf.shape[0] < raw.shape[0] \
                or buf.shape[1:] != raw.shape[1:] or buf.device != raw.device:
            buf = torch.empty(raw.shape, dtype=dtype, device=raw.device)
            self._convert = buf
        return buf[: raw.shape[0]].copy_(raw)

    def _sample_rows(self, raw: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """The rows offered to the sample: in :attr:`sample_dtype` (float32 for float32/16
        files at the default precision, so ER entropy takes its float32 symmetric path), in
        float64 only when the chunk itself had to be (values beyond :data:`FLOAT32_SAFE`)
        or when the sample dtype is float64 anyway."""
        if x.dtype == self.sample_dtype or x.dtype != self.dtype:  # (promoted: never narrow)
            return x
        return raw  # the reservoir copies only the rows it keeps, in its dtype

    def _track_magnitude(self, x: torch.Tensor) -> None:
        if x.numel():
            self.tally.max_abs = max(self.tally.max_abs, float(x.abs().max()))

    def _check_magnitude(self) -> None:
        lo, hi = FLOAT64_SAFE
        max_abs = self.tally.max_abs
        if max_abs > hi:
            raise InputError(f"has values up to {max_abs:.3g}, too large for float64 "
                             "statistics (metrics use up to 4th powers of x)", source=self.label,
                             hint=f"rescale the embeddings so that every |x| is below {hi:g}")
        if 0 < max_abs < lo:
            raise InputError(f"has values no larger than {max_abs:.3g}, too small for "
                             "float64 statistics (metrics use up to 4th powers of x)",
                             source=self.label, hint="rescale the embeddings so that the "
                             f"largest |x| is above {lo:g}")

    def _fold(self, first: int, x: torch.Tensor, keep: torch.Tensor | None) -> None:
        if self.blocks is not None:  # the total is the blocks' merge, built in finish()
            self.blocks.update(first, x, keep, x.dtype)
        else:
            self.moments.update(x if keep is None else x[keep], x.dtype)

    def finish(self) -> Accumulated:
        """Check what was read (NaN/Inf policy, enough rows, magnitudes) and return the
        statistics."""
        if self.blocks is not None:
            self.moments = self.blocks.total()
        tally = self.tally
        if tally.dropped and self.opts.nan == "error":
            raise InputError(f"has {tally.dropped} row(s) containing NaN or Inf "
                             f"(first at row {tally.first_dropped})", source=self.label,
                             hint="clean the data, or pass --nan drop to skip them")
        if self.moments.n < 2:
            raise InputError(f"has {self.moments.n} usable row(s); at least 2 are needed",
                             source=self.label, hint="check the data or the NaN policy")
        self._check_magnitude()
        return Accumulated(self.moments, self.reservoir, tally.rows_read, tally.dropped,
                           tally.seconds, list(tally.notes), blocks=self.blocks,
                           precision=self.precision, extras=self.extras())

    @property
    def precision(self) -> Precision:
        """The dtype the products were taken in (float32 if any chunk was), the longest
        product and the policy's reason (:mod:`reprdiag.precision`)."""
        dtype = torch.float32 if self.tally.narrow else torch.float64
        reason = self.reason
        if self.dtype != dtype:
            reason += "; every chunk's values were outside float32's safe range: float64"
        return Precision(dtype, max(self.tally.chunk_max, 1), reason)

    # -- merging: what processes exchange (:mod:`reprdiag.distributed.context`) -------------
    @property
    def d(self) -> int:
        """The input's width."""
        return self.moments.d

    @property
    def rows_kept(self) -> int:
        """Rows folded into the statistics so far (those read, less the dropped ones)."""
        return self.moments.n if self.blocks is None else sum(self.blocks.sizes)

    def extras(self) -> dict[str, Any]:
        """The companions' statistics, by name (``classes``, ``pair``)."""
        if self._extras is not None:
            return dict(self._extras)
        return {c.name: c.result() for c in self.companions}

    def statistics(self) -> dict[str, Mergeable]:
        """Every mergeable statistic of the pass, by name: ``moments`` (the
        :class:`BlockedMoments` with ``--uncertainty``) and the companions'. Each follows
        :mod:`reprdiag.stats.state`, so passes over disjoint rows merge by adding states."""
        return {"moments": self.blocks if self.blocks is not None else self.moments,
                **self.extras()}

    def merged(self, tally: Tally, statistics: dict[str, Mergeable],
               reservoir: Reservoir) -> Accumulator:
        """An accumulator like this one holding the given whole-input parts (what a merge
        of several passes produced); :meth:`finish` then checks and returns them. This one
        is left as it is (a monitor's cumulative window goes on from it)."""
        out = copy.copy(self)
        out.tally, out.reservoir = tally, reservoir
        stats = dict(statistics)
        moments = stats.pop("moments")
        if self.blocks is not None:
            out.blocks = moments
        else:
            out.moments = moments
        out.companions, out._extras = [], stats
        return out


def _max_abs(x: torch.Tensor) -> float:
    """max |x| over the chunk in one ``aminmax`` pass (no temporary of the chunk's size);
    NaN or inf when the chunk holds NaN or Inf; 0 for an empty chunk.

    >>> _max_abs(torch.tensor([[0.5, -3.0]])), _max_abs(torch.tensor([[1.0, float("nan")]]))
    (3.0, nan)
    """
    if x.numel() == 0:
        return 0.0
    lo, hi = torch.aminmax(x)
    lo, hi = torch.stack([lo, hi]).tolist() if x.is_floating_point() else (int(lo), int(hi))
    return math.nan if math.isnan(lo) or math.isnan(hi) else float(max(-lo, hi))


def _finite_range(x: torch.Tensor) -> tuple[float, float]:
    """(smallest, largest) finite non-zero |x|, or (inf, 0) when there is none.

    One pass in the chunk's own dtype (|x| is exact in every float format); NaN/Inf are
    judged by the NaN scan.

    >>> _finite_range(torch.tensor([[0.0, -3.0], [float("nan"), 0.5]]))
    (0.5, 3.0)
    """
    mags = (x if x.is_floating_point() else x.to(torch.float64)).abs()
    mags = mags[torch.isfinite(mags) & (mags > 0)]
    if mags.numel() == 0:
        return math.inf, 0.0
    return float(mags.min()), float(mags.max())


def is_out_of_memory(exc: BaseException) -> bool:
    """Whether ``exc`` is a device out-of-memory (``torch.OutOfMemoryError`` or the
    allocator's RuntimeError), not some other failure."""
    if isinstance(exc, torch.OutOfMemoryError | MemoryError):
        return True
    text = str(exc).lower()
    return isinstance(exc, RuntimeError) and ("out of memory" in text
                                              or "can't allocate memory" in text)


def release_device_memory() -> None:
    """Return cached blocks to the device after an out-of-memory."""
    if torch.cuda.is_available():
        with contextlib.suppress(RuntimeError):
            torch.cuda.empty_cache()


def feed(acc: Accumulator, source: ArraySource, opts: StreamOptions,
         progress: Progress | None = None,
         ranges: Sequence[tuple[int, int]] | None = None,
         chunk_rows: int | None = None) -> None:
    """Stream rows of ``source`` into ``acc``: all of them, or the global row ``ranges``
    (one process's share under ``torchrun``). Row indices stay global."""
    ranges = [(0, source.shape[0])] if ranges is None else ranges
    rows_per_chunk = chunk_rows or chunk_rows_for(acc.moments.d, opts)
    if progress:
        progress.start(source.label, sum(b - a for a, b in ranges))
    try:
        for start, stop in ranges:
            chunks = source.iter_chunks(rows_per_chunk, start, stop)
            for first, rows in prefetch(chunks, acc.device):
                acc.add(first, rows)
                if progress:
                    progress.advance(rows.shape[0])
    finally:
        if progress:
            progress.finish()


def _one_pass(source: ArraySource, opts: StreamOptions, chunk_rows: int,
              progress: Progress | None,
              companions: Callable[[torch.device], Sequence[Companion]] | None = None
              ) -> Accumulated:
    acc = Accumulator(source.shape[1], source.dtype, opts, source.label, source.shape[0])
    if companions is not None:  # fresh ones for every pass (an out-of-memory retry starts over)
        acc.companions = list(companions(acc.device))
    t0 = time.perf_counter()
    feed(acc, source, opts, progress, chunk_rows=chunk_rows)
    result = acc.finish()
    result.seconds = time.perf_counter() - t0
    return result


def with_oom_fallback(run: Callable[[StreamOptions, int], T], opts: StreamOptions,
                      chunk_rows: int, label: str, notes: list[str], *,
                      step: str | None = None) -> T:
    """Call ``run(opts, chunk_rows)``; on a device out-of-memory halve the chunk size and call
    it again from scratch, down to :data:`MIN_CHUNK_ROWS`, then once more on the CPU.

    Each retry starts over (``run`` builds fresh state), so no row is counted twice. What was
    done is appended to ``notes``. An out-of-memory on the CPU is a :class:`ResourceError`.
    ``step`` names work without chunks to shrink (the pipeline's ``"spectra"``): it moves to
    the CPU at once. This is the one out-of-memory fallback (the pass, and the spectra).
    """
    while True:
        try:
            return run(opts, chunk_rows)
        except (torch.OutOfMemoryError, MemoryError, RuntimeError) as exc:
            if not is_out_of_memory(exc):
                raise
            release_device_memory()
            if step is None and chunk_rows > MIN_CHUNK_ROWS:
                notes.append(f"out of memory on {opts.device} with {chunk_rows} rows per "
                             f"chunk; retried with {chunk_rows // 2}")
                chunk_rows //= 2
            elif opts.device.type != "cpu":
                notes.append(f"out of memory on {opts.device} even with {chunk_rows} rows "
                             "per chunk; fell back to the CPU (slower)" if step is None else
                             f"out of memory on {opts.device} in the {step}; computed them "
                             "on the CPU")
                opts = replace(opts, device=torch.device("cpu"))
            elif step is None:
                raise ResourceError("out of memory on the CPU", source=label,
                                    hint="use a smaller --sample-size or --chunk-size, or "
                                    "a machine with more memory") from exc
            else:
                raise ResourceError(f"out of memory on the CPU while computing the {step}",
                                    source=label, hint="use a smaller --sample-size, or a "
                                    "machine with more memory") from exc


def accumulate(source: ArraySource, opts: StreamOptions,
               progress: Progress | None = None,
               companions: Callable[[torch.device], Sequence[Companion]] | None = None
               ) -> Accumulated:
    """Stream ``source`` once into moments and a row sample (again after an out-of-memory,
    see :func:`with_oom_fallback`); ``companions(device)``, when given, builds the statistics
    streamed beside them (labels, a paired view) for each pass."""
    _, d = check_shape(source)
    notes: list[str] = []
    result = with_oom_fallback(
        lambda o, rows: _one_pass(source, o, rows, progress, companions), opts,
        chunk_rows_for(d, opts), source.label, notes)
    result.notes = notes + result.notes
    return result

