"""Data functions (``--data tests.model_data:NAME``) for the multi-process model tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import torch
from safetensors.torch import load_file

DIGITS = Path(__file__).resolve().parents[1] / "sample_data" / "digits.safetensors"
ROWS = 230
BAD_EXAMPLE = 100  # in rank 1's share of 3 ranks at --batch-size 32: batches 2–4, rows 64–160


def digits(rows: int = ROWS) -> torch.Tensor:
    """The first ``rows`` images of the sample digits, (rows, 64)."""
    return load_file(str(DIGITS))["inputs"][:rows]


def ready_batches() -> Iterator[torch.Tensor]:
    """Ready batches of uneven sizes, of unknown length (a generator): dealt round-robin."""
    x, lo = digits(), 0
    for size in (50, 7, 64, 1, 100, 8):
        yield x[lo:lo + size]
        lo += size


class Examples(torch.utils.data.Dataset):
    """The first ``ROWS`` sample digits with labels; example ``bad`` (if any) fails to load."""

    def __init__(self, bad: int | None = None):
        self.x, self.bad = digits(), bad

    def __len__(self) -> int:
        return ROWS

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        if i == self.bad:
            raise ValueError(f"example {i} is corrupt")
        return self.x[i], i % 10


def dataset() -> Examples:
    """A sized Dataset: ranks read whole batches of it through ``Subset``."""
    return Examples()


def failing() -> Examples:
    """A Dataset one of whose examples (in rank 1's share) raises when loaded."""
    return Examples(bad=BAD_EXAMPLE)


def texts() -> list[str]:
    """100 texts, text i reading ``str(i)``."""
    return [str(i) for i in range(100)]
