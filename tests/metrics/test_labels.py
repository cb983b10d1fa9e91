"""Label-aware metrics from streamed class sums against float64 numpy/scipy references computed
from the rows themselves, and closed forms (collapsed classes, a simplex ETF)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.linalg
import torch

from reprdiag.errors import InputError
from reprdiag.metrics.labels import (
    LIDAR_DELTA,
    LIDAR_EPS,
    class_balance,
    class_effective_ranks,
    lidar,
    nc1,
    nc2_equiangularity,
    nc2_equinorm,
)
from reprdiag.stats import StreamingMoments
from reprdiag.stats.classes import ClassMoments, check_labels


def streamed(x: np.ndarray, y: np.ndarray, chunk: int = 37,
             second: bool = False) -> tuple[StreamingMoments, ClassMoments]:
    m = StreamingMoments(x.shape[1])
    c = ClassMoments(x.shape[1], second_moments=second)
    for lo in range(0, len(x), chunk):
        rows = torch.from_numpy(x[lo:lo + chunk])
        m.update(rows)
        c.update(rows, torch.from_numpy(y[lo:lo + chunk]))
    return m, c


def reference(x: np.ndarray, y: np.ndarray) -> dict[str, float]:
    """Straight from the definitions, on the rows (no reprdiag code)."""
    classes = np.unique(y)
    n, d, k = len(x), x.shape[1], len(classes)
    mu_g = x.mean(0)
    mus = np.stack([x[y == c].mean(0) for c in classes])
    sw = sum((x[y == c] - mus[i]).T @ (x[y == c] - mus[i]) for i, c in enumerate(classes)) / n
    off = mus - mu_g
    sb = off.T @ off / k
    out = {"nc1": float(np.trace(sw @ np.linalg.pinv(sb, rcond=d * np.finfo(float).eps,
                                                      hermitian=True)) / k)}
    off_l = mus - mus.mean(0)
    lam = scipy.linalg.eigh(off_l.T @ off_l / k, sw + LIDAR_DELTA * np.eye(d), eigvals_only=True)
    p = np.clip(lam, 0, None) / np.clip(lam, 0, None).sum() + LIDAR_EPS
    out["lidar"] = float(np.exp(-(p * np.log(p)).sum()))
    norms = np.linalg.norm(off, axis=1)
    out["equinorm"] = norms.std(ddof=1) / norms.mean()
    unit = off / norms[:, None]
    cos = (unit @ unit.T)[np.triu_indices(k, 1)]
    out["equiangularity"] = cos.std(ddof=1)
    share = np.array([(y == c).mean() for c in classes])
    out["balance"] = float(-(share * np.log(share)).sum() / np.log(k))
    eranks = []
    for c in classes:
        s = np.sqrt(np.clip(np.linalg.eigvalsh(np.cov(x[y == c], rowvar=False)), 0, None))
        q = s[s > 0] / s.sum()
        eranks.append(np.exp(-(q * np.log(q)).sum()))
    out["eranks"] = np.array(eranks)
    return out


@pytest.fixture
def labelled() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    k, d = 6, 12
    centres = rng.standard_normal((k, d)) * 3 + 10.0
    y = rng.choice(np.array([3, 17, 5, 8, 40, 2]), size=700, p=[.3, .1, .2, .15, .15, .1])
    lookup = {v: i for i, v in enumerate([3, 17, 5, 8, 40, 2])}
    x = np.stack([centres[lookup[v]] for v in y]) + rng.standard_normal((700, d)) * np.linspace(
        2, 0.2, d)
    return x, y


def test_against_references(labelled: tuple[np.ndarray, np.ndarray]) -> None:
    x, y = labelled
    m, c = streamed(x, y, second=True)
    ref = reference(x, y)
    assert nc1(m, c) == pytest.approx(ref["nc1"], rel=1e-9)
    assert lidar(m, c) == pytest.approx(ref["lidar"], rel=1e-9)
    assert nc2_equinorm(m, c) == pytest.approx(ref["equinorm"], rel=1e-9)
    assert nc2_equiangularity(m, c) == pytest.approx(ref["equiangularity"], rel=1e-9)
    assert class_balance(c) == pytest.approx(ref["balance"], rel=1e-12)
    order = np.argsort(c.ids)  # reference classes are sorted, ours in order of appearance
    np.testing.assert_allclose(class_effective_ranks(c)[order], ref["eranks"], rtol=1e-9)


@pytest.mark.parametrize("chunk", [1, 50, 700])
def test_streaming_equals_in_memory(labelled: tuple[np.ndarray, np.ndarray], chunk: int) -> None:
    x, y = labelled
    whole_m, whole_c = streamed(x, y, 700)
    m, c = streamed(x, y, chunk)
    for f in (nc1, lidar, nc2_equinorm, nc2_equiangularity):
        assert f(m, c) == pytest.approx(f(whole_m, whole_c), rel=1e-10)


def test_collapsed_classes_and_simplex_etf() -> None:
    k = 5
    etf = np.eye(k) - 1.0 / k  # centred one-hots: a simplex ETF, cos = -1/(k-1)
    y = np.repeat(np.arange(k), 20)
    x = etf[y] * 4.0 + 1.0
    m, c = streamed(x, y)
    assert nc1(m, c) == pytest.approx(0.0, abs=1e-12)
    assert nc2_equinorm(m, c) == pytest.approx(0.0, abs=1e-12)
    assert nc2_equiangularity(m, c) == pytest.approx(0.0, abs=1e-12)
    assert class_balance(c) == pytest.approx(1.0)


def test_label_checks() -> None:
    assert check_labels(torch.tensor([[1.0], [2.0]]), 2, "y").tolist() == [1, 2]
    with pytest.raises(InputError, match="3 labels for 4 rows"):
        check_labels(torch.tensor([1, 2, 3]), 4, "y")
    with pytest.raises(InputError, match="not whole numbers"):
        check_labels(torch.tensor([1.5, 2.0]), 2, "y")
    with pytest.raises(InputError, match="not one label per row"):
        check_labels(torch.zeros(2, 3), 2, "y")
    m, c = streamed(np.ones((4, 2)), np.zeros(4, dtype=np.int64))
    with pytest.raises(InputError, match="at least 2"):
        nc1(m, c)
    assert math.isfinite(class_balance(streamed(np.ones((4, 2)), np.array([0, 0, 1, 1]))[1]))
