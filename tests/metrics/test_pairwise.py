"""Tests for reprdiag.metrics.pairwise: ER entropy, the shared pair sums, partition isotropy."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from reprdiag.metrics.pairwise import er_entropy, partition_isotropy
from reprdiag.metrics.special import log_bessel_iv, log_sphere_area, log_vmf_normalizer

# Values from docs/design.md section 3, at X = default_rng(0).standard_normal((64, 16)), kappa = 10.
ER_PLUGIN_EXACT = -1.8296316874093703
ER_JOE_EXACT = -1.8285643911412934
ER_PLUGIN_REFERENCE = -1.8296316869892468
ER_JOE_REFERENCE = -1.8285643907211702
PARTITION_ISOTROPY = 0.245680200764099
# The exact and reference-arithmetic values differ by only ~2.3e-10 relative at d = 16, so
# the check must be tighter than that to tell them apart.
TIGHT = 1e-12


@pytest.fixture(scope="module")
def ref_x() -> np.ndarray:
    return np.random.default_rng(0).standard_normal((64, 16))


@pytest.fixture(scope="module")
def ref_e(ref_x: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(ref_x / np.linalg.norm(ref_x, axis=1, keepdims=True))


def _unit_rows(n: int, d: int, seed: int = 0) -> torch.Tensor:
    x = np.random.default_rng(seed).standard_normal((n, d))
    return torch.from_numpy(x / np.linalg.norm(x, axis=1, keepdims=True))


# --------------------------------------------------------------------------------- er_entropy


@pytest.mark.parametrize(
    ("estimator", "compat", "expected"),
    [
        ("plugin", "exact", ER_PLUGIN_EXACT),
        ("joe", "exact", ER_JOE_EXACT),
        ("plugin", "reference", ER_PLUGIN_REFERENCE),
        ("joe", "reference", ER_JOE_REFERENCE),
    ],
)
def test_er_entropy_reference_values(
    ref_e: torch.Tensor, estimator: str, compat: str, expected: float
) -> None:
    got = er_entropy(ref_e, kappa=10.0, estimator=estimator, compat=compat)
    assert got == pytest.approx(expected, rel=TIGHT)
    assert got == pytest.approx(expected, rel=1e-9)


def test_er_entropy_default_is_exact_plugin(ref_e: torch.Tensor) -> None:
    assert er_entropy(ref_e) == pytest.approx(ER_PLUGIN_EXACT, rel=TIGHT)


def _official_arithmetic(e: torch.Tensor, kappa: float, reduction: str) -> float:
    """The official ``entropy()`` arithmetic, restated with scipy's float Bessel (test-only)."""
    special = pytest.importorskip("scipy.special")
    m, d = e.shape
    csim = kappa * (e @ e.T)
    const = (
        -math.log(kappa) * (d * 0.5 - 1)
        + 0.5 * d * math.log(2 * math.pi)
        + math.log(special.iv(0.5 * d - 1, kappa) + 1e-7)
        + math.log(m)
    )
    logp = const - torch.logsumexp(csim, dim=-1)
    if reduction == "average":
        return float(logp.mean())
    return float((torch.softmax(-logp, dim=-1) * logp).sum())


@pytest.mark.parametrize(("n", "d", "kappa"), [(64, 16, 10.0), (50, 300, 3.0), (40, 1000, 10.0)])
def test_er_entropy_reference_compat_matches_official_arithmetic(
    n: int, d: int, kappa: float
) -> None:
    e = _unit_rows(n, d, seed=d)
    for estimator, reduction in [("plugin", "expectation"), ("joe", "average")]:
        want = _official_arithmetic(e, kappa, reduction)
        got = er_entropy(e, kappa=kappa, estimator=estimator, compat="reference")
        assert got == pytest.approx(want, rel=TIGHT)


def test_er_entropy_d1000_reference_underflow() -> None:
    e = _unit_rows(1000, 1000, seed=0)
    ref = er_entropy(e, kappa=10.0, compat="reference")
    exact = er_entropy(e, kappa=10.0)
    assert ref == pytest.approx(-249.308, abs=1e-3)  # docs/design.md: "about -249.308"
    # I_499(10) ~ e^-1802 underflows, so the reference constant holds ln(1e-7) in its place
    shift = float(log_bessel_iv(499.0, 10.0)) - math.log(1e-7)
    assert shift == pytest.approx(-1785.838, abs=1e-3)
    assert exact - ref == pytest.approx(shift, rel=1e-9)
    assert er_entropy(e, 10.0, "joe", "reference") == pytest.approx(-249.308, abs=1e-3)


