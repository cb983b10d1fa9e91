"""The source protocol every loader implements, and the sources built on top of it.

A source is a lazily read array of shape ``(N, ...)``. Reading is by row range, so a file is
never loaded whole: :meth:`ArraySource.read` returns rows ``[start, stop)`` as a CPU tensor.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch

from reprdiag.errors import InputError, ReprdiagError, UsageError, check_choice, source_label

POOL_METHODS = ("mean", "first", "flatten", "spatial")

_NUMPY_WIDEN = {np.dtype("uint16"): np.int32, np.dtype("uint32"): np.int64,
                np.dtype("uint64"): np.float64, np.dtype("bool"): np.uint8}


def numpy_to_tensor(array: np.ndarray, label: str) -> torch.Tensor:
    """Convert a numeric numpy array (possibly memory-mapped) to a CPU tensor.

    Dtypes torch cannot hold (unsigned wider than 8 bits, bool) are widened first; object,
    string and complex arrays are refused.
    """
    if array.dtype.kind not in "biuf":
        raise InputError(f"has dtype {array.dtype}, which is not numeric", source=label,
                         hint="store embeddings as float or integer arrays")
    if array.dtype in _NUMPY_WIDEN:
        array = array.astype(_NUMPY_WIDEN[array.dtype])
    return torch.from_numpy(np.array(array, order="C", copy=True))  # mmap pages are read-only


@contextmanager
def untrusted(label: str, what: str, hint: str = "the file is corrupt or truncated; rewrite it"
              ) -> Iterator[None]:
    """Turn any exception a third-party parser raises on an untrusted file into one
    :class:`InputError` naming the file (our own errors, interrupts and out-of-memory pass)."""
    try:
        yield
    except (ReprdiagError, MemoryError):
        raise
    except Exception as exc:
        text = " ".join(str(exc).split())[:160] or "no detail"
        raise InputError(f"{what} ({type(exc).__name__}: {text})", source=label,
                         hint=hint) from exc


class ArraySource(ABC):
    """A lazily read array of rows: a tensor in a file, or one in memory."""

    path: Path | None
    key: str | None

    @property
    @abstractmethod
    def shape(self) -> tuple[int, ...]:
        """Full shape, first axis = rows."""

    @property
    @abstractmethod
    def dtype(self) -> str:
        """Storage dtype name, e.g. ``float32`` or ``bfloat16``."""

    @abstractmethod
    def read(self, start: int, stop: int) -> torch.Tensor:
        """Rows ``[start, stop)`` as a CPU tensor."""

    @property
    def layout(self) -> str:
        """``strided`` for a dense array; a sparse tensor's layout (``sparse_coo``...)."""
        return "strided"

    @property
    def label(self) -> str:
        """``FILE[KEY]``, the name used in tables and error messages."""
        return source_label(self.path if self.path is not None else "<tensor>", self.key)

    @property
    def file_size(self) -> int | None:
        if self.path is None or not Path(self.path).is_file():
            return None
        return Path(self.path).stat().st_size

    def iter_chunks(self, chunk_rows: int, start: int = 0,
                    stop: int | None = None) -> Iterator[tuple[int, torch.Tensor]]:
        """Yield ``(first_row_index, rows)`` pairs covering ``[start, stop)``."""
        stop = self.shape[0] if stop is None else stop
        for lo in range(start, stop, max(1, chunk_rows)):
            hi = min(stop, lo + chunk_rows)
            yield lo, self.read(lo, hi)


class FileArraySource(ArraySource):
    """A named array inside a file whose shape and dtype were read from its header."""

    def __init__(self, path: Path, key: str, shape: tuple[int, ...], dtype: str):
        self.path, self.key = path, key
        self._shape, self._dtype = shape, dtype

    @property
    def shape(self) -> tuple[int, ...]:
        return self._shape

    @property
    def dtype(self) -> str:
        return self._dtype


