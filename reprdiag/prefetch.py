"""Read-ahead for chunk streams: the next chunk is read while the current one is computed on.

:func:`prefetch` wraps any ``(first_row, rows)`` iterator (a loader's ``iter_chunks``). A
background thread pulls chunks from it, so file reads (page-cache copies, disk, HDF5
decompression) overlap the Gram products of the previous chunk. For a CUDA device the thread
also stages each chunk in pinned host memory and starts its host→device copy with
``non_blocking=True`` on a side stream; the consumer's stream waits on that copy's event, so
the copy of chunk k+1 overlaps the kernels of chunk k. Order and content of the chunks are
unchanged; at most ``depth`` chunks wait ahead, so memory stays O((depth + 1)·chunk).
"""

from __future__ import annotations

import itertools
import queue
import threading
from collections.abc import Iterator

import torch

Chunk = tuple[int, torch.Tensor]
MIN_PREFETCH_BYTES = 4 * 2**20  # smaller CPU chunks are read inline (see :func:`prefetch`)
_DONE = object()


class _Raised:
    """An exception raised by the producer, re-raised in the consumer."""

    def __init__(self, exc: BaseException):
        self.exc = exc


def _to_device(rows: torch.Tensor, device: torch.device,
               stream: torch.cuda.Stream | None) -> tuple[torch.Tensor, object]:
    """On CUDA: pinned staging + async copy on ``stream``; returns (tensor, event|None)."""
    if stream is None:
        return rows, None
    staged = rows if rows.is_pinned() else rows.pin_memory()
    with torch.cuda.stream(stream):
        moved = staged.to(device, non_blocking=True)
        done = torch.cuda.Event()
        done.record(stream)
    return moved, (done, staged)  # keep the pinned buffer alive until the copy is waited on


def _offer(out: queue.Queue, item: object, stop: threading.Event) -> bool:
    """Put ``item`` unless the consumer has left; False when it has."""
    while not stop.is_set():
        try:
            out.put(item, timeout=0.1)
            return True
        except queue.Full:
            continue
    return False


def _produce(chunks: Iterator[Chunk], out: queue.Queue, stop: threading.Event,
             device: torch.device, stream: torch.cuda.Stream | None) -> None:
    try:
        for first, rows in chunks:
            if not _offer(out, (first, *_to_device(rows, device, stream)), stop):
                return
        _offer(out, _DONE, stop)
    except BaseException as exc:  # handed to the consumer, which re-raises it
        _offer(out, _Raised(exc), stop)


def prefetch(chunks: Iterator[Chunk], device: torch.device | str = "cpu", depth: int = 1,
             min_bytes: int = MIN_PREFETCH_BYTES) -> Iterator[Chunk]:
    """Yield the chunks of ``chunks`` unchanged, reading up to ``depth`` chunks ahead.

    On a CUDA ``device`` the rows come back already on the device (copied asynchronously
    from pinned memory); elsewhere they are returned as read. Exceptions of the reader are
    re-raised here; leaving the loop early stops the reader thread. Off CUDA, when the first
    chunk is smaller than ``min_bytes`` no thread is started: handing a tiny chunk between
    threads (the GIL switch) costs more than the read it would hide.

    >>> [(first, rows.tolist()) for first, rows in prefetch(iter([(0, torch.ones(1)),
    ...                                                              (1, torch.zeros(1))]))]
    [(0, [1.0]), (1, [0.0])]
    """
    device = torch.device(device)
    chunks = iter(chunks)
    if device.type != "cuda":
        head = next(chunks, None)
        if head is None:
            return
        if head[1].nbytes < min_bytes:
            yield head
            yield from chunks
            return
        chunks = itertools.chain([head], chunks)
    stream = torch.cuda.Stream(device) if device.type == "cuda" else None
    out: queue.Queue = queue.Queue(maxsize=max(1, depth))
    stop = threading.Event()
    worker = threading.Thread(target=_produce, args=(chunks, out, stop, device, stream),
                              name="reprdiag-prefetch", daemon=True)
    worker.start()
    try:
        while True:
            item = out.get()
            if item is _DONE:
                return
            if isinstance(item, _Raised):
                raise item.exc
            first, rows, pending = item
            if pending is not None:
                event, _staged = pending
                torch.cuda.current_stream(device).wait_event(event)
                rows.record_stream(torch.cuda.current_stream(device))
            yield first, rows
    finally:
        stop.set()
        worker.join()
