"""Many processes, one analysis: split the rows over ``torchrun`` ranks and merge exactly.

Under ``torchrun`` every rank opens the same inputs, reads only its share of the rows
(:meth:`DistributedContext.split`: whole shards when there are at least as many shards as
ranks and they group evenly, else a slice of every shard), streams them into its own
:class:`Accumulator`, and :meth:`DistributedContext.merge` combines the ranks:

* moments: each rank re-expresses its float64 sums about one common shift (the first rank
  with rows, i.e. rank 0's first-chunk mean) and the sums are added with ``all_reduce``;
* row sample: the bottom-k sample keyed by hash(seed, global row index) is the bottom-k of
  the union of the ranks' bottom-k samples, so the ranks first agree on the k-th smallest
  priority (an ``all_gather`` of k integers each) and then gather only the rows below it.

Both give the single-process result: the sample exactly, the moments up to float64
rounding. Before any collective the ranks agree on errors (:meth:`DistributedContext.agree`):
a rank that hits bad input makes every rank raise the same error instead of hanging.
Cost: one pass over N/W rows per rank, then O(d²) all_reduce traffic and O(W·k + k·d) gather.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, TypeVar

import torch
import torch.distributed as dist

from reprdiag import errors
from reprdiag.device import resolve_device
from reprdiag.engine import (
    Accumulated,
    Accumulator,
    Progress,
    StreamOptions,
    chunk_rows_for,
    feed,
    with_oom_fallback,
)
from reprdiag.errors import (
    InputError,
    ReprdiagError,
    ResourceError,
    UsageError,
    check_choice,
)
from reprdiag.loaders import ArraySource, ConcatSource
from reprdiag.stats import Reservoir, StreamingMoments
from reprdiag.stats.blocked import memory_budget

BACKENDS = ("auto", "nccl", "gloo")
#: Whole shards go to ranks only when the busiest rank reads at most this × N/W rows (e.g.
#: 10 equal shards on 8 ranks would give two ranks twice the rows: row ranges instead).
SHARD_SLACK = 1.1
TIMEOUT_ENV = "REPRDIAG_DIST_TIMEOUT"  # seconds a rank waits for the others (default 1800)
DEFAULT_TIMEOUT_S = 1800.0

T = TypeVar("T")
Ranges = list[tuple[int, int]]


# -- splitting (pure functions) -------------------------------------------------------------
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


# -- what ranks exchange -------------------------------------------------------------------
@dataclass
class _Failure:
    """An exception in a form every rank can rebuild (exception objects may not pickle)."""

    rank: int
    kind: str
    message: str
    problem: str | None = None
    source: str | None = None
    hint: str | None = None

    @classmethod
    def of(cls, exc: BaseException, rank: int) -> _Failure:
        if isinstance(exc, ReprdiagError):
            return cls(rank, type(exc).__name__, exc.one_line(), exc.problem, exc.source,
                       exc.hint)
        return cls(rank, type(exc).__name__, str(exc))

    def rebuild(self) -> BaseException:
        """The same error on another rank: the same class and message for reprdiag's own
        errors, so every rank exits with the same code."""
        if self.problem is not None:
            cls = getattr(errors, self.kind, ReprdiagError)
            if not (isinstance(cls, type) and issubclass(cls, ReprdiagError)):
                cls = ReprdiagError
            return cls(self.problem, source=self.source, hint=self.hint)
        if self.kind == "MemoryError":
            return MemoryError(self.message)
        return RuntimeError(f"rank {self.rank} failed with {self.kind}: {self.message}")


@dataclass
class _Share:
    """One rank's summary of its accumulator, gathered by every rank before the merge."""

    label: str
    d: int
    n: int
    n_zero: int
    shift: torch.Tensor | None
    priorities: torch.Tensor | None
    seen: int
    bad_count: int
    bad_first: int | None
    rows_read: int
    seconds: float
    blocks: list[tuple[int, int]] | None = None  # (rows, zero rows) per jackknife block
    notes: list[str] | None = None  # what this rank's pass fell back to
    chunk_max: int = 0  # the longest product and whether any was float32 (the error floor)
    narrow: bool = False

    @classmethod
    def of(cls, acc: Accumulator) -> _Share:
        r = acc.reservoir
        if acc.blocks is None:
            m = acc.moments
            n, n_zero, shift, blocks = m.n, m.n_zero, m.shift, None
        else:  # the blocks share one shift; their totals are summed in finish(), not here
            blocks = [(p.n, p.n_zero) for p in acc.blocks.parts]
            n, n_zero = (sum(c) for c in zip(*blocks, strict=True))
            shift = acc.blocks.parts[0].shift
        return cls(acc.label, acc.moments.d, n, n_zero,
                   None if shift is None else shift.detach().cpu(),
                   None if r.priority is None else r.priority.cpu(), r.seen, acc.bad.count,
                   acc.bad.first, acc.rows_read, acc.seconds, blocks, list(acc.notes),
                   acc.chunk_max, acc.narrow)


