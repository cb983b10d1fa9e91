"""The read-ahead iterator: same chunks in the same order, errors passed on, clean early exit."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest
import torch

from reprdiag.prefetch import prefetch


def _chunks(n: int, fail_at: int | None = None) -> Iterator[tuple[int, torch.Tensor]]:
    for i in range(n):
        if i == fail_at:
            raise OSError(f"disk error at chunk {i}")
        yield i * 3, torch.full((3, 2), float(i))


@pytest.mark.parametrize("depth", [1, 4])
def test_same_chunks_same_order(depth: int) -> None:
    got = list(prefetch(_chunks(20), "cpu", depth, min_bytes=0))
    want = list(_chunks(20))
    assert [f for f, _ in got] == [f for f, _ in want]
    assert all(torch.equal(a, b) for (_, a), (_, b) in zip(got, want, strict=True))


def test_reader_error_is_raised_in_consumer() -> None:
    seen = []
    with pytest.raises(OSError, match="chunk 5"):
        for first, _ in prefetch(_chunks(10, fail_at=5), min_bytes=0):
            seen.append(first)
    assert seen == [0, 3, 6, 9, 12]


def test_leaving_early_stops_the_reader() -> None:
    before = threading.active_count()
    for first, _ in prefetch(_chunks(1000), min_bytes=0):
        assert threading.active_count() == before + 1  # the reader thread
        if first >= 6:
            break
    assert threading.active_count() == before


def test_tiny_chunks_are_read_inline() -> None:
    before = threading.active_count()
    got = []
    for first, rows in prefetch(_chunks(5)):  # 24-byte chunks: below the threshold
        assert threading.active_count() == before
        got.append((first, rows[0, 0].item()))
    assert got == [(0, 0.0), (3, 1.0), (6, 2.0), (9, 3.0), (12, 4.0)]
    assert list(prefetch(iter([]))) == []
