"""The first-order jackknife (``jackknife="first-order"``, auto when N/K ≥ d): deleted
spectra updated from the full decompositions, partition isotropy from one grouped pass."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

import reprdiag
from reprdiag.metrics.pairwise import partition_sums
from reprdiag.uncertainty import deleted_spectra_path
from tests.helpers import assert_one_line_error, run_main

pytestmark = pytest.mark.usefixtures("one_thread")

SPECTRAL = ("vne", "effective_rank", "rankme", "participation_ratio", "stable_rank",
            "isoscore", "partition_isotropy", "alpha_req")


@pytest.fixture(scope="module")
def rows() -> torch.Tensor:
    g = torch.Generator().manual_seed(11)
    scale = torch.arange(1, 25, dtype=torch.float64) ** -0.6
    return torch.randn(6000, 24, dtype=torch.float64, generator=g) * scale + 0.3


def test_auto_takes_first_order_only_when_every_block_holds_d_rows() -> None:
    assert deleted_spectra_path("auto", 20_000, 384, 20) == "first-order"
    assert deleted_spectra_path("auto", 7_679, 384, 20) == "exact"
    assert deleted_spectra_path("exact", 10**9, 8, 20) == "exact"
    assert deleted_spectra_path("first-order", 100, 384, 20) == "first-order"
    with pytest.raises(ValueError):
        deleted_spectra_path("second-order", 100, 8, 20)


def test_first_order_standard_errors_agree_with_exact_deletions(rows: torch.Tensor) -> None:
    """K = 10 blocks of 600 rows at d = 24: each spectral metric's SE within 5 % of the exact
    delete-a-block jackknife's (which tests/uncertainty/test_jackknife.py checks against a
    direct recomputation); metrics that do not read the spectra are identical."""
    kw = dict(uncertainty=True, blocks=10, device="cpu")
    fast = reprdiag.analyze(rows, **kw).inputs[0]
    exact = reprdiag.analyze(rows, jackknife="exact", **kw).inputs[0]
    assert fast.uncertainty_method["deleted_spectra"] == "first-order"
    assert exact.uncertainty_method["deleted_spectra"] == "exact"
    assert fast.metrics == pytest.approx(exact.metrics, rel=1e-12)  # eigh there, eigvalsh here
    for name in SPECTRAL:
        assert fast.se(name) == pytest.approx(exact.se(name), rel=0.05), name
        assert math.isnan(fast.uncertainty[name]["bias"]), name
    for name in ("avg_cosine", "cov_offdiag", "vicreg_std", "er_entropy", "uniformity"):
        assert fast.uncertainty[name] == exact.uncertainty[name], name


def test_cli_records_the_path_and_refuses_an_unknown_one(tmp_path: Path,
                                                         rows: torch.Tensor) -> None:
    path = tmp_path / "x.safetensors"
    save_file({"x": rows[:2000].float().contiguous()}, str(path))
    out = run_main(["analyze", str(path), "--uncertainty", "--blocks", "5", "--jackknife",
                    "exact", "--format", "json", "--metrics", "vne"])
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    assert data["options"]["jackknife"] == "exact"
    assert data["inputs"][0]["uncertainty_method"]["deleted_spectra"] == "exact"
    bad = run_main(["analyze", str(path), "--uncertainty", "--jackknife", "second"])
    assert_one_line_error(bad, 2, "--jackknife", "second")


def _numpy_partition(x: np.ndarray, c: np.ndarray, labels: np.ndarray, groups: int):
    p = x @ c
    lse = lambda a: a.max(axis=0) + np.log(np.exp(a - a.max(axis=0)).sum(axis=0))  # noqa: E731
    pos = np.stack([lse(p[labels == g]) for g in range(groups)])
    neg = np.stack([lse(-p[labels == g]) for g in range(groups)])
    wp = np.exp(p - lse(p))
    wn = np.exp(-p - lse(-p))
    return pos, neg, p.T @ wp, -(p.T @ wn)


def test_partition_sums_equal_a_float64_numpy_reference() -> None:
    g = torch.Generator().manual_seed(3)
    x = torch.randn(500, 6, dtype=torch.float64, generator=g) * 2 + 1
    c = torch.linalg.eigh(x.T @ x).eigenvectors
    labels = torch.randint(0, 4, (500,), generator=g)
    got = partition_sums(x, c, c, labels, 4, block_rows=64, extremes=None)
    want = _numpy_partition(x.numpy(), c.numpy(), labels.numpy(), 4)
    for a, b in zip((got.pos, got.neg), want[:2], strict=True):
        np.testing.assert_allclose(a.numpy(), b, rtol=1e-10, atol=1e-12)
    grad = np.concatenate(want[2:], axis=1)
    np.testing.assert_allclose(got.grad.numpy(), grad, rtol=1e-10, atol=1e-12)
    some = partition_sums(x, c, c, labels, 4, block_rows=64, extremes=2)
    z = np.concatenate([np.logaddexp.reduce(want[0], axis=0), np.logaddexp.reduce(want[1], 0)])
    extreme = np.zeros(12, dtype=bool)
    extreme[np.argsort(z)[:2]] = extreme[np.argsort(z)[-2:]] = True
    assert np.array_equal(some.graded.numpy(), extreme)
    np.testing.assert_allclose(some.grad.numpy()[:, extreme], grad[:, extreme], rtol=1e-10)
    assert not some.grad.numpy()[:, ~extreme].any()


def test_partition_gradient_predicts_a_small_rotation() -> None:
    """lnZ(c + δ) − lnZ(c) ≈ ∇lnZ·δ for a small rotation δ within the basis."""
    g = torch.Generator().manual_seed(5)
    x = torch.randn(400, 5, dtype=torch.float64, generator=g)
    v = torch.linalg.eigh(x.T @ x).eigenvectors
    labels = torch.zeros(400, dtype=torch.long)
    sums = partition_sums(x, v, v, labels, 1, extremes=None)
    r = torch.zeros(5, 5, dtype=torch.float64)
    r[1, 3], r[3, 1] = 1e-5, -1e-5
    moved = v + v @ r
    direct = partition_sums(x, moved, moved, labels, 1)
    shift = sums.rotation_shift(r)
    base, after = sums.log_z(), direct.log_z()
    assert shift.abs().max() > 1e-7  # the rotation moves lnZ, by a first-order amount
    np.testing.assert_allclose((after - base).numpy(), shift.numpy(), rtol=1e-3, atol=1e-9)


def test_the_gram_path_is_always_exact() -> None:
    """N < d with every row in the sample: the spectra are the N×N Gram matrix's, which has
    no d×d decomposition to update, so first order is not taken even when asked for."""
    x = torch.randn(100, 200, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    kw = dict(uncertainty=True, blocks=5, device="cpu", metrics=["vne", "partition_isotropy"])
    asked = reprdiag.analyze(x, jackknife="first-order", **kw).inputs[0]
    exact = reprdiag.analyze(x, jackknife="exact", **kw).inputs[0]
    assert asked.uncertainty_method["deleted_spectra"] == "exact"
    assert asked.uncertainty == exact.uncertainty
