"""Cross-moments of several row-aligned inputs, streamed: what CKA and paired-view metrics need.

:class:`CrossMoments` accumulates, over chunks of rows of L inputs stacked side by side
(D = Σ dₐ columns), the sums Σy and Σyyᵀ (D×D) of rows shifted by the first chunk's mean, and
per pair of inputs Σᵢ‖yₐᵢ‖² y_bᵢ (L×D) and Σᵢ‖yₐᵢ‖²‖y_bᵢ‖² (L×L) for the debiased HSIC, all in
float64: O(D² + L·D) memory however large N is, never an N×N matrix.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from reprdiag.errors import UsageError

PRECISIONS = ("float64", "float32")


@dataclass
class CrossMoments:
    """Streaming sufficient statistics of L row-aligned inputs (the update/compute split).

    ``widths`` are the inputs' column counts. Rows are shifted by ``shift`` (the first chunk's
    column means) before they are summed, so the float64 sums stay well conditioned; products
    are formed in ``precision`` and added in float64.

    >>> m = CrossMoments([2, 1])
    >>> m.update([torch.tensor([[1., 0.], [0., 1.], [1., 1.]]), torch.tensor([[1.], [0.], [2.]])])
    >>> m.n, m.S.shape, m.U.shape, m.W.shape
    (3, torch.Size([3, 3]), torch.Size([2, 3]), torch.Size([2, 2]))
    """

    widths: list[int]
    precision: str = "float64"
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    n: int = 0
    shift: torch.Tensor | None = None
    s: torch.Tensor = field(init=False)
    S: torch.Tensor = field(init=False)
    U: torch.Tensor = field(init=False)
    W: torch.Tensor = field(init=False)
    slices: list[slice] = field(init=False)

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise UsageError(f"unknown precision {self.precision!r}",
                             hint=f"use one of {', '.join(PRECISIONS)}")
        dim, inputs = sum(self.widths), len(self.widths)
        f64 = {"dtype": torch.float64, "device": self.device}
        self.s = torch.zeros(dim, **f64)
        self.S = torch.zeros(dim, dim, **f64)
        self.U = torch.zeros(inputs, dim, **f64)
        self.W = torch.zeros(inputs, inputs, **f64)
        bounds = itertools.accumulate(self.widths, initial=0)
        self.slices = [slice(a, b) for a, b in itertools.pairwise(bounds)]

    def update(self, chunks: Sequence[torch.Tensor]) -> None:
        """Add the same rows of every input (``chunks[a]`` is rows × widths[a])."""
        y = torch.cat([c.to(self.device, torch.float64) for c in chunks], dim=1)
        if self.shift is None:
            self.shift = y.mean(dim=0)
        y -= self.shift
        work = y.to(torch.float32) if self.precision == "float32" else y
        q = torch.stack([(y[:, sl] ** 2).sum(dim=1) for sl in self.slices], dim=1)  # rows × L
        self.n += y.shape[0]
        self.s += y.sum(dim=0)
        self.S += (work.T @ work).to(torch.float64)
        self.U += q.T @ y
        self.W += q.T @ q
