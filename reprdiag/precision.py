"""Precision policy and the error floor of spectra computed from streamed products.

**Policy** (``--precision auto``, the default): float64 and integer data are multiplied in
float64; narrower floats are multiplied in float64 too when the pass is small,
N·d² ≤ :data:`AUTO_FLOAT64_MAX` (the float64 products then cost under about a second on a
2-core CPU, see bench/RESULTS.md), and in float32 (after subtracting a per-run shift) above it,
or when N is not known in advance (model outputs, training monitors). ``float32``/``float64``
force one. Every product is summed into float64 totals.

**Error floor.** A chunk of n rows multiplied in a dtype of unit roundoff u gives a Gram
product YᵀY whose rounding error E satisfies, in practice, ‖E‖₂ ≤ u·c(n)·trace(YᵀY) with
c(n) = 1 + √n/64 (:func:`growth`; summing the float64 totals over chunks keeps the bound).
c was set from measurements: on collapsed, offset and isotropic float32 data (N = 2·10⁵,
d = 128, chunks of 256…65536 rows) the largest measured ‖E‖₂ was 0.2–0.8·u·trace, 6–10×
below u·c(n)·trace (and 0.1·u·trace, 50× below, on a collapsed 10⁶ × 256 file: see
bench/RESULTS.md). By Weyl's inequality every eigenvalue of the summed matrix is then
within that floor of the exact one: eigenvalues below it are not resolved by the precision
the spectrum was computed in. :class:`Precision` records what the pass used (the dtype, the
longest product) and why; :mod:`reprdiag.spectrum` turns it into each spectrum's floor.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

PRECISIONS = ("auto", "float32", "float64")
#: ``auto`` multiplies narrow floats in float64 while N·d² stays at or below this: the
#: float64 pass then adds under ~1 s on a 2-core CPU (measured, bench/precision.py).
AUTO_FLOAT64_MAX = 2e9
NARROW = ("float32", "float16", "bfloat16")
#: A metric "depends materially" on unresolved eigenvalues when moving every eigenvalue
#: within its floor moves the metric by more than this fraction of its value.
MATERIAL = 1e-4


def choose(storage_dtype: str | torch.dtype, precision: str = "auto", n: int | None = None,
           d: int | None = None) -> tuple[torch.dtype, str]:
    """The dtype chunks are multiplied in, and why.

    >>> choose("float32", "auto", 2000, 384)[0], choose("float32", "auto", 10**6, 768)[0]
    (torch.float64, torch.float32)
    >>> choose("bfloat16")[0], choose("int32")[0], choose("float32", "float64", 10**6, 768)[0]
    (torch.float32, torch.float64, torch.float64)
    """
    if precision in ("float32", "float64"):
        return getattr(torch, precision), f"--precision {precision}"
    name = str(storage_dtype).removeprefix("torch.")
    if name not in NARROW:
        return torch.float64, f"{name} data is multiplied in float64"
    if n is None or d is None:
        return torch.float32, "the number of rows is not known in advance"
    size = float(n) * d * d
    if size <= AUTO_FLOAT64_MAX:
        return torch.float64, f"N·d² = {size:.3g} ≤ {AUTO_FLOAT64_MAX:.0e}: float64 costs little"
    return torch.float32, f"N·d² = {size:.3g} > {AUTO_FLOAT64_MAX:.0e}: float32 products"


def growth(rows: int) -> float:
    """c(n) = 1 + √n/64: how the rounding error of an n-term product grows (module doc).

    >>> growth(4096)
    2.0
    """
    return 1.0 + math.sqrt(max(rows, 1)) / 64.0


@dataclass(frozen=True)
class Precision:
    """How one input's products were computed: ``dtype`` (float32 if any chunk was),
    ``chunk_rows`` (the longest product, in rows) and ``reason`` (the policy's words).

    >>> p = Precision(torch.float32, 4096, "test")
    >>> p.relative == torch.finfo(torch.float32).eps / 2 * 2.0
    True
    """

    dtype: torch.dtype = torch.float64
    chunk_rows: int = 1
    reason: str = ""

    @property
    def relative(self) -> float:
        """u·c(n): a product sum's error bound relative to its trace."""
        return torch.finfo(self.dtype).eps / 2 * growth(self.chunk_rows)

    def to_json(self) -> dict[str, object]:
        return {"work_dtype": str(self.dtype).removeprefix("torch."),
                "chunk_rows": self.chunk_rows, "reason": self.reason,
                "relative_error": self.relative}
