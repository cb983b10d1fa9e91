"""Blocked moments and the delete-a-block jackknife: exact deletions, estimator, labels."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import reprdiag
from reprdiag.engine import StreamOptions, accumulate
from reprdiag.errors import InputError, ReprdiagWarning, ResourceError, UsageError
from reprdiag.loaders import TensorSource
from reprdiag.metrics import METRICS, Statistics
from reprdiag.metrics.pairwise import er_entropy, er_entropy_deleted
from reprdiag.stats.blocked import BUDGET_ENV, block_labels, fit_blocks, moment_bytes
from reprdiag.uncertainty import deleted_statistics, jackknife, t_quantile, without_block

CONTINUOUS = [m for m, info in METRICS.items() if not info.discrete and not info.needs]
pytestmark = pytest.mark.usefixtures("one_thread")


def _data(n: int, d: int, seed: int = 3) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    scale = torch.linspace(2.0, 0.2, d, dtype=torch.float64)
    return torch.randn(n, d, dtype=torch.float64, generator=g) * scale + 0.7


def _blocked(x: torch.Tensor, blocks: int, chunk: int, seed: int = 0, sample: int = 16384):
    opts = StreamOptions(chunk_rows=chunk, sample_size=sample, seed=seed, blocks=blocks)
    return accumulate(TensorSource(x), opts)


def test_labels_depend_only_on_index_and_seed() -> None:
    idx = torch.arange(5000)
    whole = block_labels(idx, 0, 20)
    parts = torch.cat([block_labels(idx[a:a + 333], 0, 20) for a in range(0, 5000, 333)])
    assert torch.equal(whole, parts)
    counts = torch.bincount(whole, minlength=20)
    assert counts.min() > 180 and counts.max() < 320  # 250 expected per block
    # scattered, not contiguous: neighbours share a block about 1/K of the time
    assert float((whole[1:] == whole[:-1]).float().mean()) < 0.1
    assert not torch.equal(whole, block_labels(idx, 1, 20))


@pytest.mark.parametrize(("n", "d", "chunk"), [(400, 12, 37), (60, 100, 7)])
def test_deleted_blocks_equal_direct_computation(n: int, d: int, chunk: int) -> None:
    """Delete-one-block moments (total minus block) match the rows outside that block, and so
    do the metrics computed from them (the second case takes the N < d Gram path)."""
    x = _data(n, d)
    acc = _blocked(x, 5, chunk)
    labels = block_labels(torch.arange(n), 0, 5)
    deleted = list(deleted_statistics(acc.blocks, acc.moments, acc.reservoir))
    assert [s.n for s in deleted] == [int((labels != b).sum()) for b in range(5)]
    for b, stats in enumerate(deleted):
        rest = x[labels != b].numpy()
        z = rest / np.linalg.norm(rest, axis=1, keepdims=True)
        m = stats.moments
        np.testing.assert_allclose(m.covariance().numpy(), np.cov(rest.T), rtol=1e-10,
                                   atol=1e-12)
        np.testing.assert_allclose(m.second_moment().numpy(), rest.T @ rest, rtol=1e-10,
                                   atol=1e-10)
        np.testing.assert_allclose(m.autocorrelation().numpy(), z.T @ z / len(rest),
                                   rtol=1e-10, atol=1e-13)
        direct = Statistics.from_tensor(torch.from_numpy(rest))
        for name in CONTINUOUS:
            got, want = METRICS[name].func(stats), METRICS[name].func(direct)
            assert got == pytest.approx(want, rel=1e-10, abs=1e-12), (b, name)


def test_deleted_sample_drops_exactly_that_block() -> None:
    x = _data(3000, 6)
    acc = _blocked(x, 8, 500, sample=400)  # sample smaller than N
    labels = block_labels(acc.reservoir.index, 0, 8)
    for b in (0, 7):
        part = without_block(acc.reservoir, b, 0, 8)
        assert torch.equal(part.index, acc.reservoir.index[labels != b])
        assert torch.equal(part.rows, x[part.index])


@pytest.mark.parametrize("estimator", ["plugin", "joe"])
@pytest.mark.parametrize("compat", ["exact", "reference"])
def test_er_entropy_deleted_equals_direct(estimator: str, compat: str) -> None:
    e = torch.nn.functional.normalize(_data(300, 5), dim=1)
    labels = block_labels(torch.arange(300), 4, 6)
    fast = er_entropy_deleted(e, labels, 6, kappa=7.0, estimator=estimator, compat=compat,
                              block_rows=64)
    for b in range(6):
        want = er_entropy(e[labels != b], kappa=7.0, estimator=estimator, compat=compat)
        assert fast[b] == pytest.approx(want, rel=1e-10, abs=1e-10)


def test_jackknife_of_the_mean_has_block_means_as_pseudo_values() -> None:
    """For θ = the mean, the weighted delete-m jackknife's pseudo-values are the block means:
    SE² = (1/K)·Σ m_b (ȳ_b − ȳ)² / (N − m_b), bias 0, whatever the block sizes."""
    rng = np.random.default_rng(1)
    sizes = np.array([30, 45, 12, 60, 53])
    blocks = [rng.normal(size=m) + i for i, m in enumerate(sizes)]
    y = np.concatenate(blocks)
    n, mean = y.size, y.mean()
    deleted = np.array([(y.sum() - b.sum()) / (n - b.size) for b in blocks])
    out = jackknife(mean, deleted, sizes)
    means = np.array([b.mean() for b in blocks])
    se2 = (sizes * (means - mean) ** 2 / (n - sizes)).sum() / len(sizes)
    assert float(out["se"]) == pytest.approx(math.sqrt(se2), rel=1e-12)
    assert abs(float(out["bias"])) < 1e-12
    half = t_quantile(0.95, 4) * math.sqrt(se2)
    assert float(out["ci_low"]) == pytest.approx(mean - half, rel=1e-12)
    assert float(out["ci_high"]) == pytest.approx(mean + half, rel=1e-12)


def test_equal_blocks_give_the_textbook_grouped_jackknife() -> None:
    """Equal blocks: bias = (K−1)(mean θ₍b₎ − θ̂), SE² = (K−1)/K·Σ(θ₍b₎ − mean θ₍b₎)²
    (here for the plug-in variance, a biased, nonlinear statistic)."""
    rng = np.random.default_rng(2)
    y = rng.normal(size=200)
    lab = np.arange(200) % 10
    full = y.var()
    deleted = np.array([y[lab != b].var() for b in range(10)])
    out = jackknife(full, deleted, [20] * 10)
    assert float(out["bias"]) == pytest.approx(9 * (deleted.mean() - full), rel=1e-12)
    assert float(out["se"]) ** 2 == pytest.approx(0.9 * ((deleted - deleted.mean()) ** 2).sum(),
                                                  rel=1e-12)


def test_jackknife_degenerate_inputs() -> None:
    one = jackknife(1.0, np.array([1.0, 2.0]), [10, 0])  # one non-empty block
    assert math.isnan(float(one["se"]))
    nan = jackknife(1.0, np.array([1.0, np.nan, 2.0]), [5, 5, 5])
    assert math.isnan(float(nan["se"]))
    vec = jackknife(np.array([1.0, 2.0]), np.array([[1.0, 2.0], [1.0, 2.5]]), [4, 4])
    assert vec["se"].shape == (2,) and vec["se"][0] == 0.0


def test_t_quantile_matches_scipy() -> None:
    stats = pytest.importorskip("scipy.stats")
    for df in (1, 2, 3, 4, 5, 9, 19, 20, 49, 100):
        for level in (0.5, 0.9, 0.95, 0.99):
            assert t_quantile(level, df) == pytest.approx(stats.t.ppf((1 + level) / 2, df),
                                                          rel=1e-9)


def test_same_seed_same_se_whatever_the_chunks() -> None:
    x = _data(1500, 10)
    a = reprdiag.analyze(x, chunk_rows=1500, uncertainty=True, device="cpu").inputs[0]
    b = reprdiag.analyze(x, chunk_rows=77, uncertainty=True, device="cpu").inputs[0]
    c = reprdiag.analyze(x, chunk_rows=77, uncertainty=True, seed=5, device="cpu").inputs[0]
    assert set(a.uncertainty) == set(CONTINUOUS)
    ratios = []
    for name in CONTINUOUS:
        for key in ("se", "bias", "ci_low", "ci_high"):
            assert b.uncertainty[name][key] == pytest.approx(a.uncertainty[name][key],
                                                             rel=1e-8, abs=1e-12,
                                                             nan_ok=True), name
        ratios.append(c.se(name) / a.se(name))
    # another seed, another partition: the SE is itself an estimate (K = 20: ~16% noise)
    assert 0.75 < float(np.median(ratios)) < 1.33
    assert all(0.4 < r < 2.5 for r in ratios), ratios


def test_nan_rows_dropped_from_blocks() -> None:
    x = _data(500, 4)
    x[[3, 200]] = math.nan
    acc_opts = StreamOptions(chunk_rows=64, blocks=5, nan="drop")
    acc = accumulate(TensorSource(x), acc_opts)
    clean = x[torch.isfinite(x).all(1)]
    assert acc.moments.n == 498 == sum(acc.blocks.sizes)
    torch.testing.assert_close(acc.moments.covariance(), torch.cov(clean.T), rtol=1e-10,
                               atol=1e-12)


def test_discrete_metrics_get_no_uncertainty() -> None:
    rep = reprdiag.analyze(_data(300, 6), metrics=["numerical_rank", "vne"], uncertainty=True,
                           blocks=5, device="cpu")
    assert set(rep.inputs[0].uncertainty) == {"vne"}
    frame = rep.uncertainty
    assert list(frame.columns) == ["value", "se", "ci_low", "ci_high", "bias"]
    row = frame.loc[(rep.inputs[0].name, "vne")]
    assert row["ci_low"] < row["value"] < row["ci_high"] and row["se"] > 0


def test_blocks_validation_and_small_inputs() -> None:
    with pytest.raises(UsageError, match="at least 5"):
        reprdiag.analyze(_data(100, 3), uncertainty=True, blocks=4, device="cpu")
    with pytest.raises(InputError, match="too few"):
        reprdiag.analyze(_data(30, 3), uncertainty=True, blocks=20, device="cpu")
    plain = reprdiag.analyze(_data(30, 3), blocks=2, device="cpu")  # ignored without it
    assert plain.uncertainty.empty and "uncertainty" not in plain.to_dict()["inputs"][0]


def test_memory_budget_lowers_blocks_or_refuses(monkeypatch: pytest.MonkeyPatch) -> None:
    cpu = torch.device("cpu")
    monkeypatch.setenv(BUDGET_ENV, str(moment_bytes(64, 8)))
    with pytest.warns(ReprdiagWarning, match="using 8 blocks"):
        assert fit_blocks(20, 64, cpu) == 8
    assert fit_blocks(8, 64, cpu) == 8
    monkeypatch.setenv(BUDGET_ENV, str(moment_bytes(64, 4)))
    with pytest.raises(ResourceError, match="memory budget"):
        fit_blocks(20, 64, cpu)
    monkeypatch.setenv(BUDGET_ENV, str(moment_bytes(6, 7)))
    with pytest.warns(ReprdiagWarning):
        rep = reprdiag.analyze(_data(200, 6), uncertainty=True, device="cpu")
    assert rep.inputs[0].uncertainty_method["blocks"] == 7


def test_blocks_run_side_by_side_on_cpu_threads_with_the_serial_results(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """On the CPU the K exact delete-a-block evaluations run on torch's threads
    (threaded_map), torch's thread count is restored, and every estimate equals the
    one-by-one run's; first-order blocks (one matrix product each) run one after the other."""
    from reprdiag.uncertainty import estimator as uncertainty

    x = _data(600, 8)
    used: list[int] = []
    real = uncertainty.threaded_map

    def recording(f, count):  # type: ignore[no-untyped-def]
        used.append(count)
        return real(f, count)

    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        monkeypatch.setattr(uncertainty, "threaded_map", recording)
        kw = dict(uncertainty=True, blocks=6, device="cpu", jackknife="exact")
        threaded = reprdiag.analyze(x, **kw).inputs[0]
        assert used == [6] and torch.get_num_threads() == 2
        reprdiag.analyze(x, uncertainty=True, blocks=6, device="cpu")  # first order
        assert used == [6]
        monkeypatch.setattr(uncertainty, "threaded_map", uncertainty.serial_map)
        serial = reprdiag.analyze(x, **kw).inputs[0]
    finally:
        torch.set_num_threads(before)
    assert threaded.uncertainty.keys() == serial.uncertainty.keys()
    for name, est in serial.uncertainty.items():
        for key, value in est.items():
            assert threaded.uncertainty[name][key] == pytest.approx(value, rel=1e-12, abs=1e-15,
                                                                    nan_ok=True), (name, key)
