"""Which metrics depend materially on values the computation did not resolve.

On the float32 path (:mod:`reprdiag.precision`) every spectrum has an error floor, and so has
the per-coordinate variance of the normalized rows. An eigenvalue (or variance) at or below its
floor could be anything in [0, floor]. :func:`unresolved_dependence` evaluates every metric
that is a function of the moments twice more: with each unresolved value set to 0 and with it
set to the floor. A metric *depends materially* on them when either moves it by more than
:data:`reprdiag.precision.MATERIAL` (1e-4) of its value (or by more than 1e-4 in absolute terms
when the value is 0). Sample-based metrics (``er_entropy``, ``partition_isotropy``) are computed
from the rows in float64 and are not checked.

Cost: two more evaluations of the moment metrics, O(d²) each; no eigen-solve.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import replace

import torch

from reprdiag.metrics.registry import MetricInfo, compute
from reprdiag.precision import MATERIAL
from reprdiag.spectrum import Spectra, Spectrum
from reprdiag.statistics import Statistics

SPECTRA = ("covariance", "raw_eigenvalues", "autocorrelation")


def _clamped(spectrum: Spectrum, high: bool) -> Spectrum:
    """The spectrum with its unresolved eigenvalues set to the floor (``high``) or to 0."""
    fill = spectrum.floor if high else 0.0
    values = torch.where(spectrum.resolved, spectrum.values,
                         torch.full_like(spectrum.values, fill))
    return replace(spectrum, values=values, vectors=None)


class _Bounded(Statistics):
    """``base`` with every unresolved eigenvalue and z-variance at 0 or at its floor."""

    def __init__(self, base: Statistics, high: bool):
        super().__init__(base.moments, base.reservoir, base.precision)
        spectra = Spectra(base.moments, None, base.precision)
        for name in SPECTRA:
            spectra.__dict__[name] = _clamped(getattr(base.spectra, name), high)
        self.__dict__["spectra"] = spectra
        self._base, self._high = base, high

    def z_variance(self) -> torch.Tensor:
        var, floor = self._base.z_variance(), self._base.z_variance_floor()
        fill = floor if self._high else torch.zeros_like(floor)
        return torch.where(var > floor, var, fill)


def unresolved_counts(stats: Statistics) -> dict[str, int]:
    """How many eigenvalues of each spectrum lie at or below its floor."""
    names = {"covariance": "covariance", "raw_eigenvalues": "singular_values",
             "autocorrelation": "autocorrelation"}
    return {names[k]: int((~getattr(stats.spectra, k).resolved).sum()) for k in SPECTRA}


def unresolved_dependence(stats: Statistics, infos: Sequence[MetricInfo],
                          options: dict[str, object], values: dict[str, float]
                          ) -> dict[str, tuple[float, float]]:
    """{metric: (low, high)} for each moment metric that moves materially (module doc) when
    the unresolved values go to 0 or to their floor; (low, high) spans the two values obtained
    and the reported one."""
    checked = [i for i in infos if not i.uses_sample and not i.discrete and i.name in values]
    if not checked:
        return {}
    low = compute(_Bounded(stats, high=False), checked, options)
    high = compute(_Bounded(stats, high=True), checked, options)
    out = {}
    for info in checked:
        v, a, b = values[info.name], low[info.name], high[info.name]
        if not all(math.isfinite(t) for t in (v, a, b)):
            continue
        if max(abs(a - v), abs(b - v)) > MATERIAL * max(abs(v), 1.0 if v == 0 else 0.0):
            out[info.name] = (min(a, b, v), max(a, b, v))
    return out
