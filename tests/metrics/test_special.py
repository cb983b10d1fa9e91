"""Tests for reprdiag.metrics.special: log-Bessel I_nu, the vMF normalizer, the sphere's area."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from reprdiag.metrics.special import log_bessel_iv, log_sphere_area, log_vmf_normalizer

# ------------------------------------------------------------------------------ log_bessel_iv


def test_log_bessel_iv_matches_scipy_grid() -> None:
    special = pytest.importorskip("scipy.special")
    nus = np.unique(
        np.concatenate(
            [
                np.linspace(0.0, 2000.0, 161),
                np.arange(0.0, 60.0, 0.5),  # the series / asymptotic switch is at r = 50
                [0.25, 1.0 / 3.0, 49.9, 50.1, 511.0, 999.5, 1999.5],
            ]
        )
    )
    kappas = np.unique(
        np.concatenate([np.logspace(-3.0, 3.0, 121), np.linspace(30.0, 70.0, 81), [49.999, 50.0]])
    )
    k_t = torch.from_numpy(kappas)
    checked = 0
    worst_rel = 0.0
    for nu in nus:
        scaled = special.ive(nu, kappas)
        # scipy can only serve as the reference where I_nu(k) e^-k is a normal float64
        ok = np.isfinite(scaled) & (scaled > 1e-300)
        if not ok.any():
            continue
        ref = np.log(scaled[ok]) + kappas[ok]
        got = log_bessel_iv(float(nu), k_t).numpy()[ok]
        assert got.dtype == np.float64
        np.testing.assert_allclose(got, ref, rtol=1e-10, atol=1e-12, err_msg=f"nu={nu}")
        big = np.abs(ref) > 1e-2
        if big.any():
            worst_rel = max(worst_rel, float(np.max(np.abs(got - ref)[big] / np.abs(ref[big]))))
        checked += int(ok.sum())
    assert checked > 20000
    assert worst_rel < 1e-11


def test_log_bessel_iv_recurrence_where_scipy_underflows() -> None:
    # I_{nu-1}(k) = I_{nu+1}(k) + (2 nu / k) I_nu(k), in log space, for orders where I itself
    # is far below float64's range (d up to 8192, so nu up to 4095).
    kappas = torch.tensor(
        [1e-3, 0.1, 1.0, 10.0, 49.0, 51.0, 300.0, 1000.0, 2700.0, 5000.0], dtype=torch.float64
    )
    for nu in [30.0, 55.5, 499.0, 1000.0, 2047.0, 2999.5, 4095.0]:
        lhs = log_bessel_iv(nu - 1.0, kappas)
        rhs = torch.logaddexp(
            log_bessel_iv(nu + 1.0, kappas),
            torch.log(2.0 * nu / kappas) + log_bessel_iv(nu, kappas),
        )
        torch.testing.assert_close(lhs, rhs, rtol=1e-13, atol=5e-12, msg=f"nu={nu}")


def test_log_bessel_iv_high_precision_points() -> None:
    mpmath = pytest.importorskip("mpmath")
    mpmath.mp.dps = 30
    points = [
        (2000.0, 1e-3),
        (2000.0, 1000.0),
        (4095.0, 10.0),
        (4095.0, 2716.7868),
        (999.5, 663.0),
        (0.0, 1e5),
        (3.0, 1e4),
        (49.9, 0.5),
        (24.5, 49.0),
    ]
    for nu, k in points:
        ref = float(mpmath.log(mpmath.besseli(nu, k)))
        got = float(log_bessel_iv(nu, k))
        assert got == pytest.approx(ref, rel=1e-13, abs=1e-12), (nu, k)


def test_log_bessel_iv_edges_and_shapes() -> None:
    assert float(log_bessel_iv(0.0, 0.0)) == 0.0
    assert float(log_bessel_iv(2.5, 0.0)) == -math.inf
    k = torch.tensor([[0.5, 60.0], [1e-3, 1e3]], dtype=torch.float32)
    out = log_bessel_iv(3.0, k)
    assert out.shape == (2, 2) and out.dtype == torch.float64
    for i in range(2):
        for j in range(2):
            assert float(out[i, j]) == pytest.approx(float(log_bessel_iv(3.0, float(k[i, j]))))
    # I_{1/2}(x) = sqrt(2/(pi x)) sinh x and I_{-1/2}(x) = sqrt(2/(pi x)) cosh x
    for x in [1e-3, 0.7, 5.0, 80.0, 900.0]:
        base = 0.5 * math.log(2.0 / (math.pi * x))
        assert float(log_bessel_iv(0.5, x)) == pytest.approx(
            base + x + math.log1p(-math.exp(-2.0 * x)) - math.log(2.0), rel=1e-13, abs=1e-13
        )
        assert float(log_bessel_iv(-0.5, x)) == pytest.approx(
            base + x + math.log1p(math.exp(-2.0 * x)) - math.log(2.0), rel=1e-13, abs=1e-13
        )
    with pytest.raises(ValueError):
        log_bessel_iv(-1.0, 1.0)
    with pytest.raises(ValueError):
        log_bessel_iv(1.0, -1.0)


# ------------------------------------------------------------------- normalizer, sphere area


def test_log_vmf_normalizer_closed_forms() -> None:
    for kappa in [1e-2, 1.0, 10.0, 300.0]:
        # d = 3: C = kappa / (4 pi sinh kappa); d = 1: C = 1 / (2 cosh kappa)
        log_sinh = kappa + math.log1p(-math.exp(-2.0 * kappa)) - math.log(2.0)
        log_cosh = kappa + math.log1p(math.exp(-2.0 * kappa)) - math.log(2.0)
        assert log_vmf_normalizer(3, kappa) == pytest.approx(
            math.log(kappa) - math.log(4.0 * math.pi) - log_sinh, rel=1e-13, abs=1e-13
        )
        assert log_vmf_normalizer(1, kappa) == pytest.approx(
            -math.log(2.0) - log_cosh, rel=1e-13, abs=1e-13
        )
    # kappa -> 0: the uniform density 1 / |S^{d-1}|, ln C = -ln|S^{d-1}| - kappa^2 / (2d) + ...
    for d in [2, 16, 1000, 8192]:
        assert log_vmf_normalizer(d, 1e-6) == pytest.approx(-log_sphere_area(d), abs=1e-10)
        assert math.isfinite(log_vmf_normalizer(d, 10.0))
    assert log_sphere_area(3) == pytest.approx(math.log(4.0 * math.pi), rel=1e-15)
    assert log_sphere_area(2) == pytest.approx(math.log(2.0 * math.pi), rel=1e-15)
    with pytest.raises(ValueError):
        log_vmf_normalizer(16, 0.0)
    with pytest.raises(ValueError):
        log_vmf_normalizer(0, 1.0)
