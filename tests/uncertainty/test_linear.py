"""Linearized deleted values (reprdiag.uncertainty.linear): gradients from autograd through
the metrics' own code, against closed forms, and deletions against exact recomputation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import reprdiag
from reprdiag.metrics import METRICS, Statistics
from reprdiag.uncertainty.linear import gradients, linearize, traced

pytestmark = pytest.mark.usefixtures("one_thread")


def _rows(n: int = 6000, d: int = 24, seed: int = 11) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    scale = torch.arange(1, d + 1, dtype=torch.float64) ** -0.6
    return torch.randn(n, d, dtype=torch.float64, generator=g) * scale + 0.3


def _full(x: torch.Tensor) -> Statistics:
    stats = Statistics.from_tensor(x)
    for name in ("covariance", "autocorrelation", "raw"):
        stats.spectra.with_vectors(name)
    return stats


def test_vne_gradient_is_its_closed_form() -> None:
    """∂VNE/∂η_k = (−ln p_k − H)/Ση with p = η/Ση (numpy float64)."""
    stats = _full(_rows(2000, 12))
    view, leaves = traced(stats)
    grads = gradients(METRICS["vne"].func(view), leaves)
    eta = stats.autocorr_eigenvalues.numpy()
    p = eta / eta.sum()
    h = -(p * np.log(p)).sum()
    assert set(grads) == {"autocorrelation"}
    np.testing.assert_allclose(grads["autocorrelation"].numpy(), (-np.log(p) - h) / eta.sum(),
                               rtol=1e-10)


def test_rankme_gradient_is_its_closed_form_in_the_per_row_matrix() -> None:
    """RankMe of σ = √(N·μ), μ the eigenvalues of XᵀX/N: ∂R/∂μ_j = R·(N/2σ_j)·Σ_k
    (−ln p_k − 1)(δ_kj − σ_k/Σσ)/Σσ, p = σ/Σσ + 1e-7 (numpy float64); and the gradient is
    orthogonal to μ (RankMe does not depend on the spectrum's scale)."""
    x = _rows(2000, 12)
    stats = _full(x)
    view, leaves = traced(stats)
    grads = gradients(METRICS["rankme"].func(view), leaves)
    n = x.shape[0]
    mu = stats.spectra.raw.values.numpy() / n
    sigma = np.sqrt(n * mu)
    total = sigma.sum()
    p = sigma / total + 1e-7
    r = np.exp(-(p * np.log(p)).sum())
    dh = ((-np.log(p) - 1)[:, None] * (np.eye(12) - (sigma / total)[:, None])).sum(0) / total
    want = r * dh * n / (2 * sigma)
    np.testing.assert_allclose(grads["raw"].numpy(), want, rtol=1e-8)
    assert abs(want @ mu) < 1e-12 * np.abs(want * mu).sum()


def _spreads(x: torch.Tensor, name: str, blocks: int = 10) -> tuple[np.ndarray, np.ndarray]:
    """The K deleted values about their mean: recomputed without each block of rows, and
    linearized. (Each deletion also moves by a second-order amount common to all blocks,
    the jackknife's bias, which first order does not give and the SE does not see.)"""
    full = _full(x)
    lin = linearize(full, [METRICS[name]])[name]
    assert lin.value == pytest.approx(METRICS[name].func(x), rel=1e-12)
    label = torch.arange(x.shape[0]) % blocks
    exact, linear = [], []
    for b in range(blocks):
        part = Statistics.from_tensor(x[label != b])
        exact.append(METRICS[name].func(part))
        part.base = full
        linear.append(lin.deleted(part))
    exact_a, linear_a = np.array(exact), np.array(linear)
    return exact_a - exact_a.mean(), linear_a - linear_a.mean()


@pytest.mark.parametrize("name", ["vne", "vne_normalized", "rankme", "rankme_frac"])
def test_linearized_deletions_spread_as_the_exact_ones(name: str) -> None:
    """K = 10 deletions of 600 rows at d = 24: the linearized values about their mean within
    3 % of the exact ones' (RankMe linearized in XᵀX itself, not XᵀX/N, was 10 % off)."""
    exact, linear = _spreads(_rows(), name)
    assert np.linalg.norm(exact) > 0
    assert np.linalg.norm(linear - exact) < 0.03 * np.linalg.norm(exact)


def test_what_is_not_linearized() -> None:
    """Covariance metrics (updated per block anyway), values without a graph, a non-finite
    gradient (RankMe at exact zero eigenvalues of rank-deficient data) and a function of
    XᵀX's spectrum that depends on its scale are left to the per-block evaluation."""
    full = _full(_rows(2000, 12))
    spectral = [i for i in METRICS.values() if i.spectral and not i.uses_sample]
    assert sorted(linearize(full, spectral)) == ["rankme", "rankme_frac", "vne",
                                                 "vne_normalized"]
    _, leaves = traced(full)
    assert gradients(torch.tensor(1.0, dtype=torch.float64), leaves) is None
    assert gradients(leaves["raw"].sum(), leaves) is None  # scales with XᵀX
    assert gradients(leaves["raw"][0] / leaves["raw"].sum(), leaves) is not None
    assert gradients(leaves["covariance"].sum(), leaves) is None
    flat = torch.cat([_rows(2000, 12), torch.zeros(2000, 4, dtype=torch.float64)], dim=1)
    assert "rankme" not in linearize(_full(flat), [METRICS["rankme"]])


def test_the_jackknife_reports_what_it_linearized() -> None:
    """First order: RankMe and VNE linearized (recorded), their SE within 1 % of the
    per-block first-order evaluation they replace; exact deletions record nothing."""
    x = _rows(4000, 16)
    kw = dict(uncertainty=True, blocks=10, device="cpu",
              metrics=["vne", "rankme", "effective_rank"])
    fast = reprdiag.analyze(x, **kw).inputs[0]
    exact = reprdiag.analyze(x, jackknife="exact", **kw).inputs[0]
    assert fast.uncertainty_method["linearized"] == ["rankme", "vne"]
    assert "linearized" not in exact.uncertainty_method
    for name in ("vne", "rankme"):
        assert fast.se(name) == pytest.approx(exact.se(name), rel=0.03), name
