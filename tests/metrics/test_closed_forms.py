"""Closed forms and invariances of the metrics."""

from __future__ import annotations

import math

import pytest
import torch

import reprdiag.metrics as M
from reprdiag.metrics import METRICS, Statistics

# metrics of one input's rows; those needing labels or a paired view are checked in
# test_labels.py / test_paired.py (they cannot be evaluated on a tensor alone)
ALL = sorted(n for n, info in METRICS.items() if info.needs is None)
ROTATION_INVARIANT = ["vne", "vne_normalized", "effective_rank", "rankme",
                      "participation_ratio", "stable_rank", "numerical_rank", "alpha_req",
                      "alpha_req_r2", "isoscore", "partition_isotropy", "avg_cosine",
                      "er_entropy"]
SCALE_FREE = ["vne", "vne_normalized", "effective_rank", "rankme", "participation_ratio",
              "stable_rank", "numerical_rank", "alpha_req", "alpha_req_r2", "isoscore",
              "avg_cosine", "cov_offdiag_frac", "std_normalized", "er_entropy"]


def _gaussian(n: int, d: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, d, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))


def test_isotropic_gaussian_large_n() -> None:
    d = 8
    stats = Statistics.from_tensor(_gaussian(200_000, d), sample_size=2048)
    assert M.isoscore(stats) == pytest.approx(1.0, abs=0.01)
    assert M.vne(stats) == pytest.approx(math.log(d), abs=2e-3)
    assert M.vne_normalized(stats) == pytest.approx(1.0, abs=1e-3)
    assert M.effective_rank(stats) == pytest.approx(d, rel=1e-3)
    assert M.avg_cosine(stats) == pytest.approx(0.0, abs=1e-3)
    assert M.std_normalized(stats) == pytest.approx(1.0, abs=5e-3)
    assert M.cov_offdiag_frac(stats) < 1e-3
    assert M.partition_isotropy(stats) > 0.9


@pytest.mark.parametrize("k", [1, 3, 7])
def test_exact_rank_k(k: int) -> None:
    g = torch.Generator().manual_seed(k)
    x = torch.randn(500, k, dtype=torch.float64, generator=g) @ torch.randn(
        k, 24, dtype=torch.float64, generator=g)
    stats = Statistics.from_tensor(x)
    assert M.numerical_rank(stats) == k
    for name in ("effective_rank", "participation_ratio", "stable_rank"):
        assert 1.0 - 1e-9 <= METRICS[name].func(stats) <= k + 1e-6, name
    assert M.rankme(stats) <= k + 24 * 1e-4  # each zero σ adds ~1.6e-6 through the 1e-7 floor
    assert M.vne(stats) <= math.log(k) + 1e-9


def test_one_repeated_vector() -> None:
    x = torch.tensor([[0.3, -1.2, 2.0, 0.5]], dtype=torch.float64).repeat(50, 1)
    stats = Statistics.from_tensor(x)
    assert M.vne(stats) == pytest.approx(0.0, abs=1e-12)
    assert M.avg_cosine(stats) == pytest.approx(1.0, abs=1e-12)
    assert M.std_normalized(stats) == pytest.approx(0.0, abs=1e-7)
    assert M.numerical_rank(stats) == 0
    # every pairwise logit equals κ: ℓ_i = −κ − ln C_d(κ), the same for all i
    from reprdiag.metrics.special import log_vmf_normalizer

    assert M.er_entropy(stats) == pytest.approx(-10.0 - log_vmf_normalizer(4, 10.0), rel=1e-12)


def test_zero_rows_are_counted_and_normalize_to_zero() -> None:
    x = torch.cat([torch.eye(3, dtype=torch.float64), torch.zeros(2, 3, dtype=torch.float64)])
    stats = Statistics.from_tensor(x)
    assert stats.moments.n_zero == 2
    # 3 unit rows, 2 zero rows: pairs (i≠j) among units have cosine 0 as well
    assert M.avg_cosine(stats) == 0.0


@pytest.mark.parametrize("name", ALL)
def test_row_order_invariance(name: str) -> None:
    x = _gaussian(120, 10, seed=1) + 0.5
    perm = torch.randperm(120, generator=torch.Generator().manual_seed(3))
    a, b = METRICS[name].func(x), METRICS[name].func(x[perm])
    assert a == pytest.approx(b, rel=1e-9, abs=1e-12)


@pytest.mark.parametrize("name", ROTATION_INVARIANT)
def test_rotation_invariance(name: str) -> None:
    x = _gaussian(150, 12, seed=2) * torch.linspace(2, 0.2, 12, dtype=torch.float64) + 0.4
    q, _ = torch.linalg.qr(_gaussian(12, 12, seed=5))
    assert METRICS[name].func(x @ q) == pytest.approx(METRICS[name].func(x), rel=1e-8,
                                                       abs=1e-10)


@pytest.mark.parametrize("name", SCALE_FREE)
def test_scale_invariance(name: str) -> None:
    x = _gaussian(150, 12, seed=4) * torch.linspace(2, 0.2, 12, dtype=torch.float64)
    assert METRICS[name].func(x * 37.5) == pytest.approx(METRICS[name].func(x), rel=1e-8,
                                                          abs=1e-10)


@pytest.mark.parametrize("name", ALL)
def test_values_inside_documented_range(name: str) -> None:
    info = METRICS[name]
    for x in (_gaussian(80, 9, seed=6), _gaussian(5, 30, seed=7) + 2.0):
        lo, hi = info.bounds(*x.shape)
        assert lo <= info.func(x) <= hi


def test_registry_entries_are_documented() -> None:
    for info in METRICS.values():
        doc = info.func.__doc__ or ""
        assert "Complexity" in doc and ">>>" in doc, info.name
        assert info.direction in ("higher", "lower", "neutral")
        assert info.citation and info.summary and info.range


def test_vne_leaves_zero_rows_out() -> None:
    # zero rows normalize to z = 0; ρ is taken at trace 1, i.e. over the non-zero rows only
    rows = _gaussian(40, 6, seed=9)
    x = torch.cat([rows, torch.zeros(10, 6, dtype=torch.float64)])
    z = torch.nn.functional.normalize(rows, dim=1)
    eta = torch.linalg.eigvalsh(z.T @ z / len(rows)).clamp_min(0)
    eta = eta[eta > 0]
    assert M.vne(x) == pytest.approx(float(-(eta * eta.log()).sum()), rel=1e-12)
    assert M.vne(torch.tensor([[0.0], [-1.0]])) == 0.0  # d = 1: inside [0, ln 1]
