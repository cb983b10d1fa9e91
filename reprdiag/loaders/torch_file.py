"""PyTorch ``.pt``/``.pth`` files: a tensor, or (nested) dicts/lists of tensors.

Loaded with ``weights_only=True`` (no code from the file ever runs) and ``mmap=True`` where the
file is in the zip format, so tensors are paged in as rows are read.
"""

from __future__ import annotations

import pickle
import warnings
from collections.abc import Iterator
from pathlib import Path

import torch
from safetensors import SafetensorError

from reprdiag.errors import InputError, source_label
from reprdiag.loaders.base import ArraySource, TensorSource


def _walk(obj: object, prefix: str = "") -> Iterator[tuple[str, torch.Tensor]]:
    if isinstance(obj, torch.Tensor):
        yield prefix or "tensor", obj
    elif isinstance(obj, dict):
        for k, v in obj.items():
            yield from _walk(v, f"{prefix}.{k}" if prefix else str(k))
    elif isinstance(obj, list | tuple):
        for i, v in enumerate(obj):
            yield from _walk(v, f"{prefix}.{i}" if prefix else str(i))


def _load(path: Path) -> object:
    with warnings.catch_warnings():  # a sparse tensor is refused with our own message
        warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
        try:
            return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as exc:
            if "mmap" not in str(exc):
                raise
            return torch.load(path, map_location="cpu", weights_only=True)


def refusal_reason(exc: BaseException) -> str:
    r"""The line of torch's weights-only refusal that names what was refused.

    >>> refusal_reason(Exception("Weights only load failed. Re-running ...\n\nTrying to load "
    ...                          "unsupported GLOBAL posix.system whose module posix is blocked."))
    'Trying to load unsupported GLOBAL posix.system whose module posix is blocked'
    """
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    for line in lines:
        if "unsupported" in line.lower() or "WeightsUnpickler" in line:
            return line.rstrip(".")[:200]
    return (lines[-1] if lines else type(exc).__name__)[:200]


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:160] if text else type(exc).__name__


def open_torch(path: Path) -> list[ArraySource]:
    label = source_label(path)
    try:
        obj = _load(path)
    except pickle.UnpicklingError as exc:
        raise InputError("holds pickled objects that torch.load(weights_only=True) refuses "
                         f"to load ({refusal_reason(exc)}) - nothing in it was run",
                         source=label, hint="save plain tensors or a dict of tensors "
                         "(reprdiag never unpickles arbitrary objects)") from exc
    except (RuntimeError, EOFError, OSError, ValueError, SafetensorError) as exc:
        raise InputError(f"is not a readable PyTorch file ({_first_line(exc)})",
                         source=label, hint="check that the file was fully written") from exc
    sources: list[ArraySource] = []
    for key, tensor in _walk(obj):
        src = TensorSource(tensor, key)
        src.path = path
        sources.append(src)
    return sources