class TensorSource(ArraySource):
    """An in-memory tensor or numpy array (what ``reprdiag.analyze(tensor)`` reads)."""

    def __init__(self, data: torch.Tensor | np.ndarray, name: str = "tensor"):
        self._data = data if isinstance(data, torch.Tensor) else numpy_to_tensor(
            np.asarray(data), name)
        self.path = None
        self.key = name

    @property
    def label(self) -> str:
        return super().label if self.path is not None else (self.key or "tensor")

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self._data.shape)

    @property
    def dtype(self) -> str:
        return str(self._data.dtype).removeprefix("torch.")

    @property
    def layout(self) -> str:
        return str(self._data.layout).removeprefix("torch.")

    def read(self, start: int, stop: int) -> torch.Tensor:
        return self._data[start:stop]


def checked_dtype(source: ArraySource) -> ArraySource:
    """Refuse what would be analyzed wrongly or not at all, and widen what torch cannot
    compute with: complex values (their imaginary part would be dropped silently) and sparse
    tensors are refused; float8 rows are read as float32 (exactly: every float8 value is a
    float32 value)."""
    name = source.dtype.lower()
    if name.startswith("complex") or name in ("c64", "c128", "c32"):
        raise InputError(f"holds complex values (dtype {source.dtype}), whose imaginary part "
                         "would be lost", source=source.label,
                         hint="pass torch.view_as_real(x).flatten(1) to analyze both parts as "
                         "features, or x.real / x.abs()")
    if source.layout != "strided":
        raise InputError(f"is a sparse tensor (layout {source.layout})", source=source.label,
                         hint="convert it with .to_dense() before saving or analyzing it")
    if name.startswith(("float8", "f8_")):
        return CastSource(source, torch.float32)
    return source


class DerivedSource(ArraySource):
    """A source that reads another one and transforms its rows; the name, stored dtype and
    file are the inner source's."""

    def __init__(self, inner: ArraySource):
        self.inner = inner
        self.path, self.key = inner.path, inner.key

    @property
    def label(self) -> str:
        return self.inner.label

    @property
    def shape(self) -> tuple[int, ...]:
        return self.inner.shape

    @property
    def dtype(self) -> str:
        return self.inner.dtype

    @property
    def file_size(self) -> int | None:
        return self.inner.file_size


class CastSource(DerivedSource):
    """A source whose rows are converted to ``dtype`` as they are read (float8 → float32);
    :attr:`dtype` still names the stored dtype."""

    def __init__(self, inner: ArraySource, dtype: torch.dtype):
        super().__init__(inner)
        self.cast = dtype

    def read(self, start: int, stop: int) -> torch.Tensor:
        return self.inner.read(start, stop).to(self.cast)


def check_pool(method: str | None) -> None:
    """Refuse a pool method that is not one of :data:`POOL_METHODS`."""
    if method is not None:
        check_choice(method, POOL_METHODS, "pool method")


def pool_method(shape: Sequence[int], pool: str | None, problem: str, source: str,
                note: str = "") -> str | None:
    """How an array of ``shape`` (two axes or more) becomes rows × features, the one rule of a
    file's arrays (:func:`reprdiag.loaders.as_rows`) and a model layer's outputs: ``None``
    for 2-D (already rows), else ``pool``, by default ``mean`` for 3-D (tokens of a
    sequence); 4-D and more need an explicit ``pool`` (:class:`InputError` saying
    ``problem`` about ``source``, ``note`` added to the hint).

    >>> pool_method((5, 3), None, "", "x"), pool_method((5, 7, 3), None, "", "x")
    (None, 'mean')
    >>> pool_method((5, 2, 4, 4), None, "is 4-D", "x.npy")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    reprdiag.errors.InputError: x.npy: is 4-D; pick a reduction with --pool mean|first|...
    """
    if len(shape) == 2:
        return None
    if pool is None and len(shape) > 3:
        raise InputError(problem, source=source,
                         hint=f"pick a reduction with --pool {'|'.join(POOL_METHODS)}{note}")
    return pool or "mean"


