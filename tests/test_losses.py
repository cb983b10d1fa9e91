"""Differentiable losses: values against docs/design.md §3 and float64 references, gradients against
finite differences and closed forms, NaN-freedom where the naive formulas fail, and a toy
training loop that moves the batch VNE in the direction of the coefficient's sign."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch.autograd import gradcheck

from reprdiag import losses as L
from reprdiag.metrics.entropy import spectral_entropy
from tests.helpers import with_spectrum

F64 = torch.float64

# docs/design.md §3, at X = numpy.random.default_rng(0).standard_normal((64, 16))
REF = {"vne": 2.656603471446447, "cov_offdiag": 0.18377334262265937,
       "vicreg_std": 0.06757734032589349, "er_plugin": -1.8296316874093703,
       "er_joe": -1.8285643911412934}


def naive_vne(x: torch.Tensor) -> torch.Tensor:
    """The formula as often written: d×d ρ, eigvalsh, no floor, nansum."""
    z = torch.nn.functional.normalize(x, dim=1)
    eta = torch.linalg.eigvalsh(z.T @ z / z.shape[0])
    return -(eta * torch.log(eta)).nansum()


def numpy_vne(x: np.ndarray) -> float:
    z = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    eta = np.linalg.eigvalsh(z.T @ z / len(z))
    eta = eta[eta > 1e-15]
    return float(-(eta * np.log(eta)).sum())


# -- values -----------------------------------------------------------------------------------


def test_values_match_design_reference(reference_x: np.ndarray) -> None:
    x = torch.from_numpy(reference_x)
    assert float(L.vne(x)) == pytest.approx(REF["vne"], rel=1e-12)
    assert float(L.cov_offdiag(x)) == pytest.approx(REF["cov_offdiag"], rel=1e-12)
    assert float(L.vicreg_std(x)) == pytest.approx(REF["vicreg_std"], rel=1e-12)
    assert float(L.er_entropy(x)) == pytest.approx(REF["er_plugin"], rel=1e-12)
    assert float(L.er_entropy(x, estimator="joe")) == pytest.approx(REF["er_joe"], rel=1e-12)


def test_float32_and_half_inputs(reference_x: np.ndarray) -> None:
    x32 = torch.from_numpy(reference_x).float()
    assert L.vne(x32).dtype == torch.float32
    assert float(L.vne(x32)) == pytest.approx(REF["vne"], rel=1e-5)
    assert float(L.vne(x32.half())) == pytest.approx(REF["vne"], rel=1e-2)
    assert float(L.er_entropy(x32)) == pytest.approx(REF["er_plugin"], rel=1e-4)


@pytest.mark.parametrize("shape", [(5, 20), (20, 5), (7, 7)])
def test_vne_gram_path_matches_numpy(shape: tuple[int, int]) -> None:
    x = np.random.default_rng(1).standard_normal(shape)
    assert float(L.vne(torch.from_numpy(x))) == pytest.approx(numpy_vne(x), rel=1e-10)


def test_batched_leading_axes_are_independent() -> None:
    x = torch.randn(3, 2, 10, 6, dtype=F64)
    for fn in (L.vne, L.vicreg_std, L.cov_offdiag, L.er_entropy):
        out = fn(x)
        assert out.shape == (3, 2)
        assert float(out[2, 1]) == pytest.approx(float(fn(x[2, 1])), rel=1e-12)


def test_modules_are_signed_terms_to_add() -> None:
    z = torch.randn(32, 8, dtype=F64)
    assert float(L.VNELoss(0.3)(z)) == pytest.approx(-0.3 * float(L.vne(z)))
    assert float(L.EREntropyLoss(2.0, kappa=5.0)(z)) == pytest.approx(
        -2.0 * float(L.er_entropy(z, kappa=5.0)))
    assert float(L.VarianceLoss(25.0)(z)) == pytest.approx(25.0 * float(L.vicreg_std(z)))
    assert float(L.CovarianceLoss()(z)) == pytest.approx(float(L.cov_offdiag(z)))


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="expected"):
        L.vne(torch.ones(5))
    with pytest.raises(ValueError, match="at least 2"):
        L.vicreg_std(torch.ones(1, 4))
    with pytest.raises(ValueError, match="estimator"):
        L.er_entropy(torch.randn(4, 3), estimator="nope")
    with pytest.raises(ValueError, match="method"):
        L.sym_eig(torch.eye(2), method="svd")
    with pytest.raises(ValueError, match="d, d"):
        L.sym_eig(torch.ones(2, 3))


# -- gradients of the losses -------------------------------------------------------------------


@pytest.mark.parametrize("fn", [L.vne, L.vicreg_std, L.cov_offdiag, L.er_entropy],
                         ids=["vne", "vicreg_std", "cov_offdiag", "er_entropy"])
def test_gradcheck_float64(fn: object) -> None:
    x = torch.randn(12, 5, dtype=F64, generator=torch.Generator().manual_seed(3))
    assert gradcheck(fn, (x.requires_grad_(),), eps=1e-6, atol=1e-6)


def test_vne_gradcheck_gram_path() -> None:
    x = torch.randn(4, 9, dtype=F64, generator=torch.Generator().manual_seed(4))
    assert gradcheck(L.vne, (x.requires_grad_(),), eps=1e-6, atol=1e-6)


def rank_deficient_batches() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(5)
    return {
        "N<d": torch.randn(6, 16, dtype=F64, generator=g),
        "rank 2 of 8": torch.randn(32, 2, dtype=F64, generator=g)
        @ torch.randn(2, 8, dtype=F64, generator=g),
        "dead columns": torch.cat([torch.randn(32, 3, dtype=F64, generator=g),
                                   torch.zeros(32, 5, dtype=F64)], dim=1),
        "collapsed": torch.ones(16, 4, dtype=F64),
    }


@pytest.mark.parametrize("name", list(rank_deficient_batches()))
def test_rank_deficient_batches_naive_nan_ours_finite(name: str) -> None:
    x = rank_deficient_batches()[name]
    naive = x.clone().requires_grad_()
    naive_vne(naive).backward()
    assert torch.isnan(naive.grad).any()  # ln(0 or rounding < 0) meets 0: NaN
    ours = x.clone().requires_grad_()
    value = L.vne(ours)
    value.backward()
    assert torch.isfinite(ours.grad).all()
    assert float(value.detach()) == pytest.approx(numpy_vne(x.numpy()), abs=1e-9)


def test_repeated_eigenvalues_vne_is_finite_and_so_is_eigvalsh() -> None:
    """Stacked identities: ρ = I/d, a d-fold eigenvalue. eigvalsh's backward uses only the
    eigenvectors, so even the naive formula stays finite here (no eigenvalue is 0)."""
    x = torch.eye(8, dtype=F64).repeat(3, 1)
    for fn in (L.vne, naive_vne):
        z = x.clone().requires_grad_()
        value = fn(z)
        value.backward()
        assert float(value.detach()) == pytest.approx(math.log(8), rel=1e-12)
        assert torch.isfinite(z.grad).all()


def test_vne_gradient_closed_form() -> None:
    """∂VNE/∂ρ = −V diag(ln η + 1) Vᵀ, checked on ρ itself (rows already unit norm)."""
    g = torch.Generator().manual_seed(6)
    z = torch.nn.functional.normalize(torch.randn(40, 5, dtype=F64, generator=g), dim=1)
    rho = (z.T @ z / 40).requires_grad_()
    spectral_entropy(torch.linalg.eigvalsh(rho)).backward()
    vals, vecs = np.linalg.eigh(rho.detach().numpy())
    expected = -(vecs * (np.log(vals) + 1.0)) @ vecs.T
    np.testing.assert_allclose(rho.grad.numpy(), expected, atol=1e-10)


# -- eigendecomposition ------------------------------------------------------------------------


def test_rank_deficient_whitening_exact_nan_taylor_matches_finite_differences() -> None:
    """Three dead features: the covariance has a triple zero eigenvalue, exactly. The exact
    backward gives NaN; the Taylor one agrees with central finite differences (the pairs it
    approximates, zero with zero, carry no weight in this loss)."""
    g = torch.Generator().manual_seed(7)
    x0 = torch.cat([torch.randn(16, 3, dtype=F64, generator=g), torch.zeros(16, 3, dtype=F64)],
                   dim=1)

    def loss(x: torch.Tensor, method: str) -> torch.Tensor:
        xw = (x - x.mean(0)) @ L.inv_sqrtm(L.batch_covariance(x), eps=1e-3, method=method)
        return (xw[:, :3] ** 2).sum()

    grads = {}
    for method in ("exact", "taylor"):
        x = x0.clone().requires_grad_()
        loss(x, method).backward()
        grads[method] = x.grad
    assert torch.isnan(grads["exact"]).all()
    h, numeric = 1e-6, torch.zeros_like(x0)
    for idx in np.ndindex(*x0.shape):
        e = torch.zeros_like(x0)
        e[idx] = h
        numeric[idx] = (loss(x0 + e, "taylor") - loss(x0 - e, "taylor")) / (2 * h)
    torch.testing.assert_close(grads["taylor"], numeric, rtol=0, atol=1e-7)


def test_matrix_functions() -> None:
    c = with_spectrum([0.0, 0.5, 2.0, 9.0], seed=6)
    r = L.sqrtm(c, eps=0.0)
    torch.testing.assert_close(r @ r, c, rtol=0, atol=1e-12)
    x = torch.randn(200, 4, dtype=F64, generator=torch.Generator().manual_seed(8))
    x = x @ torch.tensor([[3.0, 0, 0, 0], [1, 1, 0, 0], [0, 0, 0.2, 0], [0, 2, 0, 1]], dtype=F64)
    w = L.inv_sqrtm(L.batch_covariance(x), eps=0.0)
    torch.testing.assert_close(L.batch_covariance(x @ w), torch.eye(4, dtype=F64), rtol=0,
                               atol=1e-10)


# -- training ----------------------------------------------------------------------------------


def train_vne(coef: float, steps: int = 30) -> tuple[float, float]:
    g = torch.Generator().manual_seed(0)
    data = torch.randn(128, 16, generator=g)
    encoder = torch.nn.Linear(16, 8)
    with torch.no_grad():
        encoder.weight.copy_(torch.randn(8, 16, generator=g) * 0.3)
        encoder.bias.zero_()
    opt = torch.optim.Adam(encoder.parameters(), lr=0.02)
    reg = L.VNELoss(coef)
    with torch.no_grad():
        before = float(L.vne(encoder(data)))
    for step in range(steps):
        batch = data[(step * 32) % 128:][:32]
        loss = reg(encoder(batch))
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        return before, float(L.vne(encoder(data)))


def test_training_coef_sign_moves_vne() -> None:
    before, up = train_vne(+1.0)
    _, down = train_vne(-1.0)
    assert up > before + 0.1
    assert down < before - 0.3
    assert up <= math.log(8) + 1e-6 and down >= 0.0


def test_uniformity_and_alignment_losses_match_the_metrics_and_have_gradients() -> None:
    from reprdiag.metrics.paired import alignment_metric, paired
    from reprdiag.metrics.uniformity import uniformity as uniformity_metric

    rng = np.random.default_rng(3)
    x = torch.from_numpy(rng.standard_normal((60, 7))).requires_grad_(True)
    y = torch.from_numpy(rng.standard_normal((60, 7)))
    u = L.uniformity(x)
    assert float(u) == pytest.approx(uniformity_metric(x.detach()), rel=1e-12)
    a = L.alignment(x, y)
    assert float(a) == pytest.approx(alignment_metric(paired(x.detach(), y)), rel=1e-12)
    (u + a).backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    assert torch.autograd.gradcheck(lambda t: L.uniformity(t), (x[:8].detach().clone()
                                                                .requires_grad_(True),))