def sample_threshold(priorities: Sequence[torch.Tensor | None], capacity: int) -> int | None:
    """The largest priority the merged bottom-k sample keeps (``None``: keep every row).

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


def common_shift(shares: Sequence[_Share], d: int) -> torch.Tensor:
    """The shift every rank's moments are re-expressed about: that of the first rank with
    rows (rank 0's first-chunk mean, the single process's shift), else zero."""
    for share in shares:
        if share.n > 0 and share.shift is not None:
            return share.shift.to(torch.float64)
    return torch.zeros(d, dtype=torch.float64)


# -- the context -----------------------------------------------------------------------------
def check_backend(backend: str) -> None:
    """Refuse a backend name that is not one of :data:`BACKENDS`."""
    check_choice(backend, BACKENDS, "backend")


def timeout_seconds() -> float:
    """How long a rank waits for the others at a collective (``$REPRDIAG_DIST_TIMEOUT``)."""
    raw = os.environ.get(TIMEOUT_ENV, "")
    try:
        value = float(raw) if raw else DEFAULT_TIMEOUT_S
    except ValueError as exc:
        raise UsageError(f"{TIMEOUT_ENV}={raw!r} is not a number of seconds") from exc
    if value <= 0:
        raise UsageError(f"{TIMEOUT_ENV} must be positive, got {raw}")
    return value


def on_all_ranks(exc: BaseException) -> BaseException:
    """Mark an error every rank raises alike, so ranks > 0 need not print it too."""
    exc.all_ranks = True  # type: ignore[attr-defined]
    return exc


@contextmanager
def alike() -> Iterator[None]:
    """For work on data every rank gathered: its errors are alike on all ranks, so they are
    marked :func:`on_all_ranks` (raised everywhere, printed by rank 0) without an exchange."""
    try:
        yield
    except ReprdiagError as exc:
        raise on_all_ranks(exc) from None


def printed_by_rank0(exc: BaseException) -> bool:
    """True on a rank > 0 for an error rank 0 raises (and prints) as well."""
    return bool(getattr(exc, "all_ranks", False)) and not is_main_process()


def is_main_process() -> bool:
    """True unless this is a ``torchrun`` worker of rank > 0 (which stays quiet)."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank() == 0
    return not launched() or os.environ.get("RANK", "0") == "0"


def launched() -> bool:
    """True in a process started by ``torchrun`` (``torch.distributed.run``)."""
    return dist.is_available() and dist.is_torchelastic_launched()


def local_device(device: torch.device) -> torch.device:
    """A rank's compute device: a bare ``cuda`` becomes ``cuda:LOCAL_RANK`` (modulo the GPUs
    visible), so the ranks of one node use different GPUs."""
    if device.type == "cuda" and device.index is None:
        local = int(os.environ.get("LOCAL_RANK", "0"))
        device = torch.device("cuda", local % max(torch.cuda.device_count(), 1))
    if device.type == "cuda":
        torch.cuda.set_device(device)
    return device


