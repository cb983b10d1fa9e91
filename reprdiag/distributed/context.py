"""Many processes, one analysis: the process group, the merge, and agreement on errors.

Under ``torchrun`` every rank opens the same inputs, reads only its share of the rows
(:meth:`DistributedContext.split`, :mod:`reprdiag.distributed.split`), streams them into its
own :class:`~reprdiag.engine.Accumulator`, and :meth:`DistributedContext.merge` combines the
ranks without looking inside a statistic:

* every statistic of the pass (the moments, or the jackknife's blocked moments; class moments
  with ``--labels``; cross-moments with ``--pair``) follows :mod:`reprdiag.stats.state`: the
  ranks exchange their small frames (shift, class ids), each re-expresses its statistic in the
  common frame (the first rank with rows, i.e. rank 0's first-chunk shift, as one process
  would have), and the state tensors are summed with ``all_reduce``
  (:meth:`DistributedContext.reduce`);
* row sample: the bottom-k sample keyed by hash(seed, global row index) is the bottom-k of
  the union of the ranks' bottom-k samples, so the ranks first agree on the k-th smallest
  priority and then gather only the rows below it.

Both give the single-process result: the sample exactly, the statistics up to float64
rounding. Before any collective the ranks agree on errors (:meth:`DistributedContext.agree`):
a rank that hits bad input makes every rank raise the same error instead of hanging.
Cost: one pass over N/W rows per rank, then O(d²) all_reduce traffic (K·d² with K jackknife
blocks, C·d(+C·d²) with C classes, (d+d')² with a pair) and O(W·k + k·d) gather.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import timedelta
from typing import Any, TypeVar

import torch
import torch.distributed as dist

from reprdiag import errors
from reprdiag.distributed.split import Ranges, even_slices, split_source
from reprdiag.engine import (
    Accumulated,
    Accumulator,
    Companion,
    Progress,
    StreamOptions,
    Tally,
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
from reprdiag.loaders import ArraySource
from reprdiag.stats import Frame, Mergeable, Reservoir, sample_threshold
from reprdiag.stats.blocked import memory_budget

BACKENDS = ("auto", "nccl", "gloo")
TIMEOUT_ENV = "REPRDIAG_DIST_TIMEOUT"  # seconds a rank waits for the others (default 1800)
DEFAULT_TIMEOUT_S = 1800.0
#: state tensors are summed in flat buckets of at most this many bytes (fewer collectives)
BUCKET_BYTES = 64 * 2**20

T = TypeVar("T")
M = TypeVar("M", bound=Mergeable)
Companions = Callable[[torch.device], Sequence[Companion]]


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


# -- the context -----------------------------------------------------------------------------
@dataclass
class _Summary:
    """One rank's account of its pass over an input, gathered by every rank before the
    merge: what the input is, the rank's :class:`~reprdiag.engine.Tally` (notes marked with
    the rank), the frame of every statistic and the priorities of its row sample."""

    label: str
    d: int
    tally: Tally
    frames: dict[str, Frame]
    priorities: torch.Tensor | None

    @classmethod
    def of(cls, acc: Accumulator, rank: int) -> _Summary:
        tally = replace(acc.tally, notes=[f"rank {rank}: {n}" for n in acc.tally.notes])
        prio = acc.reservoir.priority
        return cls(acc.label, acc.d, tally,
                   {name: s.frame() for name, s in acc.statistics().items()},
                   None if prio is None else prio.cpu())


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
            raise ResourceError(f"cannot join the process group ({errors.first_line(exc)})",
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
                                f"({errors.first_line(exc)})", hint=f"a rank died or took longer "
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
                   progress: Progress | None = None,
                   companions: Companions | None = None) -> Accumulator:
        """Stream this rank's rows of ``source`` into a fresh :class:`Accumulator`, keeping
        global row indices (``companions(device)``, when given, builds the statistics
        streamed beside the moments: labels, a paired view). No checks: :meth:`merge` runs
        them on the whole. A device out-of-memory restarts this rank's pass with smaller
        chunks, then on the CPU (:func:`reprdiag.engine.with_oom_fallback`); the tally's
        notes say so."""
        ranges, notes = self.split(source), []

        def one_pass(o: StreamOptions, chunk_rows: int) -> Accumulator:
            acc = Accumulator(source.shape[1], source.dtype, o, source.label, source.shape[0])
            if companions is not None:  # fresh ones for every pass
                acc.companions = list(companions(acc.device))
            feed(acc, source, o, progress, ranges, chunk_rows)
            return acc

        acc = with_oom_fallback(one_pass, opts, chunk_rows_for(source.shape[1], opts),
                                source.label, notes)
        acc.tally.notes = notes
        return acc

    def merge(self, acc: Accumulator) -> Accumulated:
        """Combine every rank's accumulator of one input; each rank gets the whole result
        (``acc`` itself is left as it is).

        Every statistic of :meth:`Accumulator.statistics` is summed through
        :meth:`reduce`, the row samples through :meth:`gather_sample`. Raises on every rank
        what :meth:`Accumulator.finish` raises for the whole input (NaN rows under
        ``--nan error``, fewer than 2 rows, magnitudes float64 cannot hold).
        """
        summaries = self.all_gather(_Summary.of(acc, self.rank))
        with alike():
            _check_same_input(summaries)
        statistics = {name: self.reduce(stat, [s.frames[name] for s in summaries])
                      for name, stat in acc.statistics().items()}
        sample = self.gather_sample(acc.reservoir, [s.priorities for s in summaries],
                                    acc.device)
        whole = acc.merged(Tally.combined([s.tally for s in summaries]), statistics, sample)
        with alike():
            return whole.finish()

    def reduce(self, stat: M, frames: Sequence[Frame] | None = None) -> M:
        """The statistic of every rank's rows (:mod:`reprdiag.stats.state`): the ranks'
        frames (gathered unless given, in rank order) give the common frame, each rank's
        state in it is summed with ``all_reduce``. ``stat`` is left as it is. A collective."""
        frames = self.all_gather(stat.frame()) if frames is None else frames
        frame = stat.common_frame(frames)
        return stat.with_state(frame, self.all_reduce(stat.state(frame)))

    def all_reduce(self, tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Every rank's ``tensors`` (the same names, shapes and dtypes) summed, on their own
        devices; in flat buckets of one dtype up to :data:`BUCKET_BYTES`. The dict is
        emptied as its buckets are packed (the tensors themselves are not changed), so a
        state made for the merge is freed as it goes: beside the statistic, the merge holds
        about one copy of it (e.g. of K jackknife blocks), plus a bucket. A collective."""
        names = list(tensors)
        layout = {k: (t.shape, t.device, t.numel()) for k, t in tensors.items()}
        out: dict[str, torch.Tensor] = {}
        for bucket in list(_buckets(tensors)):
            flat = torch.cat([tensors.pop(k).reshape(-1).to(self.reduce_device)
                              for k in bucket])
            with self._collective("summing the statistics"):
                dist.all_reduce(flat, op=dist.ReduceOp.SUM, group=self.group)
            parts = flat.split([layout[k][2] for k in bucket])
            for k, part in zip(bucket, parts, strict=True):
                out[k] = part.reshape(layout[k][0]).to(layout[k][1])
        return {k: out[k] for k in names}

    def gather_sample(self, local: Reservoir, priorities: Sequence[torch.Tensor | None],
                      device: torch.device) -> Reservoir:
        """The bottom-k sample of every rank's rows: each rank sends only its rows below the
        k-th smallest of all ``priorities`` (every rank's, in rank order). A collective."""
        part = local.below(sample_threshold(list(priorities), local.capacity)).to("cpu")
        merged = Reservoir(local.capacity, local.seed, dtype=local.dtype)
        for other in self.all_gather(part):
            merged.merge(other)
        return merged.to(device) if merged.rows is not None else merged

    # ---- the whole local phase of analyze ----
    def accumulate_each(self, open_inputs: Callable[[], list[ArraySource]],
                        opts: StreamOptions, progress: Progress | None = None,
                        check: Callable[[ArraySource], object] | None = None,
                        stream_for: Callable[[ArraySource], StreamOptions] | None = None,
                        companions_for: Callable[[ArraySource], Companions | None] | None = None
                        ) -> Iterator[tuple[ArraySource, Accumulated]]:
        """Open the inputs, then for each: stream this rank's rows, agree on errors, merge.

        Yields ``(source, whole-input Accumulated)`` one input at a time, so only one
        input's statistics are held. ``check`` runs on each source before any reading
        (e.g. a shape check) and must fail the same way on every rank. ``stream_for`` gives
        an input its own options (jackknife blocks fitted to :meth:`memory_budget`, so that
        every rank holds the same K); ``companions_for`` what it streams beside its moments
        (``--labels``, ``--pair``; resolved under :meth:`agree`).
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
                extra = companions_for(source) if companions_for else None
                acc = self.accumulate(source, mine, progress if self.rank == 0 else None,
                                      extra)
            yield source, self.merge(acc)


def refuse_in_memory(inputs: object) -> None:
    """Tensors in memory differ per process, so ranks cannot split them: files only."""
    items = inputs if isinstance(inputs, list | tuple) else [inputs]
    if any(hasattr(item, "shape") for item in items):
        raise on_all_ranks(UsageError(
            "in-memory tensors cannot be split across torchrun ranks",
            hint="pass embedding files, or distributed=False to analyze on each rank alone"))


def _check_same_input(summaries: list[_Summary]) -> None:
    seen = {(s.label, s.d, tuple(s.frames)) for s in summaries}
    if len(seen) > 1:
        detail = ", ".join(f"rank {i}: {s.label} (d={s.d}, {', '.join(s.frames)})"
                           for i, s in enumerate(summaries))
        raise InputError(f"the ranks disagree about the input: {detail}",
                         hint="every rank must see the same files, keys and options")


def _buckets(tensors: dict[str, torch.Tensor]) -> Iterator[list[str]]:
    """Names of ``tensors`` in groups of one dtype, each at most :data:`BUCKET_BYTES` (or
    one tensor), in a fixed order (every rank must form the same groups).

    >>> t = {"a": torch.zeros(2), "n": torch.zeros((), dtype=torch.int64), "b": torch.zeros(3)}
    >>> list(_buckets(t))
    [['a', 'b'], ['n']]
    """
    by_dtype: dict[torch.dtype, list[str]] = {}
    for name, t in tensors.items():
        by_dtype.setdefault(t.dtype, []).append(name)
    for names in by_dtype.values():
        bucket: list[str] = []
        size = 0
        for name in names:
            nbytes = tensors[name].numel() * tensors[name].element_size()
            if bucket and size + nbytes > BUCKET_BYTES:
                yield bucket
                bucket, size = [], 0
            bucket.append(name)
            size += nbytes
        if bucket:
            yield bucket


