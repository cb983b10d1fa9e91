"""DATA → batches: a tensor file, a folder of them, a text file, or ``package.module:function``.

A tensor file is read by row ranges through the embedding loaders (any supported format;
``--data-key`` picks the array when there are several); a folder's files are row shards read
in name order. A function returns a ``Dataset`` (batched with ``--batch-size``), a tensor, a
list of texts, or an iterable of ready batches (used as they come). ``--limit N`` stops after
the first N examples, cutting the last batch.

Under ``torchrun`` each rank runs the model on its share of the batches
(:func:`assigned`): data with random access and a known length (tensor files and folders, a
tensor, a list of texts, a sized ``Dataset``, a text file) gives each rank a contiguous run
of whole batches, read alone; an iterable of ready batches is dealt round-robin, and every
rank loads every batch (only its own go through the model).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

from reprdiag.distributed.split import share_rows
from reprdiag.errors import InputError, ReprdiagError, UsageError, source_label
from reprdiag.loaders import (
    ArraySource,
    ConcatSource,
    TensorSource,
    list_arrays,
    select_arrays,
)
from reprdiag.models.load import call_user, first_line, import_object, is_object_spec
from reprdiag.models.probes import Batch


@dataclass(frozen=True)
class DataSpec:
    """What ``--data``, ``--data-key``, ``--batch-size`` and ``--limit`` say."""

    spec: str
    key: str | None = None
    batch_size: int = 64
    limit: int | None = None

    def validate(self) -> None:
        if self.batch_size < 1:
            raise UsageError(f"--batch-size must be at least 1, got {self.batch_size}")
        if self.limit is not None and self.limit < 1:
            raise UsageError(f"--limit must be at least 1, got {self.limit}")


@dataclass(frozen=True)
class RowAccess:
    """Random access to a dataset of known length.

    ``read(a, b)`` yields the batches of examples ``[a, b)``; when ``a`` starts a batch of
    the one-process run they are the same batches (see :func:`share_rows`).
    """

    segments: tuple[int, ...]
    batch_size: int
    read: Callable[[int, int], Iterable[Batch]]

    def limited(self, limit: int | None) -> RowAccess:
        """The first ``limit`` examples only (segments cut where the limit falls).

        >>> RowAccess((60, 40), 32, list).limited(75).segments
        (60, 15)
        """
        if limit is None:
            return self
        starts = itertools.accumulate(self.segments, initial=0)
        cut = (min(n, limit - lo) for n, lo in zip(self.segments, starts, strict=False))
        return replace(self, segments=tuple(n for n in cut if n > 0))


@dataclass
class Batches:
    """An iterable of batches with a name and, when known, how many batches there are.

    ``items`` is what one process iterates. ``access`` (when the data allows it, with
    ``--limit`` applied) reads any run of whole batches alone, so ranks can split the data.
    ``rows`` is the number of examples before ``--limit`` when known in advance, ``source``
    the array read when the data is one (a tensor file or folder, a function's tensor): what
    a row-aligned ``--labels``/``--pair`` is checked against and looks its keys up in.
    """

    label: str
    items: Iterable[Batch]
    total: int | None = None
    access: RowAccess | None = None
    rows: int | None = None
    source: ArraySource | None = None

    def __iter__(self) -> Iterator[Batch]:
        return iter(self.items)


def assigned(batches: Batches, rank: int = 0, world_size: int = 1
             ) -> tuple[Iterator[tuple[int, Batch]], int | None]:
    """This rank's batches as ``(global index of the first example, batch)``, and how many.

    One process iterates every batch. Under ``world_size`` ranks, data with random access
    gives each rank the contiguous run of whole batches :func:`share_rows` names (only those
    are loaded); other iterables are dealt round-robin, batch i to rank i mod ``world_size``:
    every rank loads every batch (counting its examples, so indices stay global).

    >>> data = Batches("x", [torch.zeros(3, 1), torch.zeros(2, 1), torch.zeros(4, 1)], 3)
    >>> mine, total = assigned(data, rank=1, world_size=2)
    >>> [(first, len(b)) for first, b in mine], total
    ([(3, 2)], 1)
    >>> rows = torch.arange(9.0).reshape(9, 1)
    >>> data.access = RowAccess((9,), 3, lambda a, b: rows[a:b].split(3))
    >>> mine, total = assigned(data, rank=1, world_size=2)
    >>> [(first, b.flatten().tolist()) for first, b in mine], total
    ([(3, [3.0, 4.0, 5.0]), (6, [6.0, 7.0, 8.0])], 2)
    """
    access = batches.access
    if world_size > 1 and access is not None:
        share = share_rows(access.segments, access.batch_size, rank, world_size)
        items = access.read(share.start, share.stop) if share.batches else ()
        return _numbered(items, share.start, 0, 1), share.batches
    total = None if batches.total is None else len(range(rank, batches.total, world_size))
    return _numbered(batches.items, 0, rank, world_size), total


def _numbered(items: Iterable[Batch], first: int, rank: int, world_size: int
              ) -> Iterator[tuple[int, Batch]]:
    """Batch i of ``items`` with its first example's index, for i mod ``world_size`` = rank."""
    for i, batch in enumerate(items):
        if i % world_size == rank:
            yield first, batch
        first += examples(batch)


def examples(batch: Batch) -> int:
    """Number of examples in a batch (its first tensor's first axis, or its texts).

    >>> examples((torch.zeros(5, 3), torch.zeros(5))), examples(["a", "b"])
    (5, 2)
    """
    if isinstance(batch, torch.Tensor):
        return int(batch.shape[0]) if batch.ndim else 1
    if isinstance(batch, Mapping):
        return examples(next(iter(batch.values())))
    if isinstance(batch, list | tuple) and batch:
        return len(batch) if isinstance(batch[0], str) else examples(batch[0])
    raise InputError(f"a batch of type {type(batch).__name__} is not understood",
                     hint="yield tensors, (inputs, labels) tuples, dicts of tensors or texts")


def batch_labels(batch: Batch, key: str | None, data: str) -> torch.Tensor:
    """The class ids a batch carries, on the CPU: ``key=None`` takes a tuple's second item or
    a dict's ``labels`` (else ``label``) entry, a ``key`` that entry of a dict batch.

    >>> batch_labels((torch.zeros(2, 3), torch.tensor([4, 5])), None, "d").tolist()
    [4, 5]
    >>> batch_labels({"x": torch.zeros(2, 3), "y": [1, 0]}, "y", "d").tolist()
    [1, 0]
    >>> batch_labels(torch.zeros(2, 3), None, "d")
    Traceback (most recent call last):
    reprdiag.errors.InputError: d: its batches are tensors, which carry no labels; yield \
(inputs, labels) tuples or dicts with a 'labels' entry, or pass --labels PATH[:KEY]
    """
    hint = ("yield (inputs, labels) tuples or dicts with a 'labels' entry, or pass --labels "
            "PATH[:KEY]")
    if isinstance(batch, Mapping):
        names = [key] if key else ["labels", "label"]
        found = next((n for n in names if n in batch), None)
        if found is None:
            wanted = " or ".join(repr(n) for n in names)
            raise InputError(f"its batches have no {wanted} entry (they hold "
                             f"{', '.join(map(repr, batch))})", source=data, hint=hint)
        value = batch[found]
    elif isinstance(batch, list | tuple) and len(batch) > 1 and not isinstance(batch[0], str):
        if key is not None:
            raise InputError(f"--labels {key!r} names a dict entry, but its batches are "
                             "tuples", source=data, hint="pass --labels batch to take their "
                             "second item")
        value = batch[1]
    else:
        kind = ("tensors" if isinstance(batch, torch.Tensor) else "texts" if isinstance(
            batch, list) else f"{type(batch).__name__} objects")
        raise InputError(f"its batches are {kind}, which carry no labels", source=data,
                         hint=hint)
    return torch.as_tensor(value).cpu()


def take(batch: Batch, k: int) -> Batch:
    """The first ``k`` examples of a batch."""
    if isinstance(batch, torch.Tensor):
        return batch[:k]
    if isinstance(batch, Mapping):
        return {name: take(v, k) for name, v in batch.items()}
    if isinstance(batch, list | tuple) and batch and isinstance(batch[0], str):
        return batch[:k]
    return type(batch)(take(v, k) for v in batch)


def to_device(batch: Batch, device: torch.device, float_dtype: torch.dtype | None) -> Batch:
    """Move every tensor of a batch to ``device``; floating ones take the model's dtype."""
    if isinstance(batch, torch.Tensor):
        dtype = float_dtype if float_dtype is not None and batch.is_floating_point() else None
        return batch.to(device=device, dtype=dtype)
    if isinstance(batch, Mapping):
        return {k: to_device(v, device, float_dtype) for k, v in batch.items()}
    if isinstance(batch, list | tuple):
        return type(batch)(to_device(v, device, float_dtype) for v in batch)
    return batch


def limited(batches: Iterable[Batch], limit: int | None) -> Iterator[Batch]:
    """Batches up to ``limit`` examples in all (the last one cut)."""
    seen = 0
    for batch in batches:
        if limit is not None and seen >= limit:
            return
        n = examples(batch)
        if limit is not None and seen + n > limit:
            batch, n = take(batch, limit - seen), limit - seen
        seen += n
        yield batch


def _pick(arrays: list[ArraySource], key: str | None, path: Path) -> ArraySource:
    if key is not None:
        return select_arrays(arrays, [key], path)[0]
    if len(arrays) != 1:
        keys = ", ".join(a.key or "?" for a in arrays[:20])
        raise UsageError(f"holds {len(arrays)} arrays ({keys or 'none'})",
                         source=source_label(path), hint="pick the inputs with --data-key")
    return arrays[0]


def tensor_source(path: Path, key: str | None) -> ArraySource:
    """The input array of a tensor file, or of every file of a folder joined as shards."""
    if not path.is_dir():
        return _pick(list_arrays(path), key, path)
    files = sorted(p for p in path.iterdir() if p.is_file() and not p.name.startswith("."))
    if not files:
        raise InputError("is an empty folder", source=source_label(path),
                         hint="put tensor files (safetensors, npy, ...) in it")
    return ConcatSource([_pick(list_arrays(f), key, f) for f in files])


def _source_batches(source: ArraySource, data: DataSpec) -> Batches:
    n = source.shape[0] if data.limit is None else min(source.shape[0], data.limit)

    def read(start: int, stop: int) -> Iterator[torch.Tensor]:
        return (rows for _, rows in source.iter_chunks(data.batch_size, start, stop))

    sizes = ([p.shape[0] for p in source.parts] if isinstance(source, ConcatSource)
             else [source.shape[0]])  # ConcatSource's chunks restart at each shard
    access = RowAccess(tuple(sizes), data.batch_size, read).limited(n)
    return Batches(source.label, read(0, n), math.ceil(n / data.batch_size), access,
                   source.shape[0], source)


def _text_batches(path: Path, data: DataSpec) -> Batches:
    if not path.is_file():
        raise InputError("no such text file", source=source_label(path),
                         hint="hf: models read text, one example per line")

    def lines(start: int = 0, stop: int | None = None) -> Iterator[str]:
        with open(path, encoding="utf-8") as fh:
            texts = (line.rstrip("\n") for line in fh if line.strip())
            yield from itertools.islice(texts, start, stop)

    n = sum(1 for _ in lines())
    access = RowAccess((n,), data.batch_size,
                       lambda a, b: _chunked(lines(a, b), data.batch_size))
    return Batches(str(path), _chunked(lines(), data.batch_size),
                   math.ceil(n / data.batch_size), access, n)


def _chunked(items: Iterable[Any], size: int) -> Iterator[list[Any]]:
    it = iter(items)
    while chunk := list(itertools.islice(it, size)):
        yield chunk


def _texts(texts: list[str], data: DataSpec) -> Batches:
    access = RowAccess((len(texts),), data.batch_size,
                       lambda a, b: _chunked(texts[a:b], data.batch_size))
    return Batches(data.spec, _chunked(texts, data.batch_size),
                   math.ceil(len(texts) / data.batch_size), access, len(texts))


def _dataset(dataset: torch.utils.data.Dataset, data: DataSpec) -> Batches:
    def read(start: int, stop: int) -> Iterable[Batch]:
        subset = torch.utils.data.Subset(dataset, range(start, stop))
        return _guarded(torch.utils.data.DataLoader(subset, batch_size=data.batch_size),
                        data.spec)

    loader = torch.utils.data.DataLoader(dataset, batch_size=data.batch_size)
    access = RowAccess((len(dataset),), data.batch_size, read)  # type: ignore[arg-type]
    return Batches(data.spec, _guarded(loader, data.spec), len(loader), access,
                   len(dataset))  # type: ignore[arg-type]


def _guarded(items: Iterable[Batch], spec: str) -> Iterator[Batch]:
    """``items``, with an exception raised while loading a batch turned into a one-line
    :class:`InputError` that names the data function."""
    it = iter(items)
    while True:
        try:
            batch = next(it)
        except StopIteration:
            return
        except ReprdiagError:
            raise
        except Exception as exc:
            raise InputError(f"loading a batch raised {type(exc).__name__}: "
                             f"{first_line(exc, empty='(no message)')}", source=spec,
                             hint="fix the data function or its dataset") from exc
        yield batch


def _object_batches(data: DataSpec) -> Batches:
    fn = import_object(data.spec, "data function")
    result = call_user(data.spec, fn, "data function")
    if isinstance(result, torch.Tensor):
        return _source_batches(TensorSource(result, data.spec), data)
    if isinstance(result, list) and result and isinstance(result[0], str):
        return _texts(result, data)
    if isinstance(result, torch.utils.data.Dataset) and hasattr(result, "__len__"):
        return _dataset(result, data)
    if isinstance(result, Iterable) and not isinstance(result, str | bytes | Mapping):
        total = len(result) if hasattr(result, "__len__") and data.limit is None else None
        # ready batches: --batch-size does not apply, and ranks deal them round-robin
        return Batches(data.spec, _guarded(result, data.spec), total)
    raise InputError(f"returned {type(result).__name__}", source=data.spec,
                     hint="return a Dataset, a tensor, a list of texts or an iterable of batches")


def open_data(data: DataSpec, text: bool = False) -> Batches:
    """Batches of ``data`` (``text``: a text file, one example per line), ``--limit`` applied."""
    data.validate()
    if is_object_spec(data.spec):
        batches = _object_batches(data)
    elif text:
        batches = _text_batches(Path(data.spec), data)
    else:
        batches = _source_batches(tensor_source(Path(data.spec), data.key), data)
    if data.limit is not None:
        total = None if batches.total is None else min(
            batches.total, math.ceil(data.limit / data.batch_size))
        access = None if batches.access is None else batches.access.limited(data.limit)
        batches = replace(batches, items=limited(batches.items, data.limit), total=total,
                          access=access)
    return batches