def pool_rows(rows: torch.Tensor, method: str) -> torch.Tensor:
    """Reduce an ``(n, ..., d)`` block to ``(n, d')``.

    ``mean`` averages over every axis but the first and last; ``first`` takes index 0 of each
    middle axis (the CLS token of a ``batch × tokens × d`` array); ``flatten`` keeps every value,
    ``(n, prod(rest))``; ``spatial`` averages every axis after the second, ``(n, C, H, W)`` →
    ``(n, C)`` (global average pooling of a convolutional feature map).

    >>> pool_rows(torch.arange(12.).reshape(2, 3, 2), "mean").tolist()
    [[2.0, 3.0], [8.0, 9.0]]
    >>> pool_rows(torch.arange(12.).reshape(2, 3, 2), "first").tolist()
    [[0.0, 1.0], [6.0, 7.0]]
    >>> pool_rows(torch.arange(12.).reshape(2, 3, 2), "spatial").tolist()
    [[0.5, 2.5, 4.5], [6.5, 8.5, 10.5]]
    """
    if method == "flatten":
        return rows.reshape(rows.shape[0], -1)
    middle = tuple(range(1, rows.ndim - 1))
    if method in ("mean", "spatial"):
        if not rows.is_floating_point():
            rows = rows.to(torch.float64)
        return rows.mean(dim=middle if method == "mean" else tuple(range(2, rows.ndim)))
    if method == "first":
        return rows[(slice(None), *([0] * len(middle)))]
    check_pool(method)
    raise AssertionError(method)


class PooledSource(DerivedSource):
    """A source of more than two axes seen through :func:`pool_rows`."""

    def __init__(self, inner: ArraySource, method: str):
        check_pool(method)
        super().__init__(inner)
        self.method = method

    @property
    def shape(self) -> tuple[int, ...]:
        n, *rest = self.inner.shape
        width = {"flatten": int(np.prod(rest)), "spatial": rest[0]}.get(self.method, rest[-1])
        return (n, width)

    def read(self, start: int, stop: int) -> torch.Tensor:
        return pool_rows(self.inner.read(start, stop), self.method)


class ConcatSource(ArraySource):
    """Row shards of one dataset, read one after the other (``--concat``)."""

    def __init__(self, parts: Sequence[ArraySource]):
        if not parts:
            raise UsageError("--concat needs at least one input")
        widths = {p.shape[1:] for p in parts}
        if len(widths) != 1:
            detail = ", ".join(f"{p.label} {tuple(p.shape)}" for p in parts)
            raise InputError(f"shards differ in width: {detail}", source=parts[0].label,
                             hint="--concat needs the same key and width in every file")
        self.parts = list(parts)
        self.path, self.key = parts[0].path, parts[0].key
        self._offsets = np.cumsum([0] + [p.shape[0] for p in parts])

    @property
    def label(self) -> str:
        return f"{self.parts[0].label} (+{len(self.parts) - 1} shards)" if len(
            self.parts) > 1 else self.parts[0].label

    @property
    def shape(self) -> tuple[int, ...]:
        return (int(self._offsets[-1]), *self.parts[0].shape[1:])

    @property
    def dtype(self) -> str:
        kinds = sorted({p.dtype for p in self.parts})
        return kinds[0] if len(kinds) == 1 else "+".join(kinds)

    @property
    def file_size(self) -> int | None:
        sizes = [p.file_size for p in self.parts]
        return None if None in sizes else int(sum(s for s in sizes if s is not None))

    def read(self, start: int, stop: int) -> torch.Tensor:
        pieces = []
        for part, lo in zip(self.parts, self._offsets[:-1], strict=False):
            hi = lo + part.shape[0]
            if hi <= start or lo >= stop:
                continue
            pieces.append(part.read(max(start, lo) - lo, min(stop, hi) - lo))
        return torch.cat(pieces) if len(pieces) > 1 else pieces[0]

    def iter_chunks(self, chunk_rows: int, start: int = 0,
                    stop: int | None = None) -> Iterator[tuple[int, torch.Tensor]]:
        """Chunks never straddle shards, so each file is read sequentially."""
        stop = self.shape[0] if stop is None else stop
        for part, lo in zip(self.parts, self._offsets[:-1], strict=False):
            hi = lo + part.shape[0]
            a, b = max(start, lo), min(stop, hi)
            if a < b:
                for first, rows in part.iter_chunks(chunk_rows, int(a - lo), int(b - lo)):
                    yield int(lo) + first, rows
