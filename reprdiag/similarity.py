"""Representational similarity: linear CKA between row-aligned inputs, in one streaming pass.

Linear CKA (Kornblith et al., ICML 2019) of centred, row-aligned X (N×d₁) and Y (N×d₂) is

    CKA(X, Y) = ‖YᵀX‖²_F / (‖XᵀX‖_F ‖YᵀY‖_F),   in [0, 1]; 1 for Y = XQ (Q orthogonal) or Y = cX.

Everything it needs is a cross-moment: :class:`CrossMoments` accumulates, over chunks of rows of
L inputs stacked side by side (D = Σ dₐ columns), the sums Σy and Σyyᵀ (D×D) of rows shifted by
the first chunk's mean, all in float64, so N is unbounded and never an N×N matrix is formed. The
**debiased** variant (Nguyen, Raghu & Kornblith, ICLR 2021; the unbiased HSIC of Song et al.,
JMLR 2012) also needs, per pair of inputs, Σᵢ‖yₐᵢ‖² y_bᵢ and Σᵢ‖yₐᵢ‖²‖y_bᵢ‖² — fourth-order
moments that stream just as well (an L×D and an L×L matrix), so both variants come from one pass.

Biased CKA is inflated when N is not much larger than d: two *independent* Gaussian inputs with
N = 200 rows and d = 1000 columns give biased CKA 0.834 (debiased −0.005); at N = 100,000 and
d = 64, 6.4e-4 (debiased 1.5e-8). Read the debiased value whenever N is not ≫ d.

Cost: O(N·D²) multiply-adds for the pass (one D×D product per chunk) and O(D² + L·D) memory;
the metrics are O(D²) from the moments.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from reprdiag.errors import InputError, UsageError
from reprdiag.loaders import ArraySource, open_sources
from reprdiag.metrics.cka import linear_cka
from reprdiag.stats.cross import CrossMoments

__all__ = ["CrossMoments", "Similarity", "accumulate_cross", "linear_cka", "similarity"]


def _rows(sources: Sequence[ArraySource]) -> int:
    counts = {s.label: s.shape[0] for s in sources}
    if len(set(counts.values())) > 1:
        shown = ", ".join(f"{label}: {n:,}" for label, n in counts.items())
        raise InputError(f"inputs are not row-aligned (rows {shown})",
                         source=next(iter(counts)), hint="CKA compares the same examples in "
                         "every input: give arrays with the same rows in the same order")
    for s in sources:
        if len(s.shape) != 2:
            raise InputError(f"is {len(s.shape)}-D with shape {tuple(s.shape)}, not rows × "
                             "features", source=s.label, hint="pool it first (reprdiag extract "
                             "--pool) or pick a 2-D key")
    n = next(iter(counts.values()))
    if n < 2:
        raise InputError(f"has {n} row(s); CKA needs at least 2", source=sources[0].label,
                         hint="give more examples")
    return n


def _check_finite(chunk: torch.Tensor, source: ArraySource, first: int) -> None:
    bad = ~torch.isfinite(chunk).all(dim=1)
    if bool(bad.any()):
        row = first + int(bad.nonzero()[0, 0])
        raise InputError(f"row {row} holds NaN or Inf", source=source.label,
                         hint="CKA needs the same finite rows in every input: drop that row "
                         "from all of them")


def accumulate_cross(sources: Sequence[ArraySource], *, precision: str = "float64",
                     device: torch.device | None = None,
                     chunk_bytes: int = 256 * 2**20) -> CrossMoments:
    """One pass over row-aligned ``sources``: their :class:`CrossMoments`.

    Reads the same row range of every source per step (``chunk_bytes`` of float64 rows).
    """
    if len(sources) < 2:
        raise UsageError("similarity needs at least two inputs (files or keys)",
                         hint="name two files, or one file with several arrays")
    n = _rows(sources)
    widths = [int(s.shape[1]) for s in sources]
    moments = CrossMoments(widths, precision=precision, device=device or torch.device("cpu"))
    step = max(1, chunk_bytes // (8 * sum(widths)))
    for lo in range(0, n, step):
        hi = min(n, lo + step)
        chunks = [s.read(lo, hi) for s in sources]
        for chunk, s in zip(chunks, sources, strict=True):
            _check_finite(chunk, s, lo)
        moments.update(chunks)
    return moments


@dataclass(frozen=True)
class Similarity:
    """Linear CKA between every pair of inputs (biased and debiased), with what was compared."""

    labels: list[str]
    files: list[str]
    keys: list[str | None]
    widths: list[int]
    n: int
    precision: str
    cka_linear: np.ndarray
    cka_debiased: np.ndarray

    def across_runs(self) -> dict[str, tuple[float, float]]:
        """With two files holding the same keys: key → (CKA, debiased CKA) of A[key] vs B[key]."""
        files = list(dict.fromkeys(self.files))
        if len(files) != 2:
            return {}
        where = {(f, k): i for i, (f, k) in enumerate(zip(self.files, self.keys, strict=True))}
        shared = [k for f, k in where if f == files[0] and (files[1], k) in where]
        return {str(k): (float(self.cka_linear[where[files[0], k], where[files[1], k]]),
                         float(self.cka_debiased[where[files[0], k], where[files[1], k]]))
                for k in shared}

    def to_dict(self) -> dict[str, object]:
        """The JSON form: each matrix with its key names; ``null`` where CKA is undefined."""
        def matrix(values: np.ndarray) -> dict[str, object]:
            rows = [[None if np.isnan(v) else float(v) for v in row] for row in values]
            return {"keys": self.labels, "matrix": rows}

        out: dict[str, object] = {
            "cka_linear": matrix(self.cka_linear), "cka_debiased": matrix(self.cka_debiased),
            "n": self.n, "widths": dict(zip(self.labels, self.widths, strict=True)),
            "precision": self.precision}
        runs = self.across_runs()
        if runs:
            out["across_runs"] = {k: {"cka_linear": a, "cka_debiased": b}
                                  for k, (a, b) in runs.items()}
        return out


def similarity(inputs: Sequence[str | os.PathLike[str]], *, keys: Sequence[str] | None = None,
               precision: str = "float64", device: str | torch.device = "cpu") -> Similarity:
    """Linear CKA between every array named by ``inputs`` × ``keys`` (all 2-D arrays of each
    file without keys), in one pass over all of them. The arrays must be row-aligned.

    Cost: O(N·D²) for the pass, D the summed widths; O(D²) memory.
    """
    from reprdiag.device import resolve_device

    sources = [s for path in inputs for s in open_sources(path, keys)]
    moments = accumulate_cross(sources, precision=precision, device=resolve_device(device))
    return Similarity(labels=[s.label for s in sources],
                      files=[str(s.path) for s in sources], keys=[s.key for s in sources],
                      widths=list(moments.widths), n=moments.n, precision=precision,
                      cka_linear=linear_cka(moments), cka_debiased=linear_cka(moments, True))
