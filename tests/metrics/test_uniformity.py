"""Uniformity (Wang & Isola) against a float64 scipy reference over all pairs, and closed forms."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from safetensors.numpy import load_file
from scipy.spatial.distance import pdist

import reprdiag
from reprdiag.metrics import uniformity


def reference(x: np.ndarray, t: float = 2.0) -> float:
    z = x / np.linalg.norm(x, axis=1, keepdims=True)
    return float(np.log(np.mean(np.exp(-t * pdist(z, "sqeuclidean")))))


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_against_all_pairs_reference(dtype: torch.dtype) -> None:
    x = np.random.default_rng(0).standard_normal((700, 24)) + 0.3
    got = uniformity(torch.from_numpy(x).to(dtype))
    assert got == pytest.approx(reference(x), rel=1e-12 if dtype == torch.float64 else 1e-6)


def test_real_embeddings_through_analyze(sample_dir) -> None:
    x = load_file(str(sample_dir / "minilm.safetensors"))["embeddings"].astype(np.float64)
    report = reprdiag.analyze(sample_dir / "minilm.safetensors", metrics=["uniformity"],
                              device="cpu")
    assert report.metrics["uniformity"] == pytest.approx(reference(x), rel=1e-6)


def test_closed_forms() -> None:
    assert uniformity(torch.ones(50, 8, dtype=torch.float64) * 3) == pytest.approx(0, abs=1e-15)
    antipodal = torch.tensor([[0.0, 2.0], [0.0, -5.0]], dtype=torch.float64)
    assert uniformity(antipodal) == pytest.approx(-8.0)
    # the 2k vertices ±e_i of a cross-polytope: each row has 2k−2 neighbours at ‖·‖² = 2, one at 4
    k = 6
    x = torch.cat([torch.eye(k), -torch.eye(k)]).double()
    want = math.log(((2 * k - 2) * math.exp(-4) + math.exp(-8)) / (2 * k - 1))
    assert uniformity(x) == pytest.approx(want, rel=1e-12)


def test_zero_rows_are_left_out() -> None:
    x = torch.cat([torch.eye(4), torch.zeros(3, 4)]).double()
    assert uniformity(x) == pytest.approx(uniformity(torch.eye(4).double()))
    assert math.isnan(uniformity(torch.zeros(5, 3, dtype=torch.float64)))


# -- the shared pairwise pass: uniformity and ER entropy read the same Gram blocks ------------
def _blocks(n: int, groups: int) -> torch.Tensor:
    return torch.from_numpy(np.random.default_rng(3).integers(0, groups, n))


@pytest.mark.parametrize("block_rows", [64, 4096])
def test_deleted_values_equal_the_metric_on_the_rest(block_rows: int) -> None:
    """One grouped pass gives uniformity and ER entropy without each group, equal (float64,
    1e-12) to an independent all-pairs scipy reference on the remaining rows."""
    from reprdiag.metrics.pairwise import er_entropy, pair_sums

    x = np.random.default_rng(1).standard_normal((300, 7)) + 0.2
    e = torch.from_numpy(x / np.linalg.norm(x, axis=1, keepdims=True))
    labels = _blocks(300, 6)
    ps = pair_sums(e, 10.0, labels, 6, block_rows=block_rows)
    assert ps.solver.startswith("generic float64")
    assert math.log(ps.pair_mean()) == pytest.approx(reference(x), rel=1e-12)
    for g in range(6):
        rest = (labels != g).numpy()
        assert math.log(ps.pair_mean(without=g)) == pytest.approx(reference(x[rest]), rel=1e-12)
        assert ps.er_entropy(without=g) == pytest.approx(er_entropy(e[rest]), rel=1e-12)


def test_float32_symmetric_pass_against_float64() -> None:
    """The float32 upper-triangle path (≥ 2048 rows) stays within float32 rounding of the
    float64 reference, for the full sample and each deleted group."""
    from reprdiag.metrics.pairwise import pair_sums

    x = np.random.default_rng(2).standard_normal((2100, 16)) + 0.1
    e = torch.from_numpy(x / np.linalg.norm(x, axis=1, keepdims=True))
    labels = _blocks(2100, 5)
    fast = pair_sums(e.float(), 10.0, labels, 5, block_rows=512)
    exact = pair_sums(e, 10.0, labels, 5, block_rows=512)
    assert fast.solver.startswith("symmetric float32") and exact.solver.startswith("generic")
    for g in (None, 0, 4):
        assert fast.pair_mean(g) == pytest.approx(exact.pair_mean(g), rel=1e-6)
        assert fast.er_entropy(without=g) == pytest.approx(exact.er_entropy(without=g),
                                                           abs=1e-5)


def test_analyze_forms_the_sample_gram_blocks_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """Through reprdiag.analyze: ER entropy and uniformity come from one pass over the
    sample (also with --uncertainty, whose deleted values reuse it), and the report names
    the path of each."""
    from reprdiag.metrics import pairwise

    calls: list[tuple[int, int]] = []
    real = pairwise.pair_sums

    def counting(e: torch.Tensor, *args: object, **kwargs: object) -> pairwise.PairSums:
        out = real(e, *args, **kwargs)
        calls.append((e.shape[0], out.groups))
        return out

    monkeypatch.setattr(pairwise, "pair_sums", counting)
    x = torch.from_numpy(np.random.default_rng(4).standard_normal((500, 6)))
    names = ["er_entropy", "uniformity"]
    plain = reprdiag.analyze(x, metrics=names, device="cpu").inputs[0]
    assert calls == [(500, 1)]
    assert plain.solver["uniformity"] == plain.solver["er_entropy"]
    assert plain.metrics["uniformity"] == pytest.approx(reference(x.numpy()), rel=1e-12)
    calls.clear()
    jk = reprdiag.analyze(x, metrics=names, device="cpu", uncertainty=True, blocks=5).inputs[0]
    assert calls == [(500, 5)]  # one grouped pass: the plain values and the 5 deleted ones
    for name in names:  # the plain values do not depend on the grouping
        assert jk.metrics[name] == pytest.approx(plain.metrics[name], rel=1e-12)
        assert jk.uncertainty[name]["se"] > 0


def test_uniformity_jackknife_matches_recomputing_each_block() -> None:
    """The one-pass deleted values give the same SE as recomputing uniformity on every
    delete-a-block statistic (the estimator's generic path)."""
    from reprdiag.stats import Reservoir
    from reprdiag.stats.blocked import BlockedMoments, block_labels
    from reprdiag.uncertainty import deleted_statistic, jackknife

    x = torch.from_numpy(np.random.default_rng(5).standard_normal((400, 5)) + 0.3)
    bm = BlockedMoments(5, blocks=6)
    bm.update(0, x)
    sample = Reservoir(1000, 0)
    sample.update(0, x)
    rep = reprdiag.analyze(x, metrics=["uniformity"], device="cpu", uncertainty=True,
                           blocks=6).inputs[0]
    total = bm.total()
    deleted = np.array([uniformity(deleted_statistic(bm, total, sample, b).sample)
                        for b in range(6)])
    sizes = torch.bincount(block_labels(sample.index, 0, 6), minlength=6).tolist()
    want = jackknife(uniformity(x), deleted, sizes)
    assert rep.uncertainty["uniformity"]["se"] == pytest.approx(float(want["se"]), rel=1e-10)
