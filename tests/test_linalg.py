"""reprdiag.linalg: the symmetric eigendecomposition with a backward that survives repeated
eigenvalues (exact forward, Taylor-series backward against torch's eigh, closed forms and
finite differences) and the matrix functions built on it."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from torch.autograd import gradcheck

from reprdiag import linalg as L
from tests.helpers import with_spectrum

F64 = torch.float64


def sym(a: torch.Tensor) -> torch.Tensor:
    return (a + a.mT) / 2


def test_sym_eig_forward_is_exact() -> None:
    a = with_spectrum([0.5, 1.0, 1.0, 7.0], seed=1).float()
    vals, vecs = L.sym_eig(a)
    assert vals.dtype == torch.float32
    np.testing.assert_allclose(vals.numpy(), [0.5, 1.0, 1.0, 7.0], rtol=1e-6)
    np.testing.assert_allclose((vecs @ torch.diag(vals) @ vecs.T).numpy(), a.numpy(), atol=1e-5)


@pytest.mark.parametrize("method", ["exact", "taylor"])
def test_gradcheck_sym_eig_well_separated(method: str) -> None:
    a = with_spectrum([1.0, 3.0, 9.0, 27.0], seed=2).requires_grad_()
    w = torch.randn(4, 4, dtype=F64, generator=torch.Generator().manual_seed(0))

    def f(m: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        vals, vecs = L.sym_eig(sym(m), method=method)
        return vals, (vecs * w).sum(0) ** 2  # sign-invariant function of each eigenvector

    assert gradcheck(f, (a,), eps=1e-6, atol=1e-7)
    assert gradcheck(lambda m: L.sqrtm(sym(m), method=method), (a,), eps=1e-6, atol=1e-7)


def test_taylor_matches_torch_eigh_when_gaps_are_wide() -> None:
    a = with_spectrum([0.1, 1.0, 10.0, 100.0], seed=3)
    w = torch.randn(4, dtype=F64, generator=torch.Generator().manual_seed(1))
    grads = []
    for eig in (lambda m: torch.linalg.eigh(m), lambda m: L.sym_eig(m)):
        m = a.clone().requires_grad_()
        _, vecs = eig(m)
        ((vecs.T @ w) ** 2 * torch.arange(1.0, 5.0, dtype=F64)).sum().backward()
        grads.append(sym(m.grad))
    torch.testing.assert_close(grads[1], grads[0], rtol=1e-10, atol=1e-12)


def test_taylor_two_by_two_closed_form() -> None:
    """For eigenvalues s < b the Taylor factor is (1 − r^{K+1})/(b − s), r = s/b: a gradient
    that depends only on the eigenvectors is the exact one times 1 − r^{K+1}."""
    b, s, order = 2.0, 1.5, 7
    a = with_spectrum([s, b], seed=4)
    w = torch.tensor([0.3, -1.1], dtype=F64)
    grads = {}
    for method in ("exact", "taylor"):
        m = a.clone().requires_grad_()
        _, vecs = L.sym_eig(m, method=method, order=order)
        ((vecs[:, 1] @ w) ** 2).backward()
        grads[method] = m.grad
    factor = 1.0 - (s / b) ** (order + 1)
    torch.testing.assert_close(grads["taylor"], factor * grads["exact"], rtol=1e-12, atol=1e-14)


def test_taylor_approaches_exact_as_gap_grows() -> None:
    w = torch.randn(3, dtype=F64, generator=torch.Generator().manual_seed(2))
    errors = []
    for gap in (0.05, 0.2, 0.5, 1.0, 3.0):
        a = with_spectrum([1.0, 1.0 + gap, (1.0 + gap) ** 2], seed=5)
        grads = []
        for method in ("exact", "taylor"):
            m = a.clone().requires_grad_()
            _, vecs = L.sym_eig(m, method=method, order=10)
            (((vecs.T @ w) ** 2) * torch.tensor([1.0, 2.0, 4.0], dtype=F64)).sum().backward()
            grads.append(m.grad)
        errors.append(float((grads[1] - grads[0]).norm() / grads[0].norm()))
    assert all(e2 < e1 for e1, e2 in itertools.pairwise(errors)), errors
    assert errors[0] > 0.1 and errors[-1] < 1e-6, errors


def test_repeated_eigenvalues_torch_nan_taylor_finite() -> None:
    """Stacked identities: C = I (a 4-fold eigenvalue). torch.linalg.eigh and method="exact"
    give NaN gradients for any loss that touches the eigenvectors; the Taylor backward does not."""
    x = torch.eye(4, dtype=F64).repeat(2, 1) * 2.0**0.5

    def loss(vecs: torch.Tensor) -> torch.Tensor:
        return (vecs[:, -1] ** 4).sum()

    c = x.T @ x / 2  # = I
    m = c.clone().requires_grad_()
    loss(torch.linalg.eigh(m)[1]).backward()
    assert not torch.isfinite(m.grad).all()
    m = c.clone().requires_grad_()
    loss(L.sym_eig(m, method="exact")[1]).backward()
    assert not torch.isfinite(m.grad).all()
    m = c.clone().requires_grad_()
    loss(L.sym_eig(m, method="taylor")[1]).backward()
    assert torch.isfinite(m.grad).all()
