"""What every metric is a function of: moments, their spectra, and a row sample."""

from __future__ import annotations

from functools import cached_property

import numpy as np
import torch

from reprdiag.errors import InputError
from reprdiag.spectrum import Spectra
from reprdiag.stats import ZERO_NORM, Reservoir, StreamingMoments

TensorLike = torch.Tensor | np.ndarray


class Statistics:
    """Sufficient statistics of one input: its moments and a uniform sample of its rows.

    This is the "compute" side's single argument: every metric in :mod:`reprdiag.metrics`
    takes a :class:`Statistics` (or a tensor, which is turned into one by
    :meth:`from_tensor`). Spectra are computed on first use and cached.
    """

    def __init__(self, moments: StreamingMoments, sample: Reservoir | None = None):
        if moments.n == 0:
            raise InputError("has 0 rows", hint="nothing to analyze")
        self.moments = moments
        self.reservoir = sample
        #: what computed the sample metrics (e.g. ER entropy's float32 symmetric blocks), by
        #: metric name; reports list it beside the spectra's solvers (see :meth:`paths`)
        self.solvers: dict[str, str] = {}

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
        """The sample's rows divided by max(‖x‖, 1e-12)."""
        rows = self.sample
        return rows / torch.linalg.vector_norm(rows, dim=1, keepdim=True).clamp_min(ZERO_NORM)

    @cached_property
    def spectra(self) -> Spectra:
        full = (self.reservoir.rows if self.reservoir is not None and self.reservoir.is_complete
                else None)
        return Spectra(self.moments, full)

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
