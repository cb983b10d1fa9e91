"""DATA → batches: a tensor file, a folder of them, a text file, or ``package.module:function``.

A tensor file is read by row ranges through the embedding loaders (any supported format;
``--data-key`` picks the array when there are several); a folder's files are row shards read
in name order. A function returns a ``Dataset`` (batched with ``--batch-size``), a tensor, a
list of texts, or an iterable of ready batches (used as they come). ``--limit N`` stops after
the first N examples, cutting the last batch.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from reprdiag.checkpoint.load import call_user, import_object, is_object_spec
from reprdiag.checkpoint.probes import Batch
from reprdiag.errors import InputError, UsageError, source_label
from reprdiag.loaders import (
    ArraySource,
    ConcatSource,
    TensorSource,
    list_arrays,
    select_arrays,
)


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


@dataclass
class Batches:
    """An iterable of batches with a name and, when known, how many batches there are."""

    label: str
    items: Iterable[Batch]
    total: int | None = None

    def __iter__(self) -> Iterator[Batch]:
        return iter(self.items)


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
    chunks = (rows for _, rows in source.iter_chunks(data.batch_size, 0, n))
    return Batches(source.label, chunks, math.ceil(n / data.batch_size))


def _text_batches(path: Path, data: DataSpec) -> Batches:
    if not path.is_file():
        raise InputError("no such text file", source=source_label(path),
                         hint="hf: models read text, one example per line")

    def lines() -> Iterator[str]:
        with open(path, encoding="utf-8") as fh:
            yield from (line.rstrip("\n") for line in fh if line.strip())

    return Batches(str(path), _chunked(lines(), data.batch_size))


def _chunked(items: Iterable[Any], size: int) -> Iterator[list[Any]]:
    it = iter(items)
    while chunk := list(itertools.islice(it, size)):
        yield chunk


def _object_batches(data: DataSpec) -> Batches:
    fn = import_object(data.spec, "data function")
    result = call_user(data.spec, fn, "data function")
    if isinstance(result, torch.Tensor):
        return _source_batches(TensorSource(result, data.spec), data)
    if isinstance(result, list) and result and isinstance(result[0], str):
        return Batches(data.spec, _chunked(result, data.batch_size),
                       math.ceil(len(result) / data.batch_size))
    if isinstance(result, torch.utils.data.Dataset) and hasattr(result, "__len__"):
        loader = torch.utils.data.DataLoader(result, batch_size=data.batch_size)
        return Batches(data.spec, loader, len(loader))
    if isinstance(result, Iterable) and not isinstance(result, str | bytes | Mapping):
        total = len(result) if hasattr(result, "__len__") and data.limit is None else None
        return Batches(data.spec, result, total)  # ready batches: --batch-size does not apply
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
        batches = Batches(batches.label, limited(batches.items, data.limit), total)
    return batches