@pytest.mark.parametrize("d", [16, 4096])
def test_er_entropy_repeated_vector_closed_form(d: int) -> None:
    # all logits equal kappa: l_i = -(kappa + ln M) + ln M - ln C_d = -kappa - ln C_d(kappa)
    v = torch.zeros(d, dtype=torch.float64)
    v[0], v[-1] = 0.6, 0.8
    e = v.repeat(9, 1)
    want = -10.0 - log_vmf_normalizer(d, 10.0)
    for estimator in ("plugin", "joe"):
        assert er_entropy(e, 10.0, estimator) == pytest.approx(want, rel=TIGHT)
        assert er_entropy(e, 10.0, estimator, block_rows=2) == pytest.approx(want, rel=TIGHT)


@pytest.mark.parametrize("estimator", ["plugin", "joe"])
def test_er_entropy_blockwise_and_permutation(ref_e: torch.Tensor, estimator: str) -> None:
    m = ref_e.shape[0]
    full = er_entropy(ref_e, estimator=estimator, block_rows=m)
    for block in (1, 7, m - 1, m, 10 * m):
        assert er_entropy(ref_e, estimator=estimator, block_rows=block) == pytest.approx(
            full, rel=TIGHT
        )
    perm = torch.from_numpy(np.random.default_rng(3).permutation(m))
    assert er_entropy(ref_e[perm], estimator=estimator, block_rows=7) == pytest.approx(
        full, rel=TIGHT
    )


def test_er_entropy_large_d_finite() -> None:
    d = 4096
    e = _unit_rows(128, d, seed=1)
    exact = er_entropy(e, kappa=10.0, block_rows=50)
    ref = er_entropy(e, kappa=10.0, compat="reference", block_rows=50)
    assert math.isfinite(exact) and math.isfinite(ref)
    shift = float(log_bessel_iv(d / 2 - 1, 10.0)) - math.log(1e-7)
    assert exact - ref == pytest.approx(shift, rel=1e-9)
    # spread-out rows sit below, and near, the uniform distribution's entropy
    assert exact < log_sphere_area(d)
    assert exact > log_sphere_area(d) - 10.0
    # float32 input: float32 matmul, float64 reductions
    assert er_entropy(e.float(), kappa=10.0) == pytest.approx(exact, rel=1e-6)


def test_er_entropy_float32_close(ref_e: torch.Tensor) -> None:
    assert er_entropy(ref_e.float()) == pytest.approx(ER_PLUGIN_EXACT, rel=1e-5)


def test_er_entropy_concentration_lowers_it() -> None:
    spread = _unit_rows(64, 8, seed=5)
    tight = spread * 0.05 + torch.tensor([1.0] + [0.0] * 7, dtype=torch.float64)
    tight = tight / tight.norm(dim=1, keepdim=True)
    assert er_entropy(tight) < er_entropy(spread)


def test_er_entropy_rejects_bad_arguments(ref_e: torch.Tensor) -> None:
    with pytest.raises(ValueError):
        er_entropy(ref_e, estimator="mean")
    with pytest.raises(ValueError):
        er_entropy(ref_e, compat="scipy")
    with pytest.raises(ValueError):
        er_entropy(ref_e, kappa=0.0)
    with pytest.raises(ValueError):
        er_entropy(ref_e, block_rows=0)
    with pytest.raises(ValueError):
        er_entropy(ref_e[0])
    with pytest.raises(ValueError):
        er_entropy(ref_e[:0])


# ------------------------------------------------------------------------- partition_isotropy


def _eigvecs(x: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.linalg.eigh(x.T @ x)[1])


def test_partition_isotropy_reference_value(ref_x: np.ndarray) -> None:
    got = partition_isotropy(torch.from_numpy(ref_x), _eigvecs(ref_x))
    assert got == pytest.approx(PARTITION_ISOTROPY, rel=TIGHT)
    # float32 rows: float32 matmul, float64 log-sum-exp
    got32 = partition_isotropy(torch.from_numpy(ref_x).float(), _eigvecs(ref_x))
    assert got32 == pytest.approx(PARTITION_ISOTROPY, rel=1e-5)