class DistributedContext:
    """One analysis spread over the ranks of a process group.

    Producers of chunks (files, a model run over a dataset) use it in three steps::

        with ctx.agree():                        # every rank raises the first rank's error
            acc = ctx.accumulate(source, opts)   # or: Accumulator + acc.add(global_first, rows)
        result = ctx.merge(acc)                  # the whole-dataset Accumulated, on every rank

    ``split``/``split_rows`` say which rows a rank reads; ``merge`` is a collective, so every
    rank must call it the same number of times in the same order.
    """

    def __init__(self, device: torch.device, group: Any = None, owns_group: bool = False):
        self.group = group
        self.rank = dist.get_rank(group)
        self.world_size = dist.get_world_size(group)
        self.device = device
        self.owns_group = owns_group
        self.backend = str(dist.get_backend(group))
        kinds = self.all_gather(device.type)
        self.reduce_device = (device if "nccl" in self.backend and set(kinds) == {"cuda"}
                              else torch.device("cpu"))

    # ---- creation ----
    @classmethod
    def from_env(cls, device: torch.device, backend: str = "auto") -> DistributedContext:
        """Join the process group ``torchrun`` describes in the environment (NCCL for CUDA
        tensors when this rank computes on a GPU, gloo for everything else)."""
        check_backend(backend)
        device = local_device(device)
        use_nccl = device.type == "cuda" and dist.is_nccl_available() and backend != "gloo"
        if backend == "nccl" and not use_nccl:
            raise UsageError("--backend nccl needs a CUDA GPU and a torch built with NCCL on "
                             "every rank", hint="use --backend gloo or auto")
        spec = "cpu:gloo,cuda:nccl" if use_nccl else "gloo"
        try:
            dist.init_process_group(spec, timeout=timedelta(seconds=timeout_seconds()))
        except (RuntimeError, ValueError, OSError) as exc:
            raise ResourceError(f"cannot join the process group ({_first_line(exc)})",
                                hint="check torchrun's --rdzv-endpoint/--master-addr and "
                                "that every node can reach it") from exc
        ctx = cls(device, owns_group=True)
        if backend == "nccl" and ctx.reduce_device.type != "cuda":
            ctx.close()
            raise UsageError("--backend nccl needs a CUDA GPU on every rank",
                             hint="use --backend gloo or auto")
        return ctx

    def close(self) -> None:
        """Leave the process group if this context created it."""
        if self.owns_group and dist.is_initialized():
            dist.destroy_process_group()
            self.owns_group = False

    # ---- splitting ----
    def split(self, source: ArraySource) -> Ranges:
        """This rank's global row ranges of ``source`` (see :func:`split_source`)."""
        return split_source(source, self.rank, self.world_size)

    def split_rows(self, n: int) -> tuple[int, int]:
        """This rank's contiguous share ``[start, stop)`` of ``n`` rows (e.g. of a dataset)."""
        return even_slices(n, self.world_size)[self.rank]

    # ---- collectives ----
    def all_gather(self, obj: T) -> list[T]:
        """Every rank's ``obj`` (picklable; tensors must be on the CPU), in rank order."""
        out: list[Any] = [None] * self.world_size
        with self._collective("exchange"):
            dist.all_gather_object(out, obj, group=self.group)
        return out

    @contextmanager
    def _collective(self, what: str) -> Iterator[None]:
        try:
            yield
        except RuntimeError as exc:  # dist.DistError and gloo/NCCL timeouts included
            raise ResourceError(f"rank {self.rank}: {what} with the other ranks failed "
                                f"({_first_line(exc)})", hint=f"a rank died or took longer "
                                f"than ${TIMEOUT_ENV} seconds; see the other ranks' logs"
                                ) from exc

    @contextmanager
    def agree(self) -> Iterator[None]:
        """Run a rank's local work; if any rank raised, every rank raises the first error.

        This is itself a collective: every rank must enter and leave it. An error that is
        already raised on every rank (``all_ranks``, e.g. from :meth:`map_blocks` inside) is
        passed on without another exchange.
        """
        mine: BaseException | None = None
        try:
            yield
        except Exception as exc:
            if getattr(exc, "all_ranks", False):
                raise
            mine = exc
        self._settle(mine, None)

    def _settle(self, mine: BaseException | None, result: T) -> list[T]:
        """Exchange ``(failure, result)`` with every rank: every rank's result, or on every
        rank the first rank's failure. The one payload shape of :meth:`agree` and
        :meth:`map_blocks`, so a rank that failed before a ``map_blocks`` (and waits in
        ``agree``) still pairs with the others' exchange."""
        payload = self.all_gather((None if mine is None else _Failure.of(mine, self.rank),
                                   result))
        first = next((f for f, _ in payload if f is not None), None)
        if first is None:
            return [r for _, r in payload]
        if mine is not None and first.rank == self.rank:
            raise on_all_ranks(mine)
        raise on_all_ranks(first.rebuild())

    def map_blocks(self, f: Callable[[int], T], count: int) -> list[T]:
        """``[f(0), …, f(count − 1)]`` with call i made on rank i mod W, then gathered (the
        results must pickle); a failure on any rank is raised on every rank. One collective:
        call it on every rank alike (e.g. the jackknife's K blocks, K/W per rank)."""
        mine: dict[int, T] = {}
        failure: BaseException | None = None
        try:
            for i in range(self.rank, count, self.world_size):
                mine[i] = f(i)
        except Exception as exc:
            failure = exc
        merged = {i: v for part in self._settle(failure, mine) for i, v in part.items()}
        return [merged[i] for i in range(count)]

    def memory_budget(self) -> int:
        """The smallest of the ranks' memory budgets for jackknife blocks
        (:func:`reprdiag.stats.blocked.memory_budget`): blocks fitted to it give every rank the
        same K. A collective."""
        return min(self.all_gather(memory_budget(self.device)))

    # ---- accumulating ----
    def accumulate(self, source: ArraySource, opts: StreamOptions,
                   progress: Progress | None = None) -> Accumulator:
        """Stream this rank's rows of ``source`` into a fresh :class:`Accumulator`, keeping
        global row indices. No checks: :meth:`merge` runs them on the whole. A device
        out-of-memory restarts this rank's pass with smaller chunks, then on the CPU
        (:func:`reprdiag.engine.with_oom_fallback`); ``acc.notes`` says so."""
        ranges, notes = self.split(source), []

        def one_pass(o: StreamOptions, chunk_rows: int) -> Accumulator:
            acc = Accumulator(source.shape[1], source.dtype, o, source.label, source.shape[0])
            feed(acc, source, o, progress, ranges, chunk_rows)
            return acc

        acc = with_oom_fallback(one_pass, opts, chunk_rows_for(source.shape[1], opts),
                                source.label, notes)
        acc.notes = notes
        return acc

    def merge(self, acc: Accumulator) -> Accumulated:
        """Combine every rank's accumulator of one input; each rank gets the whole result.

        Raises on every rank what :meth:`Accumulator.finish` raises for the whole input
        (NaN rows under ``--nan error``, fewer than 2 rows).
        """
        shares = self.all_gather(_Share.of(acc))
        with alike():
            _check_same_input(shares)
        shift = common_shift(shares, acc.moments.d)
        if acc.blocks is not None:  # finish() totals the merged blocks
            counts = [tuple(map(sum, zip(*col, strict=True)))
                      for col in zip(*(s.blocks or [] for s in shares), strict=True)]
            acc.blocks.parts = [self._sum_about(part, shift, n, z, shares)
                                for part, (n, z) in zip(acc.blocks.parts, counts, strict=True)]
        else:
            acc.moments = self._sum_about(acc.moments, shift, sum(s.n for s in shares),
                                          sum(s.n_zero for s in shares), shares)
        acc.reservoir = self._gather_sample(acc.reservoir, shares, acc.device)
        acc.rows_read = sum(s.rows_read for s in shares)
        acc.bad.count = sum(s.bad_count for s in shares)
        firsts = [s.bad_first for s in shares if s.bad_first is not None]
        acc.bad.first = min(firsts) if firsts else None
        acc.chunk_max = max(s.chunk_max for s in shares)  # one error floor on every rank
        acc.narrow = any(s.narrow for s in shares)
        with alike():
            result = acc.finish()
        result.seconds = max(s.seconds for s in shares)
        result.notes = [f"rank {i}: {note}" for i, s in enumerate(shares)
                        for note in s.notes or []] + result.notes
        return result

    def _sum_about(self, local: StreamingMoments, shift: torch.Tensor, n: int, n_zero: int,
                   shares: list[_Share]) -> StreamingMoments:
        """Every rank's ``local`` moments (one input, or one jackknife block of it) summed
        about ``shift``; ``n``/``n_zero`` are the ranks' total row counts."""
        moved = local.rebased(shift.to(local.device))
        out = StreamingMoments(local.d, local.dtype, local.device, n=n, n_zero=n_zero,
                               shift=moved.shift if any(s.n for s in shares) else None)
        for name in ("sum_y", "sum_yy", "sum_z", "sum_zz"):
            total = getattr(moved, name).to(self.reduce_device)
            with self._collective("summing the moments"):
                dist.all_reduce(total, op=dist.ReduceOp.SUM, group=self.group)
            setattr(out, name, total.to(local.device))
        return out

    def _gather_sample(self, local: Reservoir, shares: list[_Share],
                       device: torch.device) -> Reservoir:
        limit = sample_threshold([s.priorities for s in shares], local.capacity)
        part = Reservoir(local.capacity, local.seed, seen=local.seen)
        if local.rows is not None:
            keep = (torch.ones_like(local.priority, dtype=torch.bool) if limit is None
                    else local.priority <= limit)
            part.rows, part.priority, part.index = (local.rows[keep].cpu(),
                                                    local.priority[keep].cpu(),
                                                    local.index[keep].cpu())
        merged = Reservoir(local.capacity, local.seed)
        for other in self.all_gather(part):
            merged.merge(other)
        if merged.rows is not None:
            merged.rows, merged.priority, merged.index = (merged.rows.to(device),
                                                          merged.priority.to(device),
                                                          merged.index.to(device))
        return merged

    # ---- the whole local phase of analyze ----
    def accumulate_each(self, open_inputs: Callable[[], list[ArraySource]],
                        opts: StreamOptions, progress: Progress | None = None,
                        check: Callable[[ArraySource], object] | None = None,
                        stream_for: Callable[[ArraySource], StreamOptions] | None = None
                        ) -> Iterator[tuple[ArraySource, Accumulated]]:
        """Open the inputs, then for each: stream this rank's rows, agree on errors, merge.

        Yields ``(source, whole-input Accumulated)`` one input at a time, so only one
        input's statistics are held. ``check`` runs on each source before any reading
        (e.g. a shape check) and must fail the same way on every rank. ``stream_for`` gives
        an input its own options (jackknife blocks fitted to :meth:`memory_budget`, so that
        every rank holds the same K).
        """
        with self.agree():
            sources = open_inputs()
            for source in sources:
                if check:
                    check(source)
        counts = self.all_gather(len(sources))
        if len(set(counts)) > 1:
            raise on_all_ranks(InputError(f"the ranks found different numbers of inputs: "
                                          f"{counts}", hint="every rank must see the same "
                                          "files and keys"))
        for source in sources:
            with self.agree():
                mine = stream_for(source) if stream_for else opts
                acc = self.accumulate(source, mine, progress if self.rank == 0 else None)
            yield source, self.merge(acc)


