"""numerical_rank counts the eigenvalues above the error floor of the precision used, not a
tolerance that grows with N (issue 16): checked against numpy's matrix_rank in float64."""

from __future__ import annotations

import numpy as np
import pytest

import reprdiag


def _gap_data(n: int, rank: int = 40, d: int = 64, seed: int = 0) -> np.ndarray:
    """Rows of an exactly rank-``rank`` distribution (plus a mean): a clear spectral gap."""
    rng = np.random.default_rng(seed)
    basis = rng.standard_normal((rank, d))
    return rng.standard_normal((n, rank)) @ basis + rng.standard_normal(d)


def _decaying_data(n: int, d: int = 64, seed: int = 0) -> np.ndarray:
    """Full-rank rows whose standard deviations fall from 1 to 0.01 (λ from 1 to 1e-4)."""
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, d)) * np.geomspace(1.0, 0.01, d) + 5.0


def _numpy_rank(x: np.ndarray) -> int:
    """numpy's matrix_rank of the float64 centred data (its own singular-value tolerance)."""
    return int(np.linalg.matrix_rank(x - x.mean(axis=0)))


@pytest.mark.parametrize("make, expected", [(_gap_data, 40), (_decaying_data, 64)])
def test_same_distribution_same_rank_at_2k_and_200k(make, expected: int) -> None:
    ranks = []
    for n in (2_000, 200_000):
        x = make(n)
        assert _numpy_rank(x) == expected
        rep = reprdiag.analyze(x, metrics=["numerical_rank"], device="cpu")
        ranks.append(rep.metrics["numerical_rank"])
    assert ranks == [expected, expected]


def test_float32_products_keep_the_gap_and_record_their_floor() -> None:
    """The float32 path's floor (u·c(n)·trace) sits above its own rounding of the null
    space and far below the 40 real eigenvalues."""
    x = _gap_data(50_000)
    rep = reprdiag.analyze(x.astype(np.float32), metrics=["numerical_rank"], device="cpu",
                           precision="float32")
    res = rep.inputs[0]
    assert res.metrics["numerical_rank"] == _numpy_rank(x) == 40
    lam = np.linalg.eigvalsh(np.cov(x.astype(np.float32).astype(np.float64).T))[::-1]
    floor = res.precision["floors"]["covariance"]
    assert lam[39] > 100 * floor and res.precision["unresolved"]["covariance"] == 24


def test_rank_tol_still_overrides_the_floor() -> None:
    x = _decaying_data(5_000)
    lam = np.linalg.eigvalsh(np.cov(x.T))[::-1]
    expected = int((lam > 1e-3 * lam[0]).sum())
    assert 0 < expected < 64
    assert reprdiag.metrics.numerical_rank(x, rank_tol=1e-3) == expected
