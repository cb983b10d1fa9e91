"""Paired-view metrics from streamed moments against float64 numpy references on the rows."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from reprdiag.errors import InputError
from reprdiag.metrics.paired import (
    PairMoments,
    alignment,
    barlow_offdiag,
    barlow_ondiag,
    cross_correlation,
    pair_cka,
)


def streamed(x: np.ndarray, y: np.ndarray, chunk: int = 33) -> PairMoments:
    p = PairMoments(x.shape[1], y.shape[1])
    for lo in range(0, len(x), chunk):
        p.update(torch.from_numpy(x[lo:lo + chunk]), torch.from_numpy(y[lo:lo + chunk]))
    return p


@pytest.fixture
def views() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((500, 10)) * np.linspace(2, 0.5, 10) + 4.0
    y = x @ (np.eye(10) + 0.3 * rng.standard_normal((10, 10))) + rng.standard_normal((500, 10))
    return x, y


def test_against_row_references(views: tuple[np.ndarray, np.ndarray]) -> None:
    x, y = views
    p = streamed(x, y)
    zx = x / np.linalg.norm(x, axis=1, keepdims=True)
    zy = y / np.linalg.norm(y, axis=1, keepdims=True)
    assert alignment(p) == pytest.approx(np.mean(np.sum((zx - zy) ** 2, axis=1)), rel=1e-12)
    bx = (x - x.mean(0)) / x.std(0)  # Barlow Twins' batch norm (without its 1e-5)
    by = (y - y.mean(0)) / y.std(0)
    c = bx.T @ by / len(x)
    np.testing.assert_allclose(cross_correlation(p).numpy(), c, rtol=1e-10, atol=1e-12)
    assert barlow_ondiag(p) == pytest.approx(np.mean((1 - np.diag(c)) ** 2), rel=1e-10)
    off = (c**2).sum() - (np.diag(c) ** 2).sum()
    assert barlow_offdiag(p) == pytest.approx(off / 10, rel=1e-10)
    xc, yc = x - x.mean(0), y - y.mean(0)
    cka = np.linalg.norm(yc.T @ xc) ** 2 / (np.linalg.norm(xc.T @ xc) * np.linalg.norm(yc.T @ yc))
    assert pair_cka(p) == pytest.approx(cka, rel=1e-10)


def test_identical_views() -> None:
    x = np.random.default_rng(1).standard_normal((200, 6))
    p = streamed(x, 2.5 * x)
    assert alignment(p) == pytest.approx(0, abs=1e-15)
    assert barlow_ondiag(p) == pytest.approx(0, abs=1e-15)
    assert pair_cka(p) == pytest.approx(1.0, abs=1e-12)


@pytest.mark.parametrize("chunk", [1, 500])
def test_chunking(views: tuple[np.ndarray, np.ndarray], chunk: int) -> None:
    a, b = streamed(*views), streamed(*views, chunk)
    for f in (alignment, barlow_ondiag, barlow_offdiag, pair_cka):
        assert f(b) == pytest.approx(f(a), rel=1e-10)


def test_widths_and_rows_must_match() -> None:
    p = streamed(np.ones((4, 3)) + np.eye(4, 3), np.ones((4, 2)) + np.eye(4, 2))
    with pytest.raises(InputError, match="one width"):
        alignment(p)
    assert 0 <= pair_cka(p) <= 1
    with pytest.raises(InputError, match="row-aligned"):
        PairMoments(2, 2).update(torch.ones(3, 2), torch.ones(4, 2))
