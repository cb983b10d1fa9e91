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


def ready_labelled() -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """:func:`ready_batches` as ``(x, y)`` tuples, example i of class i mod 10."""
    lo = 0
    for x in ready_batches():
        yield x, torch.arange(lo, lo + len(x)) % 10
        lo += len(x)


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


# ---- a tiny model over labelled examples (tests/models/test_aligned.py) ----

TINY_ROWS = 120
TINY_READY = (50, 7, 33, 30)  # sizes of the ready batches of :func:`tiny_ready`


class Tiny(torch.nn.Module):
    """6 → 5 → 4 (Linear, tanh, Linear); extra keyword inputs (a dict batch's labels) are
    ignored, so dict batches reach it whole."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1, self.act, self.fc2 = torch.nn.Linear(6, 5), torch.nn.Tanh(), torch.nn.Linear(5, 4)

    def forward(self, x: torch.Tensor, **_: object) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


def tiny() -> Tiny:
    """The model factory (its weights come from ``--weights``)."""
    return Tiny()


def tiny_rows() -> tuple[torch.Tensor, torch.Tensor]:
    """``TINY_ROWS`` float32 inputs (6 wide) around 4 class means, and their unbalanced class
    ids 0–3."""
    g = torch.Generator().manual_seed(0)
    y = (torch.arange(TINY_ROWS) * 7 % 11) % 4
    x = 2 * torch.randn(4, 6, generator=g)[y] + torch.randn(TINY_ROWS, 6, generator=g)
    return x, y


class Labelled(torch.utils.data.Dataset):
    """:func:`tiny_rows` as ``(x, y)`` tuples or ``{"x": x, "label": y}`` dicts."""

    def __init__(self, dicts: bool = False):
        (self.x, self.y), self.dicts = tiny_rows(), dicts

    def __len__(self) -> int:
        return TINY_ROWS

    def __getitem__(self, i: int) -> object:
        return {"x": self.x[i], "label": self.y[i]} if self.dicts else (self.x[i], self.y[i])


def tiny_tuples() -> Labelled:
    return Labelled()


def tiny_dicts() -> Labelled:
    return Labelled(dicts=True)


def tiny_ready() -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Ready ``(x, y)`` batches of uneven sizes, of unknown length (a generator)."""
    (x, y), lo = tiny_rows(), 0
    for size in TINY_READY:
        yield x[lo:lo + size], y[lo:lo + size]
        lo += size
