"""The streaming pass (reprdiag/engine.py): fixed work per value, buffers reused across
chunks, NaN/Inf still found exactly, tiny values kept in float32."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from reprdiag import engine
from reprdiag.engine import Accumulator, StreamOptions, Tally, accumulate
from reprdiag.errors import InputError
from reprdiag.loaders import TensorSource
from reprdiag.stats import Reservoir, merged
from tests.helpers import scaled_rows as _rows
from tests.helpers import with_tiny_values as _with_tiny_values


def _pointers(acc: Accumulator) -> tuple[int, ...]:
    work, gram, norms = acc.moments.scratch.bufs
    conv = acc._convert
    return (work.data_ptr(), gram.data_ptr(), norms.data_ptr(),
            0 if conv is None else conv.data_ptr())


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_chunk_buffers_are_allocated_once(dtype: torch.dtype) -> None:
    x = _rows(1000, 16).to(dtype)
    acc = Accumulator(16, dtype, StreamOptions(sample_size=64))
    seen = set()
    for first in range(0, 1000, 100):
        acc.add(first, x[first: first + 100])
        seen.add(_pointers(acc))
    assert len(seen) == 1  # the same n×d, d×d, n (and fp16→fp32 conversion) buffers
    assert (acc._convert is None) == (dtype == torch.float32)  # fp32 is never copied


def test_blocked_moments_reuse_one_set_of_buffers() -> None:
    acc = Accumulator(8, torch.float32, StreamOptions(sample_size=64, blocks=5))
    x = _rows(1000, 8)
    seen = set()
    for first in range(0, 1000, 200):
        acc.add(first, x[first: first + 200])
        parts = acc.blocks.parts
        assert all(p.scratch is parts[0].scratch for p in parts)
        seen.add((acc.blocks._sorted.data_ptr(), parts[0].scratch.bufs[0].data_ptr()))
    assert len(seen) == 1


def test_float64_path_matches_a_float64_reference_to_1e12() -> None:
    x = _rows(2000, 24).double() * 3 + 1
    acc = accumulate(TensorSource(x), StreamOptions(chunk_rows=300, sample_size=64))
    m = acc.moments
    want_cov = np.cov(x.numpy(), rowvar=False)
    z = x.numpy() / np.linalg.norm(x.numpy(), axis=1, keepdims=True)
    np.testing.assert_allclose(m.covariance().numpy(), want_cov, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(m.autocorrelation().numpy(), z.T @ z / len(z), rtol=1e-12,
                               atol=1e-14)
    np.testing.assert_allclose(m.mean.numpy(), x.numpy().mean(0), rtol=1e-12)


def test_float32_chunks_match_one_float64_product_of_the_same_values() -> None:
    """The float32 stream (reused buffers) against float64 moments of the same stored values."""
    x = _rows(3000, 20)
    got = accumulate(TensorSource(x), StreamOptions(chunk_rows=256, sample_size=64)).moments
    want = accumulate(TensorSource(x.double()), StreamOptions(sample_size=64)).moments
    torch.testing.assert_close(got.covariance(), want.covariance(), rtol=2e-6, atol=2e-6)
    torch.testing.assert_close(got.autocorrelation(), want.autocorrelation(), rtol=2e-6,
                               atol=2e-7)


def test_tiny_values_keep_float32_products_and_a_float32_sample() -> None:
    """A few values below 2^-40 among ordinary ones neither slow the pass (float64 products)
    nor change the numbers: the chunk's scale is its largest |x|."""
    x = _with_tiny_values(_rows(3000, 16))
    acc = accumulate(TensorSource(x), StreamOptions(chunk_rows=500, sample_size=2500))
    assert acc.reservoir.rows.dtype == torch.float32
    want = np.cov(x.double().numpy(), rowvar=False)
    np.testing.assert_allclose(acc.moments.covariance().numpy(), want, rtol=1e-5, atol=1e-6)


def test_nan_rows_are_still_found_exactly() -> None:
    x = _rows(1000, 8)
    x[[437, 912], 2] = float("nan")
    x[600, 5] = float("inf")
    with pytest.raises(InputError, match=r"has 3 row\(s\) containing NaN or Inf \(first at "
                                         r"row 437\)"):
        accumulate(TensorSource(x), StreamOptions(chunk_rows=128, sample_size=64))
    dropped = accumulate(TensorSource(x), StreamOptions(chunk_rows=128, sample_size=64,
                                                        nan="drop"))
    clean = np.delete(x.double().numpy(), [437, 600, 912], axis=0)
    assert (dropped.rows_dropped, dropped.moments.n) == (3, 997)
    np.testing.assert_allclose(dropped.moments.covariance().numpy(),
                               np.cov(clean, rowvar=False), rtol=1e-5, atol=1e-6)


