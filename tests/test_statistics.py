"""reprdiag.statistics: the one argument of every metric (moments, row sample, spectra)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from reprdiag.errors import InputError
from reprdiag.statistics import Statistics
from reprdiag.stats import Reservoir, StreamingMoments


def _rows(n: int = 300, d: int = 6, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, dtype=torch.float64, generator=g) * torch.arange(1, d + 1) + 2.0


def test_from_tensor_holds_the_moments_and_every_row() -> None:
    x = _rows()
    stats = Statistics.from_tensor(x)
    assert (stats.n, stats.d) == (300, 6)
    np.testing.assert_allclose(stats.moments.covariance().numpy(), np.cov(x.numpy().T),
                               rtol=1e-12)
    assert torch.equal(stats.all_rows, x)  # the sample holds all 300 rows, in order
    want = np.sort(np.linalg.eigvalsh(np.cov(x.numpy().T)))[::-1]
    np.testing.assert_allclose(stats.cov_eigenvalues.numpy(), want, rtol=1e-10)
    assert "covariance" in stats.paths()


def test_a_sample_of_some_rows_is_not_all_rows() -> None:
    stats = Statistics.from_tensor(_rows(), sample_size=50)
    assert stats.sample.shape == (50, 6) and stats.all_rows is None


def test_a_sample_given_as_a_function_is_made_once_on_first_use() -> None:
    x = _rows()
    moments = StreamingMoments(6, torch.float64)
    moments.update(x)
    made: list[int] = []

    def sample() -> Reservoir:
        made.append(1)
        r = Reservoir(50, 0)
        r.update(0, x)
        return r

    stats = Statistics(moments, sample)
    assert stats.all_rows is None and not made  # the spectra never ask for it
    assert stats.spectra.covariance.values.shape == (6,) and not made
    assert stats.sample.shape == (50, 6) and stats.sample.shape == (50, 6)
    assert made == [1]


def test_z_variance_is_exact_from_rows_and_close_from_moments() -> None:
    x = _rows()
    z = (x / x.norm(dim=1, keepdim=True)).numpy()
    want = z.var(axis=0, ddof=1)
    np.testing.assert_allclose(Statistics.from_tensor(x).z_variance().numpy(), want, rtol=1e-12)
    some = Statistics.from_tensor(x, sample_size=10)  # from Σz and Σzzᵀ
    np.testing.assert_allclose(some.z_variance().numpy(), want, rtol=1e-9)
    same = Statistics.from_tensor(torch.ones(40, 3, dtype=torch.float64))
    assert torch.equal(same.z_variance(), torch.zeros(3, dtype=torch.float64))


def test_no_rows_is_an_input_error() -> None:
    with pytest.raises(InputError, match="0 rows"):
        Statistics(StreamingMoments(3, torch.float64))
