"""Device selection (``auto`` picks cuda, then mps, then cpu; an explicit device must exist)
and running independent CPU work side by side on torch's threads."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import TypeVar

import torch

from reprdiag.errors import UsageError

T = TypeVar("T")


def resolve_device(spec: str | torch.device = "auto") -> torch.device:
    """Turn ``auto|cpu|cuda|cuda:N|mps`` into an available :class:`torch.device`.

    Asking for a device that is not there is an error, never a silent CPU run.

    >>> resolve_device("cpu")
    device(type='cpu')
    """
    if isinstance(spec, torch.device):
        spec = str(spec)
    spec = spec.strip().lower()
    if spec == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(spec)
    except RuntimeError as exc:
        raise UsageError(f"unknown device {spec!r}",
                         hint="use auto, cpu, cuda, cuda:N or mps") from exc
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise UsageError(f"device {spec!r} was asked for but no CUDA GPU is available",
                             hint="use --device cpu or auto")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise UsageError(f"device {spec!r} does not exist "
                             f"({torch.cuda.device_count()} GPU(s) visible)",
                             hint="pick an index below the GPU count")
    elif device.type == "mps":
        if not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
            raise UsageError("device 'mps' was asked for but is not available",
                             hint="use --device cpu or auto")
    elif device.type != "cpu":
        raise UsageError(f"unsupported device {spec!r}", hint="use auto, cpu, cuda, cuda:N or mps")
    return device


def describe(device: torch.device) -> str:
    """A human name for the report: the GPU model, or ``cpu``."""
    if device.type == "cuda":
        return f"{device} ({torch.cuda.get_device_name(device)})"
    return str(device)


@contextmanager
def torch_threads(count: int) -> Iterator[None]:
    """torch's CPU thread count set to ``count`` inside the block, restored after.

    >>> before = torch.get_num_threads()
    >>> with torch_threads(1):
    ...     torch.get_num_threads()
    1
    >>> torch.get_num_threads() == before
    True
    """
    before = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def serial_map(f: Callable[[int], T], count: int) -> list[T]:
    """``[f(0), …, f(count − 1)]`` in this process, one after the other."""
    return [f(i) for i in range(count)]


def threaded_map(f: Callable[[int], T], count: int) -> list[T]:
    """``[f(0), …, f(count − 1)]`` side by side on torch's CPU threads, each call's torch work
    on one thread (torch's count restored after); one after the other with one thread or one
    call. Results in call order, as :func:`serial_map`'s.

    For independent pieces whose own work barely spreads over threads (d×d eigensolves run
    on one thread anyway, see :func:`reprdiag.spectrum.solve_threads`): side by side they keep
    every core busy. torch releases the GIL in its kernels.

    >>> threaded_map(lambda i: i * i, 4)
    [0, 1, 4, 9]
    """
    workers = min(torch.get_num_threads(), count)
    if workers < 2:
        return serial_map(f, count)
    with torch_threads(1), ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(f, range(count)))