def test_partition_isotropy_symmetric_set_is_one() -> None:
    for d in (1, 5, 32):
        x = torch.cat([torch.eye(d), -torch.eye(d)]).double()
        assert partition_isotropy(x, _eigvecs(x.numpy())) == pytest.approx(1.0, abs=1e-14)
        v = torch.eye(d, dtype=torch.float64)
        assert partition_isotropy(x, v, block_rows=3) == pytest.approx(1.0, abs=1e-14)


def test_partition_isotropy_blockwise_permutation_and_signs(ref_x: np.ndarray) -> None:
    x = torch.from_numpy(ref_x)
    v = _eigvecs(ref_x)
    full = partition_isotropy(x, v, block_rows=64)
    for block in (1, 7, 63, 64, 1000):
        assert partition_isotropy(x, v, block_rows=block) == pytest.approx(full, rel=TIGHT)
    perm = torch.from_numpy(np.random.default_rng(4).permutation(64))
    assert partition_isotropy(x[perm], v, block_rows=7) == pytest.approx(full, rel=TIGHT)
    flips = torch.from_numpy(np.where(np.arange(16) % 3 == 0, -1.0, 1.0))
    assert partition_isotropy(x, v * flips, block_rows=5) == pytest.approx(full, rel=TIGHT)


def test_partition_isotropy_range_and_no_overflow() -> None:
    rng = np.random.default_rng(7)
    x = rng.standard_normal((300, 8)) * 400.0 + 50.0  # logits in the thousands
    got = partition_isotropy(torch.from_numpy(x), _eigvecs(x), block_rows=64)
    assert 0.0 <= got <= 1.0 and math.isfinite(got)
    small = rng.standard_normal((300, 8)) * 1e-3
    assert partition_isotropy(torch.from_numpy(small), _eigvecs(small)) == pytest.approx(
        1.0, abs=1e-2
    )
    with pytest.raises(ValueError):
        partition_isotropy(torch.from_numpy(x), torch.eye(7, dtype=torch.float64))
    with pytest.raises(ValueError):
        partition_isotropy(torch.from_numpy(x)[:0], _eigvecs(x))


@pytest.mark.parametrize("kappa", [0.5, 10.0, 39.0, 200.0])
@pytest.mark.parametrize("block", [300, 1000, 4096])
def test_er_entropy_float32_blocks_match_float64(kappa: float, block: int) -> None:
    """float32 path (unshifted symmetric blocks for kappa <= 40, generic above) vs float64."""
    e64 = _unit_rows(2100, 24, seed=11)  # >= 2048 rows: the float32 path is taken
    e64[:40] = e64[0] * 0.9 + e64[:40] * 0.1  # a tight cluster: rows with large row sums
    e64 = e64 / e64.norm(dim=1, keepdim=True)
    e64[5] = 0.0  # a zero row (normalized to the zero vector): logits 0, terms 1
    e32 = e64.float()
    for estimator in ("plugin", "joe"):
        want = er_entropy(e32.double(), kappa, estimator, block_rows=block)
        got = er_entropy(e32, kappa, estimator, block_rows=block)
        assert got == pytest.approx(want, abs=2e-6 * max(1.0, kappa))


def test_symmetric_pass_forms_every_gram_block_in_one_buffer(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The float32 pass writes each I <= J Gram block into one buffer allocated once: every
    product's output shares one storage, and there are (B + 1)·B/2 of them for B row blocks."""
    from reprdiag.metrics.pairwise import er_solver, pair_sums

    e = _unit_rows(2500, 16, seed=3).float()
    assert er_solver(e).startswith("symmetric float32 blocks")
    storages: list[int] = []
    mm = torch.mm

    def recording(a: torch.Tensor, b: torch.Tensor, *, out: torch.Tensor | None = None
                  ) -> torch.Tensor:
        storages.append(out.untyped_storage().data_ptr() if out is not None else -1)
        return mm(a, b, out=out) if out is not None else mm(a, b)

    monkeypatch.setattr(torch, "mm", recording)
    got = pair_sums(e, 10.0, block_rows=1000)  # 3 row blocks: 6 products
    monkeypatch.undo()
    assert len(storages) == 6 and len(set(storages)) == 1 and -1 not in storages
    want = pair_sums(e.double(), 10.0, block_rows=1000)
    torch.testing.assert_close(got.lse, want.lse, rtol=1e-6, atol=1e-6)
