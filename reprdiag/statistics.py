"""What every metric is a function of: moments, their spectra, and a row sample.

:class:`Statistics` bundles one input's streamed statistics (:mod:`reprdiag.stats`) with their
spectra (:mod:`reprdiag.spectrum`): the single argument of every metric. It sits between the
two in the layers (metrics → statistics → spectrum → stats).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cached_property
from typing import Any

import numpy as np
import torch

from reprdiag.errors import InputError
from reprdiag.precision import Precision
from reprdiag.spectrum import Spectra
from reprdiag.stats import Reservoir, StreamingMoments, normalize_rows

TensorLike = torch.Tensor | np.ndarray


class Statistics:
    """Sufficient statistics of one input: its moments and a uniform sample of its rows.

    This is the "compute" side's single argument: every metric in :mod:`reprdiag.metrics`
    takes a :class:`Statistics` (or a tensor, which is turned into one by
    :meth:`from_tensor`). Spectra are computed on first use and cached. ``precision`` says
    how the moments' products were computed (it sets the spectra's error floors); by default
    all rows in one product in the moments' dtype.
    """

    def __init__(self, moments: StreamingMoments,
                 sample: Reservoir | Callable[[], Reservoir] | None = None,
                 precision: Precision | None = None):
        if moments.n == 0:
            raise InputError("has 0 rows", hint="nothing to analyze")
        self.moments = moments
        #: the row sample, or a function that makes it on first use (the jackknife's deleted
        #: samples, which first-order estimates never read); a function stands for a sample
        #: that does not hold every row (:attr:`all_rows` is then ``None`` without making it)
        self._sample = sample
        self.precision = precision or Precision(moments.dtype, moments.n)
        #: what computed the sample metrics (e.g. ER entropy's float32 symmetric blocks), by
        #: metric name; reports list it beside the spectra's solvers (see :meth:`paths`)
        self.solvers: dict[str, str] = {}
        #: statistics streamed beside the moments, by kind: ``"classes"``
        #: (:class:`~reprdiag.stats.classes.ClassMoments`, with ``--labels``) and ``"pair"``
        #: (:class:`~reprdiag.stats.cross.PairMoments`, with ``--pair``)
        self.extras: dict[str, Any] = {}
        #: values several metrics share, computed once on first use (the sample's pairwise
        #: sums: :func:`reprdiag.metrics.sample.pair_sums`)
        self.shared: dict[str, Any] = {}
        #: the jackknife block of every sample row and K, when the pass kept blocks: shared
        #: sample passes then split their sums by block, so that one pass serves the plain
        #: values and the deleted ones
        self.sample_groups: tuple[torch.Tensor, int] | None = None
        #: the full data's statistics, when these are its first-order jackknife deletion
        #: ``block`` (see :mod:`reprdiag.uncertainty.estimator`): the spectra are then
        #: updated from the base's (:attr:`reprdiag.spectrum.Spectra.base`) instead of
        #: decomposed again, and sample metrics may read the base's per-block sums
        self.base: Statistics | None = None
        self.block: int | None = None
        #: metrics return their values as 0-d tensors that keep the autograd graph back to
        #: the spectra's eigenvalues, not as floats (the gradients of
        #: :mod:`reprdiag.uncertainty.linear`)
        self.traced = False

    @classmethod
    def from_tensor(cls, x: TensorLike, sample_size: int = 16384, seed: int = 0) -> Statistics:
        """Statistics of an in-memory (N, d) array, accumulated in float64."""
        t = x if isinstance(x, torch.Tensor) else torch.from_numpy(np.asarray(x))
        if t.ndim != 2:
            raise InputError(f"expected a 2-D (N, d) array, got shape {tuple(t.shape)}")
        t = t.to(torch.float64)
        moments = StreamingMoments(t.shape[1], torch.float64, t.device)
        moments.update(t)
        sample = Reservoir(sample_size, seed)
        sample.update(0, t)
        return cls(moments, sample)

    @property
    def reservoir(self) -> Reservoir | None:
        """The row sample (made now if it was given as a function)."""
        if callable(self._sample):
            self._sample = self._sample()
        return self._sample

    @property
    def n(self) -> int:
        return self.moments.n

    @property
    def d(self) -> int:
        return self.moments.d

    @property
    def sample(self) -> torch.Tensor:
        """The row sample (all rows when N ≤ sample size), raw."""
        if self.reservoir is None or self.reservoir.rows is None:
            raise InputError("no row sample was kept", hint="pairwise metrics need a sample")
        return self.reservoir.rows

    @property
    def normalized_sample(self) -> torch.Tensor:
        """The sample's rows divided by their norms (zero rows stay zero)."""
        return normalize_rows(self.sample)

    @property
    def all_rows(self) -> torch.Tensor | None:
        """Every row, when the sample holds them all (N ≤ sample size), else ``None``."""
        if callable(self._sample) or self.reservoir is None or not self.reservoir.is_complete:
            return None
        rows = self.reservoir.rows
        return rows if rows.shape[0] == self.n else None

    @cached_property
    def spectra(self) -> Spectra:
        base = self.base.spectra if self.base is not None else None
        return Spectra(self.moments, self.all_rows, self.precision, base)

    def z_variance(self) -> torch.Tensor:
        """Unbiased per-coordinate variance of the normalized rows z (float64, d): two-pass
        over the rows when all are at hand (exact: identical rows give 0), else from the
        moments, (Σz_k² − N·z̄_k²)/(N−1)."""
        rows = self.all_rows
        if rows is None:
            return self.moments.z_variance()
        v = normalize_rows(rows.to(torch.float64))
        v = v - v[0]  # about one row: identical rows give exactly 0
        return (v - v.mean(dim=0)).pow(2).sum(dim=0) / max(self.n - 1, 1)

    def z_variance_floor(self) -> torch.Tensor:
        """Rounding bound of :meth:`z_variance`, per coordinate: 0 from the rows, else
        u·c(n)·(Σz_k² + 2|z̄_k|·√(N·Σz_k²))/(N−1), from the products' dtype and length
        (:mod:`reprdiag.precision`)."""
        m = self.moments
        if self.all_rows is not None:
            return torch.zeros(m.d, dtype=torch.float64, device=m.sum_z.device)
        sq = torch.diagonal(m.sum_zz).clamp_min(0)
        zbar = (m.sum_z / m.n).abs()
        return self.precision.relative * (sq + 2 * zbar * (m.n * sq).sqrt()) / max(m.n - 1, 1)

    def paths(self) -> dict[str, str]:
        """The solver of every spectrum and sample metric computed so far, by name."""
        return {**self.spectra.solvers(), **self.solvers}

    @property
    def cov_eigenvalues(self) -> torch.Tensor:
        """λ, descending, float64."""
        return self.spectra.covariance.values

    @property
    def autocorr_eigenvalues(self) -> torch.Tensor:
        """η, descending, float64."""
        return self.spectra.autocorrelation.values
