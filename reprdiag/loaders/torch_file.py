"""PyTorch ``.pt``/``.pth`` files: a tensor, or (nested) dicts/lists of tensors.

Loaded with ``weights_only=True`` (no code from the file ever runs) and ``mmap=True`` where the
file is in the zip format, so tensors are paged in as rows are read.
"""

from __future__ import annotations

import pickle
import re
import warnings
from collections.abc import Iterator
from pathlib import Path

import torch
from safetensors import SafetensorError

from reprdiag.errors import InputError, first_line, source_label
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
    r"""What torch's weights-only unpickler refused, without torch's advice around it (which
    suggests reloading with ``weights_only=False`` or filing an issue with torch).

    >>> refusal_reason(Exception("Weights only load failed. Re-running ...\n\nTrying to load "
    ...                          "unsupported GLOBAL posix.system whose module posix is blocked."))
    'Trying to load unsupported GLOBAL posix.system whose module posix is blocked'
    >>> refusal_reason(Exception("... WeightsUnpickler error: Unsupported global: GLOBAL "
    ...                          "__main__.Q was not an allowed global by default. Please use"))
    'unsupported global __main__.Q'
    >>> refusal_reason(Exception("Weights only load failed. ...\nPlease file an issue with the "
    ...                          "following ...: WeightsUnpickler error: \n\nUnsupported "
    ...                          "operand 130\n\nCheck the documentation of torch.load ..."))
    'Unsupported operand 130'
    """
    text = str(exc)
    found = re.search(r"GLOBAL (\S+) was not an allowed global", text)
    if found:
        return f"unsupported global {found.group(1)}"
    found = re.search(r"Trying to load unsupported GLOBAL \S+ whose module \S+ is blocked", text)
    if found:
        return found.group(0)
    detail = text.split("WeightsUnpickler error:", 1)[-1]
    torch_advice = ("Weights only load failed", "Please file an issue", "Check the documentation")
    lines = [ln.strip() for ln in detail.splitlines()
             if ln.strip() and not ln.strip().startswith(torch_advice)]
    return (lines[0] if lines else type(exc).__name__).rstrip(".")[:200]


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
        raise InputError(f"is not a readable PyTorch file ({first_line(exc, 160)})",
                         source=label, hint="check that the file was fully written") from exc
    sources: list[ArraySource] = []
    for key, tensor in _walk(obj):
        src = TensorSource(tensor, key)
        src.path = path
        sources.append(src)
    return sources
