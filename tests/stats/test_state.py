"""The merge protocol of every streamed statistic (:mod:`reprdiag.stats.state`): parts built
from disjoint rows, re-expressed in a common frame and summed state by state, equal one pass
over all rows — checked against float64 numpy references computed from the rows directly."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from reprdiag.stats import Reservoir, StreamingMoments, merged, sample_threshold
from reprdiag.stats.blocked import BlockedMoments
from reprdiag.stats.classes import ClassMoments
from reprdiag.stats.cross import CrossMoments, PairMoments


def _rows(n: int, d: int, seed: int, offset: float = 4.0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, dtype=torch.float64, generator=g) * 2.0 + offset


def _split(n: int) -> list[slice]:
    return [slice(0, n // 5), slice(n // 5, n // 2), slice(n // 2, n)]


def _merge_all(parts: list):
    out = parts[0]
    for p in parts[1:]:
        out = merged(out, p)
    return out


def test_moments_merged_through_states_match_numpy() -> None:
    x = _rows(300, 5, 0)
    parts = []
    for sl in _split(300):
        m = StreamingMoments(5)
        m.update(x[sl])  # each part takes its own first-chunk shift
        parts.append(m)
    assert not torch.equal(parts[0].shift, parts[2].shift)
    m = _merge_all(parts)
    ref = x.numpy()
    assert m.n == 300
    np.testing.assert_allclose(m.covariance().numpy(), np.cov(ref.T), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(m.mean.numpy(), ref.mean(0), rtol=1e-13)
    z = ref / np.linalg.norm(ref, axis=1, keepdims=True)
    np.testing.assert_allclose(m.autocorrelation().numpy(), z.T @ z / 300, atol=1e-14)


def test_moments_state_in_a_foreign_frame_is_the_rebased_sums() -> None:
    x = _rows(50, 3, 1)
    m = StreamingMoments(3)
    m.update(x)
    shift = torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64)
    st = m.state({"shift": shift})
    y = (x - shift).numpy()
    np.testing.assert_allclose(st["sum_y"].numpy(), y.sum(0), rtol=1e-12)
    np.testing.assert_allclose(st["sum_yy"].numpy(), y.T @ y, rtol=1e-12)
    assert int(st["n"]) == 50 and int(st["n_zero"]) == 0


def test_an_empty_part_merges_as_nothing() -> None:
    x = _rows(20, 3, 2)
    full, empty = StreamingMoments(3), StreamingMoments(3)
    full.update(x)
    for m in (merged(empty, full), merged(full, empty)):
        assert m.n == 20
        torch.testing.assert_close(m.covariance(), torch.cov(x.T), rtol=1e-12, atol=1e-12)


def test_blocked_moments_round_trip_and_merge() -> None:
    x = _rows(400, 4, 3)
    a, b, whole = (BlockedMoments(4, blocks=5, seed=7) for _ in range(3))
    a.update(0, x[:150])
    b.update(150, x[150:])
    whole.update(0, x)
    m = merged(a, b)
    assert m.sizes == whole.sizes
    for got, want in zip(m.parts, whole.parts, strict=True):
        torch.testing.assert_close(got.covariance(), want.covariance(), rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(m.total().covariance(), torch.cov(x.T), rtol=1e-10, atol=1e-12)


def _class_reference(x: np.ndarray, labels: np.ndarray) -> dict[int, tuple[int, np.ndarray,
                                                                         np.ndarray]]:
    return {int(c): (int((labels == c).sum()), x[labels == c].mean(0),
                     np.cov(x[labels == c].T).reshape(x.shape[1], x.shape[1]))
            for c in np.unique(labels)}


def test_class_moments_merge_exactly_whatever_classes_each_part_saw() -> None:
    x = _rows(240, 3, 4)
    labels = torch.tensor(np.repeat([9, 2, 5, 2, 7, 9], 40))  # parts see different classes
    parts = []
    for sl in _split(240):
        c = ClassMoments(3, second_moments=True)
        c.update(x[sl], labels[sl])
        parts.append(c)
    m = _merge_all(parts)
    ref = _class_reference(x.numpy(), labels.numpy())
    assert m.ids == sorted(ref)
    for i, cid in enumerate(m.ids):
        count, mean, cov = ref[cid]
        assert float(m.counts[i]) == count
        np.testing.assert_allclose(m.means()[i].numpy(), mean, rtol=1e-12)
        np.testing.assert_allclose(m.class_covariance(i).numpy(), cov, rtol=1e-10, atol=1e-12)


def test_class_second_moments_dropped_when_the_union_outgrows_the_limit() -> None:
    limit = 2 * 3 * 3 * 8  # two classes' 3×3 float64 squares
    a = ClassMoments(3, second_moments=True, squares_limit=limit)
    b = ClassMoments(3, second_moments=True, squares_limit=limit)
    a.update(_rows(4, 3, 5), torch.tensor([0, 0, 1, 1]))
    b.update(_rows(4, 3, 6), torch.tensor([2, 2, 1, 1]))
    assert a.squares is not None and b.squares is not None
    m = merged(a, b)
    assert m.ids == [0, 1, 2] and m.squares is None  # one pass over all rows drops them too
    whole = ClassMoments(3, second_moments=True, squares_limit=limit)
    whole.update(torch.cat([_rows(4, 3, 5), _rows(4, 3, 6)]), torch.tensor([0, 0, 1, 1, 2, 2,
                                                                             1, 1]))
    assert whole.squares is None


def _cross_reference(chunks: list[torch.Tensor], shift: np.ndarray) -> dict[str, np.ndarray]:
    y = np.concatenate([c.numpy() for c in chunks], axis=1) - shift
    widths = [c.shape[1] for c in chunks]
    bounds = np.cumsum([0, *widths])
    q = np.stack([(y[:, a:b] ** 2).sum(1) for a, b in itertools.pairwise(bounds)], 1)
    return {"s": y.sum(0), "S": y.T @ y, "U": q.T @ y, "W": q.T @ q}


def test_cross_moments_rebased_state_equals_the_sums_about_that_shift() -> None:
    xs = [_rows(60, 3, 7), _rows(60, 2, 8, offset=-3.0)]
    m = CrossMoments([3, 2])
    m.update(xs)
    shift = torch.tensor([0.5, 1.0, -1.0, 2.0, 0.25], dtype=torch.float64)
    st = m.state({"shift": shift})
    for name, want in _cross_reference(xs, shift.numpy()).items():
        np.testing.assert_allclose(st[name].numpy(), want, rtol=1e-11, atol=1e-8)


def test_cross_and_pair_moments_merge_exactly() -> None:
    x, y = _rows(200, 3, 9), _rows(200, 3, 10, offset=1.0)
    parts = []
    for sl in _split(200):
        p = PairMoments(3, 3)
        p.update(x[sl], y[sl])
        parts.append(p)
    m = _merge_all(parts)
    assert m.n == 200
    want = _cross_reference([x, y], m.cross.shift.numpy())  # the first part's shift
    for name in ("s", "S", "U", "W"):
        np.testing.assert_allclose(getattr(m.cross, name).numpy(), want[name], rtol=1e-11,
                                   atol=1e-8)
    z = x / x.norm(dim=1, keepdim=True)
    w = y / y.norm(dim=1, keepdim=True)
    assert m.sq_distance == pytest.approx(float(((z - w) ** 2).sum()), rel=1e-12)


def test_reservoir_state_round_trip_and_threshold_parts_merge_to_the_whole() -> None:
    x = _rows(500, 2, 11)
    whole = Reservoir(40, seed=3)
    whole.update(0, x)
    parts = []
    for sl in _split(500):
        r = Reservoir(40, seed=3)
        r.update(sl.start, x[sl])
        back = Reservoir.from_state(r.state(), 40, seed=3)
        assert torch.equal(back.rows, r.rows) and back.seen == r.seen
        parts.append(r)
    limit = sample_threshold([p.priority for p in parts], 40)
    out = Reservoir(40, seed=3)
    for p in parts:
        out.merge(p.below(limit))
    assert torch.equal(out.index, whole.index) and torch.equal(out.rows, whole.rows)
    assert out.seen == 500
