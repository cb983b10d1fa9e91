"""Cross-moments of several row-aligned inputs, streamed: what CKA and paired-view metrics need.

:class:`CrossMoments` accumulates, over chunks of rows of L inputs stacked side by side
(D = Σ dₐ columns), the sums Σy and Σyyᵀ (D×D) of rows shifted by the first chunk's mean, and
per pair of inputs Σᵢ‖yₐᵢ‖² y_bᵢ (L×D) and Σᵢ‖yₐᵢ‖²‖y_bᵢ‖² (L×L) for the debiased HSIC, all in
float64: O(D² + L·D) memory however large N is, never an N×N matrix. :class:`PairMoments`
adds, for two views, Σᵢ‖ẑᵢ − ẑ'ᵢ‖² of their normalized rows (the paired-view metrics'
statistics). Both merge exactly (:mod:`reprdiag.stats.state`): their frame is the shift.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from reprdiag.errors import InputError, UsageError
from reprdiag.stats.moments import ZERO_NORM, gram_product
from reprdiag.stats.state import Frame, cpu_shift, first_shift

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
        # upper 2×2 block triangle on the CPU (3/4 of the multiply-adds; S is symmetric)
        self.S += gram_product(work, work.new_empty(work.shape[1], work.shape[1])).to(
            torch.float64)
        self.U += q.T @ y
        self.W += q.T @ q

    # -- merging (the protocol of :mod:`reprdiag.stats.state`) ------------------------------
    def frame(self) -> Frame:
        """The shift the sums are taken about (``None`` before any row)."""
        return {"shift": cpu_shift(self.shift)}

    def common_frame(self, frames: Sequence[Frame]) -> Frame:
        return {"shift": first_shift(frames)}

    def state(self, frame: Frame | None = None) -> dict[str, torch.Tensor]:
        """``n`` (0-d int64), ``s``, ``S``, ``U``, ``W`` (float64) about ``frame``'s shift
        (default: their own).

        Moving the shift by −δ (y' = y + δ, δ the old shift minus the new one) is exact
        algebra on the sums: with qₐ = ‖yₐ‖², rₐ = yₐ·δₐ and cₐ = ‖δₐ‖² per input a,
        s' = s + nδ, S' = S + sδᵀ + δsᵀ + nδδᵀ,
        U'ₐ = Uₐ + (Σqₐ)δ + 2Σrₐy + 2(Σrₐ)δ + cₐ(s + nδ) and
        W'ₐᵦ = Wₐᵦ + 2Σqₐr_b + 2Σrₐq_b + 4Σrₐr_b + cᵦΣqₐ + cₐΣq_b + 2cᵦΣrₐ + 2cₐΣr_b + n cₐcᵦ,
        each Σ a product of the old sums with δ: O(L·D²).
        """
        out = {"n": torch.tensor(self.n, dtype=torch.int64, device=self.device), "s": self.s,
               "S": self.S, "U": self.U, "W": self.W}
        shift = None if frame is None else frame["shift"]
        if shift is None or self.shift is None:
            return out
        delta = self.shift - shift.to(self.device, torch.float64)
        blocks = torch.zeros(len(self.slices), delta.shape[0], dtype=torch.float64,
                             device=self.device)  # Δ: row a is δ on input a's columns
        for a, sl in enumerate(self.slices):
            blocks[a, sl] = delta[sl]
        n, s, S, U, W = self.n, self.s, self.S, self.U, self.W
        r_y = blocks @ S.T  # Σ rₐ y, L×D
        r_sum = blocks @ s  # Σ rₐ
        q_sum = torch.stack([S[sl, sl].trace() for sl in self.slices])  # Σ qₐ
        c = (blocks**2).sum(dim=1)
        q_r = U @ blocks.T  # [a, b] = Σ qₐ r_b
        r_r = blocks @ S @ blocks.T  # [a, b] = Σ rₐ r_b
        out["s"] = s + n * delta
        out["S"] = S + torch.outer(s, delta) + torch.outer(delta, s) + n * torch.outer(delta,
                                                                                       delta)
        out["U"] = (U + torch.outer(q_sum, delta) + 2 * r_y + 2 * torch.outer(r_sum, delta)
                    + torch.outer(c, s + n * delta))
        out["W"] = (W + 2 * q_r + 2 * q_r.T + 4 * r_r + torch.outer(q_sum, c)
                    + torch.outer(c, q_sum) + 2 * torch.outer(r_sum, c) + 2 * torch.outer(c, r_sum)
                    + n * torch.outer(c, c))
        return out

    def with_state(self, frame: Frame, state: dict[str, torch.Tensor]) -> CrossMoments:
        """Cross-moments like these (widths, precision, device) holding ``state`` about
        ``frame``'s shift."""
        out = CrossMoments(list(self.widths), self.precision, self.device, int(state["n"]))
        shift = frame["shift"]
        out.shift = None if shift is None else shift.to(self.device, torch.float64).clone()
        for name in ("s", "S", "U", "W"):
            setattr(out, name, state[name].to(self.device, torch.float64))
        return out


@dataclass
class PairMoments:
    """Streaming statistics of two row-aligned views (d and d' columns): their
    :class:`CrossMoments` and Σᵢ‖ẑᵢ − ẑ'ᵢ‖² of the row-normalized views (when d = d').

    >>> p = PairMoments(2, 2)
    >>> p.update(torch.tensor([[1., 0.], [0., 2.]]), torch.tensor([[2., 0.], [0., 1.]]))
    >>> p.n, p.sq_distance
    (2, 0.0)
    """

    d: int
    d_pair: int
    precision: str = "float64"
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    cross: CrossMoments = field(init=False)
    sq_distance: float = 0.0

    def __post_init__(self) -> None:
        self.cross = CrossMoments([self.d, self.d_pair], precision=self.precision,
                                  device=self.device)

    @property
    def n(self) -> int:
        return self.cross.n

    def update(self, rows: torch.Tensor, pair: torch.Tensor) -> None:
        """Add the same rows of both views. Cost O(n·(d + d')²)."""
        if rows.shape[0] != pair.shape[0]:
            raise InputError(f"a chunk has {rows.shape[0]} rows and its pair {pair.shape[0]}",
                             hint="the two views must be row-aligned")
        self.cross.update([rows, pair])
        z = _unit(rows.to(self.device, torch.float64))
        w = _unit(pair.to(self.device, torch.float64))
        if z.shape[1] == w.shape[1]:
            self.sq_distance += float(((z - w) ** 2).sum())

    # -- merging (the protocol of :mod:`reprdiag.stats.state`) ------------------------------
    def frame(self) -> Frame:
        return self.cross.frame()

    def common_frame(self, frames: Sequence[Frame]) -> Frame:
        return self.cross.common_frame(frames)

    def state(self, frame: Frame | None = None) -> dict[str, torch.Tensor]:
        """The cross-moments' state and ``sq_distance`` (0-d float64)."""
        return {**self.cross.state(frame),
                "sq_distance": torch.tensor(self.sq_distance, dtype=torch.float64,
                                            device=self.device)}

    def with_state(self, frame: Frame, state: dict[str, torch.Tensor]) -> PairMoments:
        """Pair moments like these holding ``state`` in ``frame``.

        >>> from reprdiag.stats.state import merged
        >>> x, y = torch.randn(9, 2, dtype=torch.float64), torch.randn(9, 2, dtype=torch.float64)
        >>> a, b, whole = PairMoments(2, 2), PairMoments(2, 2), PairMoments(2, 2)
        >>> a.update(x[:4], y[:4]); b.update(x[4:], y[4:]); whole.update(x, y)
        >>> m = merged(a, b)
        >>> m.n, abs(m.sq_distance - whole.sq_distance) < 1e-12
        (9, True)
        """
        out = PairMoments(self.d, self.d_pair, self.precision, self.device)
        out.cross = self.cross.with_state(frame, state)
        out.sq_distance = float(state["sq_distance"])
        return out


def _unit(x: torch.Tensor) -> torch.Tensor:
    return x / torch.linalg.vector_norm(x, dim=1, keepdim=True).clamp_min(ZERO_NORM)
