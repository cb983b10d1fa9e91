"""Streaming moments and the reservoir sample: chunking, merging and rebasing are exact."""

from __future__ import annotations

import pytest
import torch

import reprdiag.metrics as M
from reprdiag.engine import StreamOptions, accumulate
from reprdiag.loaders import TensorSource
from reprdiag.metrics import METRICS, Statistics
from reprdiag.stats import Reservoir, StreamingMoments, row_priority


def _data(n: int = 1000, d: int = 12) -> torch.Tensor:
    g = torch.Generator().manual_seed(11)
    return torch.randn(n, d, dtype=torch.float64, generator=g) * torch.linspace(
        3, 0.1, d, dtype=torch.float64) + 5.0


def _stream(x: torch.Tensor, chunk: int, sample: int = 64) -> Statistics:
    acc = accumulate(TensorSource(x), StreamOptions(chunk_rows=chunk, sample_size=sample))
    return Statistics(acc.moments, acc.reservoir)


def test_moments_match_float64_reference() -> None:
    x = _data()
    m = _stream(x, 7).moments
    torch.testing.assert_close(m.mean, x.mean(0), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(m.covariance(), torch.cov(x.T), rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(m.second_moment(), x.T @ x, rtol=1e-12, atol=1e-9)
    z = x / x.norm(dim=1, keepdim=True)
    torch.testing.assert_close(m.autocorrelation(), z.T @ z / len(x), rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("chunk", [1, 7, 1000])
def test_chunk_size_does_not_change_anything(chunk: int) -> None:
    x = _data()
    whole, part = _stream(x, len(x)), _stream(x, chunk)
    for attr in ("covariance", "second_moment", "autocorrelation"):
        torch.testing.assert_close(getattr(part.moments, attr)(),
                                   getattr(whole.moments, attr)(), rtol=1e-10, atol=1e-12)
    for name, info in METRICS.items():
        if info.needs:  # label/pair metrics: chunking checked in tests/test_companions.py
            continue
        assert info.func(part) == pytest.approx(info.func(whole), rel=1e-10, abs=1e-12), name
    assert torch.equal(part.reservoir.index, whole.reservoir.index)


def test_merge_two_halves_equals_whole() -> None:
    x = _data()
    a, b, whole = (StreamingMoments(12) for _ in range(3))
    a.update(x[:300])
    b.update(x[300:] * 1.0)
    whole.update(x)
    a.merge(b)
    assert a.n == whole.n
    for attr in ("covariance", "second_moment", "autocorrelation", "z_variance"):
        torch.testing.assert_close(getattr(a, attr)(), getattr(whole, attr)(), rtol=1e-10,
                                   atol=1e-12)


def test_float32_shifted_products_stay_accurate() -> None:
    x = _data(4000, 16) + 1000.0  # a large mean: unshifted fp32 products would cancel badly
    m32 = StreamingMoments(16, torch.float32)
    for lo in range(0, 4000, 500):
        m32.update(x[lo:lo + 500].float())
    ref = torch.cov(x.float().double().T)
    rel = (m32.covariance() - ref).norm() / ref.norm()
    assert rel < 1e-5


def test_reservoir_is_chunking_and_split_independent() -> None:
    x = _data(500, 3)
    one = Reservoir(50, seed=4)
    one.update(0, x)
    pieces = Reservoir(50, seed=4)
    for lo in range(0, 500, 13):
        pieces.update(lo, x[lo:lo + 13])
    left, right = Reservoir(50, seed=4), Reservoir(50, seed=4)
    left.update(0, x[:200])
    right.update(200, x[200:])
    left.merge(right)
    for r in (pieces, left):
        assert torch.equal(r.index, one.index) and torch.equal(r.rows, one.rows)
    other = Reservoir(50, seed=5)
    other.update(0, x)
    assert not torch.equal(other.index, one.index)


def test_reservoir_is_roughly_uniform() -> None:
    counts = torch.zeros(10)
    for seed in range(200):
        r = Reservoir(10, seed=seed)
        r.update(0, torch.arange(100.0).unsqueeze(1))
        counts += torch.bincount(r.index // 10, minlength=10)
    # each decile holds 10% of the rows: expect 200 picks each, sd ≈ 13
    assert counts.min() > 150 and counts.max() < 250


def test_gram_path_equals_covariance_path() -> None:
    x = _data(20, 50)  # N < d: the Gram path is used when every row is in the sample
    gram = Statistics.from_tensor(x)
    assert gram.spectra.use_gram
    direct = _stream(x, 7, sample=5)  # sample smaller than N: d×d path
    assert not direct.spectra.use_gram
    torch.testing.assert_close(gram.cov_eigenvalues, direct.cov_eigenvalues, rtol=1e-9,
                               atol=1e-12)
    torch.testing.assert_close(gram.autocorr_eigenvalues, direct.autocorr_eigenvalues,
                               rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(gram.spectra.singular_values, direct.spectra.singular_values,
                               rtol=1e-9, atol=1e-9)
    assert "gram" in gram.spectra.solvers()["covariance"]
    assert "eigvalsh d×d" in direct.spectra.solvers()["covariance"]
    assert M.partition_isotropy(gram) == pytest.approx(
        _partition_direct(x), rel=1e-9)


def _partition_direct(x: torch.Tensor) -> float:
    _, vecs = torch.linalg.eigh(x.T @ x)
    lse = torch.logsumexp(x @ torch.cat([vecs, -vecs], dim=1), dim=0)
    return float(torch.exp(lse.min() - lse.max()))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_reservoir_is_the_bottom_k_priorities(seed: int) -> None:
    """In-place reservoir == the capacity lowest hash priorities, computed directly."""
    gen = torch.Generator().manual_seed(seed)
    n, cap = 2000, 97
    x = torch.arange(float(n)).unsqueeze(1).repeat(1, 2)
    keep = torch.rand(n, generator=gen) > 0.1  # some rows dropped, indices unchanged
    r, lo = Reservoir(cap, seed=seed), 0
    while lo < n:
        step = int(torch.randint(1, 300, (1,), generator=gen))
        r.update(lo, x[lo:lo + step], keep[lo:lo + step])
        lo += step
    prio = row_priority(0, n, seed)
    prio[~keep] = torch.iinfo(torch.int64).max
    want = torch.sort(torch.topk(prio, cap, largest=False).indices).values
    assert torch.equal(r.index, want)
    assert torch.equal(r.rows[:, 0].long(), want)
    assert r.seen == int(keep.sum()) and not r.is_complete


def test_reservoir_sample_can_be_assigned_and_merged() -> None:
    """The (rows, priority, index) assignment used to ship samples between processes."""
    x = _data(300, 3)
    whole = Reservoir(40, seed=2)
    whole.update(0, x)
    left, right = Reservoir(40, seed=2), Reservoir(40, seed=2)
    left.update(0, x[:120])
    right.update(120, x[120:])
    shipped = Reservoir(40, seed=2, seen=right.seen)
    perm = torch.randperm(right.rows.shape[0])  # any order in, index order out
    shipped.rows, shipped.priority, shipped.index = (right.rows[perm], right.priority[perm],
                                                     right.index[perm])
    left.merge(shipped)
    assert torch.equal(left.index, whole.index) and torch.equal(left.rows, whole.rows)
    assert left.seen == whole.seen == 300
