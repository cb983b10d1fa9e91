"""Every metric against docs/design.md §3's reference values and an independent numpy reference."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.special import logsumexp

import reprdiag.metrics as M
from reprdiag.metrics import METRICS, Statistics

# docs/design.md §3: values at X = default_rng(0).standard_normal((64, 16)), computed in float64.
REFERENCE = {
    "vne": 2.656603471446447,
    "vne_normalized": 0.9581671634660484,
    "effective_rank": 15.455487859318634,
    "rankme": 15.454066365405907,
    "participation_ratio": 12.604122257386113,
    "stable_rank": 7.389172324482981,
    "numerical_rank": 16,
    "alpha_req": 1.718652932618599,
    "isoscore": 0.7736081504924075,
    "partition_isotropy": 0.245680200764099,
    "avg_cosine": 0.005336904717842117,
    "cov_offdiag": 0.18377334262265937,
    "cov_offdiag_frac": 0.1637081122192815,
    "vicreg_std": 0.06757734032589349,
    "std_normalized": 0.9904998854461693,
    "er_entropy": -1.8296316874093703,
    "uniformity": -3.493425466587257,  # scipy pdist, float64 (tests/metrics/test_uniformity.py)
}


@pytest.mark.parametrize("name", sorted(REFERENCE))
def test_reference_value(reference_x: np.ndarray, name: str) -> None:
    value = METRICS[name].func(torch.from_numpy(reference_x))
    assert value == pytest.approx(REFERENCE[name], rel=1e-9, abs=1e-15)


def test_every_metric_has_a_reference_or_is_derived() -> None:
    own = {n for n, info in METRICS.items() if info.needs is None}  # label/pair metrics:
    assert own - set(REFERENCE) == {"alpha_req_r2"}  # test_labels.py, test_paired.py


def test_er_entropy_variants(reference_x: np.ndarray) -> None:
    x = torch.from_numpy(reference_x)
    assert M.er_entropy(x, er_estimator="joe") == pytest.approx(-1.8285643911412934, rel=1e-9)
    assert M.er_entropy(x, er_compat="reference") == pytest.approx(-1.8296316869892468,
                                                                   rel=1e-9)
    assert M.er_entropy(x, er_estimator="joe", er_compat="reference") == pytest.approx(
        -1.8285643907211702, rel=1e-9)


def test_alpha_req_over_all_ranks(reference_x: np.ndarray) -> None:
    # docs/design.md gives 0.5030775131140687; an independent numpy weighted least-squares fit
    # gives 0.50307751178 (2.7e-9 relative apart), so this one is checked to 1e-8.
    assert M.alpha_req(torch.from_numpy(reference_x), alpha_ranks=(1, 16)) == pytest.approx(
        0.5030775131140687, rel=1e-8)


# -- an independent float64 numpy implementation, on data with a mean offset and N > d ------

def numpy_reference(x: np.ndarray, kappa: float = 10.0) -> dict[str, float]:
    n, d = x.shape
    z = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    eta = np.clip(np.linalg.eigvalsh(z.T @ z / n), 0, None)
    eta = eta[eta > 0]
    c = np.cov(x, rowvar=False)
    lam = np.sort(np.clip(np.linalg.eigvalsh(c), 0, None))[::-1]
    s = np.sqrt(lam)
    p = s / s.sum()
    p = p[p > 0]
    sv = np.linalg.svd(x, compute_uv=False)
    q = sv / sv.sum() + 1e-7
    pr = lam.sum() ** 2 / (lam**2).sum()
    off = c - np.diag(np.diag(c))
    _, vecs = np.linalg.eigh(x.T @ x)
    lse = logsumexp(x @ np.concatenate([vecs, -vecs], axis=1), axis=0)
    i = np.arange(11, min(100, d) + 1)
    w = np.sqrt(1.0 / i)
    design = np.stack([-np.log(i), np.ones(i.size)], axis=1)
    alpha = np.linalg.lstsq(design * w[:, None], np.log(lam[i - 1] / lam.sum()) * w,
                            rcond=None)[0][0]
    return {
        "vne": float(-(eta * np.log(eta)).sum()),
        "effective_rank": float(np.exp(-(p * np.log(p)).sum())),
        "rankme": float(np.exp(-(q * np.log(q)).sum())),
        "participation_ratio": float(pr),
        "stable_rank": float(lam.sum() / lam[0]),
        "isoscore": float((pr - 1) / (d - 1)),
        "alpha_req": float(alpha),
        "partition_isotropy": float(np.exp(lse.min() - lse.max())),
        "avg_cosine": float((np.linalg.norm(z.sum(0)) ** 2 - n) / (n * (n - 1))),
        "cov_offdiag": float((off**2).sum() / d),
        "cov_offdiag_frac": float((off**2).sum() / (c**2).sum()),
        "vicreg_std": float(np.mean(np.maximum(0, 1 - np.sqrt(np.diag(c) + 1e-4)))),
        "std_normalized": float(np.sqrt(d) * z.std(axis=0, ddof=1).mean()),
    }


@pytest.fixture(scope="module")
def skewed() -> np.ndarray:
    rng = np.random.default_rng(7)
    scales = np.linspace(3.0, 0.05, 40) ** 1.5
    mix = np.linalg.qr(rng.standard_normal((40, 40)))[0]
    return rng.standard_normal((300, 40)) * scales @ mix + 0.3


@pytest.mark.parametrize("name", sorted(numpy_reference(np.eye(20, 12) + 1.0)))
def test_matches_numpy_reference(skewed: np.ndarray, name: str) -> None:
    expected = numpy_reference(skewed)[name]
    stats = Statistics.from_tensor(torch.from_numpy(skewed))
    assert METRICS[name].func(stats) == pytest.approx(expected, rel=1e-9, abs=1e-13)