def test_magnitude_check_sees_a_chunk_whose_only_large_value_is_beside_a_nan() -> None:
    x = _rows(50, 4).double()
    x[10, 0], x[11, 1] = float("nan"), 1e80
    with pytest.raises(InputError, match="too large for float64"):
        accumulate(TensorSource(x), StreamOptions(sample_size=64, nan="drop"))


def test_max_abs_is_one_pass_and_flags_non_finite() -> None:
    assert engine._max_abs(torch.tensor([[0.5, -3.0], [2.0, 1.0]])) == 3.0
    assert engine._max_abs(torch.tensor([[1, -7]], dtype=torch.int16)) == 7.0
    assert np.isnan(engine._max_abs(torch.tensor([[1.0, float("nan")]])))
    assert engine._max_abs(torch.tensor([[1.0, -float("inf")]])) == float("inf")
    assert engine._max_abs(torch.empty(0, 3)) == 0.0


def test_rows_of_tiny_values_beside_ordinary_ones_keep_their_direction() -> None:
    """A float32 row at scale 1e-25 is a direction like any other (only exact zeros are zero):
    its chunk is multiplied in float64, so ρ = ZᵀZ/N matches float64 arithmetic."""
    x = _rows(600, 8)
    x[17] = x[17] * 1e-25
    x[400] = x[400] * 1e-36
    acc = accumulate(TensorSource(x), StreamOptions(chunk_rows=128, sample_size=64))
    x64 = x.double().numpy()
    z = x64 / np.linalg.norm(x64, axis=1, keepdims=True)
    assert acc.moments.n_zero == 0
    np.testing.assert_allclose(acc.moments.autocorrelation().numpy(), z.T @ z / len(z),
                               rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("d", [40, 300, 301])
def test_gram_product_upper_blocks_equal_the_full_product(d: int) -> None:
    from reprdiag.stats import gram_product

    x = _rows(500, d)
    got = gram_product(x, torch.empty(d, d))
    want = x.double().T @ x.double()
    assert torch.equal(got, got.T)  # the lower block is the upper one's transpose
    torch.testing.assert_close(got.double(), want, rtol=1e-5, atol=1e-3)


@pytest.mark.parametrize("blocks", [0, 5])
def test_accumulators_of_disjoint_rows_merge_to_one_pass(blocks: int) -> None:
    """What a process group does, in one process: two passes over halves of the rows,
    their statistics merged through the state protocol, their tallies combined; the NaN row
    of the second half is dropped and counted once; the halves themselves are left as they
    are."""
    x = _rows(600, 12).double() * 2 + 3
    x[450, 4] = float("nan")
    opts = StreamOptions(chunk_rows=50, sample_size=64, nan="drop", precision="float64",
                         blocks=blocks)
    halves = [Accumulator(12, torch.float64, opts), Accumulator(12, torch.float64, opts)]
    for acc, (lo, hi) in zip(halves, [(0, 300), (300, 600)], strict=True):
        for first in range(lo, hi, 50):
            acc.add(first, x[first:first + 50])
    a, b = halves
    stats = {name: merged(s, b.statistics()[name]) for name, s in a.statistics().items()}
    sample = Reservoir(64, 0)
    sample.merge(a.reservoir)
    sample.merge(b.reservoir)
    whole = a.merged(Tally.combined([a.tally, b.tally]), stats, sample).finish()
    assert (a.rows_kept, b.rows_kept, whole.rows_read, whole.rows_dropped) == (300, 299, 600, 1)
    kept = np.delete(x.numpy(), 450, axis=0)
    np.testing.assert_allclose(whole.moments.covariance().numpy(), np.cov(kept.T), rtol=1e-11,
                               atol=1e-12)
    single = accumulate(TensorSource(x), opts)
    assert torch.equal(whole.reservoir.index, single.reservoir.index)
    if blocks:
        assert whole.blocks.sizes == single.blocks.sizes