def refuse_in_memory(inputs: object) -> None:
    """Tensors in memory differ per process, so ranks cannot split them: files only."""
    items = inputs if isinstance(inputs, list | tuple) else [inputs]
    if any(hasattr(item, "shape") for item in items):
        raise on_all_ranks(UsageError(
            "in-memory tensors cannot be split across torchrun ranks",
            hint="pass embedding files, or distributed=False to analyze on each rank alone"))


def _check_same_input(shares: list[_Share]) -> None:
    seen = {(s.label, s.d) for s in shares}
    if len(seen) > 1:
        detail = ", ".join(f"rank {i}: {s.label} (d={s.d})" for i, s in enumerate(shares))
        raise InputError(f"the ranks disagree about the input: {detail}",
                         hint="every rank must see the same files and keys")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:300] if text else type(exc).__name__


@contextmanager
def session(device: torch.device, backend: str = "auto",
            distributed: bool | DistributedContext | None = None
            ) -> Iterator[DistributedContext | None]:
    """The context an analysis runs in, or ``None`` for a single process.

    ``distributed=None`` (default) joins the group ``torchrun`` describes when this process
    was launched by it and no process group exists yet (the CLI's case); ``True`` requires a
    group (an existing one is used as is); ``False`` never distributes; a
    :class:`DistributedContext` is used as given. ``backend`` is checked in every case.
    """
    check_backend(backend)
    if isinstance(distributed, DistributedContext):
        yield distributed
        return
    if distributed is False or not dist.is_available():
        yield None
        return
    if dist.is_initialized():
        yield DistributedContext(local_device(device)) if distributed else None
        return
    if not launched():
        if distributed:
            raise UsageError("distributed=True but this process was not started by torchrun",
                             hint="launch with torchrun, or pass distributed=False")
        yield None
        return
    ctx = DistributedContext.from_env(device, backend)
    try:
        yield ctx
    finally:
        ctx.close()


@contextmanager
def joined(options: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Analyze options whose analyses all run in one process group.

    ``compare`` and ``gate`` analyze several runs; under ``torchrun`` they join the group once
    (with ``options``' ``device``, ``backend`` and ``distributed``, as :func:`session`) and hand
    each :func:`reprdiag.analyze` call the same context, instead of joining and leaving it per
    run. Outside ``torchrun`` the options come back with ``distributed=False``.
    """
    given = options.get("distributed")
    if given is False or isinstance(given, DistributedContext):
        yield options
        return
    device = resolve_device(options.get("device", "auto"))
    with session(device, options.get("backend", "auto"), given) as ctx:
        yield {**options, "distributed": ctx if ctx is not None else False}
