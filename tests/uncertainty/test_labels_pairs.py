"""The jackknife of the label and paired-view metrics (``--uncertainty`` with ``--labels`` /
``--pair``): the class and cross-moments are kept per block, so every deleted value is the
metric of the rows outside that block, and the SE is the jackknife of those values."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.numpy import save_file

import reprdiag
from reprdiag import companions
from reprdiag.config import AnalysisConfig
from reprdiag.engine import accumulate
from reprdiag.errors import ReprdiagWarning
from reprdiag.metrics import METRICS
from reprdiag.pipeline import companions_for, gather_sources, stream_for
from reprdiag.stats.blocked import BUDGET_ENV, BlockedStatistic, block_labels, moment_bytes
from reprdiag.stats.classes import ClassMoments
from reprdiag.stats.cross import PairMoments
from reprdiag.uncertainty import deleted_statistics

LABEL_METRICS = ["nc1", "lidar", "nc2_equinorm", "nc2_equiangularity", "class_balance",
                 "class_erank_min", "class_erank_median"]
PAIR_METRICS = ["alignment", "barlow_ondiag", "barlow_offdiag", "pair_cka"]
BOTH = LABEL_METRICS + PAIR_METRICS
N, D, K = 600, 6, 5
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, np.ndarray, np.ndarray,
                                                            np.ndarray]:
    """600 rows in 5 unequal classes plus one class of a single row (its block's deletion
    removes the whole class), and a noisy linear view of them; in one file."""
    rng = np.random.default_rng(11)
    y = rng.choice([0, 3, 4, 8, 9], size=N, p=[0.3, 0.25, 0.2, 0.15, 0.1])
    y[123] = 77
    x = (rng.standard_normal((10, D)) * 2)[y % 10] + rng.standard_normal((N, D)) + 5.0
    x[y == 77] += 3.0
    view = x @ rng.standard_normal((D, D)) + 0.5 * rng.standard_normal((N, D))
    path = tmp_path_factory.mktemp("lp") / "a.safetensors"
    save_file({"emb": x, "y": y, "view": view}, str(path))
    return path, x, y, view


def _options(**extra: object) -> dict[str, object]:
    return {"keys": ["emb"], "labels": "y", "pair": "view", "precision": "float64",
            "device": "cpu", "metrics": BOTH, **extra}


# -- float64 numpy references, from the rows -------------------------------------------------
def nc1_np(x: np.ndarray, y: np.ndarray) -> float:
    classes = np.unique(y)
    mus = np.stack([x[y == c].mean(0) for c in classes])
    sw = sum((x[y == c] - m).T @ (x[y == c] - m) for c, m in zip(classes, mus, strict=True))
    off = mus - x.mean(0)
    pinv = np.linalg.pinv(off.T @ off / len(classes), rcond=x.shape[1] * np.finfo(float).eps,
                          hermitian=True)
    return float(np.trace(sw / len(x) @ pinv) / len(classes))


def lidar_np(x: np.ndarray, y: np.ndarray, delta: float = 1e-6, eps: float = 1e-7) -> float:
    classes = np.unique(y)
    mus = np.stack([x[y == c].mean(0) for c in classes])
    off = mus - mus.mean(0)
    sb = off.T @ off / len(classes)
    sw = sum((x[y == c] - m).T @ (x[y == c] - m) for c, m in zip(classes, mus, strict=True))
    lam_w, vec = np.linalg.eigh(sw / len(x) + delta * np.eye(x.shape[1]))
    half = vec / np.sqrt(lam_w)
    lam = np.clip(np.linalg.eigvalsh(half.T @ sb @ half), 0, None)
    p = lam / lam.sum() + eps
    return float(np.exp(-(p * np.log(p)).sum()))


def class_balance_np(y: np.ndarray) -> float:
    p = np.unique(y, return_counts=True)[1] / len(y)
    return float(-(p * np.log(p)).sum() / np.log(len(p)))


def alignment_np(x: np.ndarray, v: np.ndarray) -> float:
    zx = x / np.linalg.norm(x, axis=1, keepdims=True)
    zv = v / np.linalg.norm(v, axis=1, keepdims=True)
    return float(((zx - zv) ** 2).sum(1).mean())


def cka_np(x: np.ndarray, v: np.ndarray) -> float:
    a, b = x - x.mean(0), v - v.mean(0)
    return float(np.linalg.norm(b.T @ a) ** 2
                 / (np.linalg.norm(a.T @ a) * np.linalg.norm(b.T @ b)))


def barlow_ondiag_np(x: np.ndarray, v: np.ndarray) -> float:
    c = np.corrcoef(x.T, v.T)[: x.shape[1], x.shape[1]:]
    return float(((1 - np.diag(c)) ** 2).mean())


REFERENCES = {
    "nc1": lambda x, y, v: nc1_np(x, y),
    "lidar": lambda x, y, v: lidar_np(x, y),
    "class_balance": lambda x, y, v: class_balance_np(y),
    "alignment": lambda x, y, v: alignment_np(x, v),
    "pair_cka": lambda x, y, v: cka_np(x, v),
    "barlow_ondiag": lambda x, y, v: barlow_ondiag_np(x, v),
}


def _plain_on_rows(tmp: Path, x: np.ndarray, y: np.ndarray, v: np.ndarray,
                   name: str) -> dict[str, float]:
    """The plain analysis (no jackknife) of these rows: its own file of rows, labels, view."""
    path = tmp / f"{name}.safetensors"
    save_file({"emb": x, "y": y, "view": v}, str(path))
    return reprdiag.analyze(path, **_options()).metrics


def _deleted_direct(tmp: Path, x: np.ndarray, y: np.ndarray, v: np.ndarray,
                    seed: int = 0) -> list[dict[str, float]]:
    labels = block_labels(torch.arange(N), seed, K).numpy()
    return [_plain_on_rows(tmp, x[labels != b], y[labels != b], v[labels != b], f"del{b}")
            for b in range(K)]


def test_deleted_label_and_pair_values_equal_the_rows_without_the_block(data, tmp_path) -> None:
    """Through the real pass (file, --labels KEY, --pair KEY, chunks of 37 rows): each
    delete-one-block statistic gives every label and paired-view metric of the rows outside
    the block, as a plain analysis of those rows and as float64 numpy from them."""
    path, x, y, v = data
    config = AnalysisConfig(labels="y", pair="view", precision="float64", chunk_rows=37,
                            uncertainty=True, blocks=K, metrics=tuple(BOTH))
    source = gather_sources(path, ["emb"])[0]
    opts = stream_for(source, config, torch.device("cpu"))
    acc = accumulate(source, opts, companions=companions_for(source, config, opts.blocks))
    assert isinstance(acc.extras["classes"], BlockedStatistic)
    assert isinstance(acc.extras["pair"], BlockedStatistic)
    labels = block_labels(torch.arange(N), 0, K).numpy()
    deleted = list(deleted_statistics(acc.blocks, acc.moments, acc.reservoir, acc.extras))
    direct = _deleted_direct(tmp_path, x, y, v)
    lost = labels[123]  # the single-row class lives in this block only
    for b, stats in enumerate(deleted):
        keep = labels != b
        assert stats.extras["classes"].ids == sorted(set(y[keep].tolist()))
        assert (77 in stats.extras["classes"].ids) == (b != lost)
        assert stats.extras["pair"].n == int(keep.sum())
        for name in BOTH:
            got = METRICS[name].func(stats)
            assert got == pytest.approx(direct[b][name], rel=1e-10, abs=1e-12), (b, name)
        for name, ref in REFERENCES.items():
            assert METRICS[name].func(stats) == pytest.approx(
                ref(x[keep], y[keep], v[keep]), rel=1e-9), (b, name)


def busing_jackknife(full: float, deleted: np.ndarray, sizes: np.ndarray) -> tuple[float, float]:
    """SE and bias of the weighted delete-m_b jackknife (Busing, Meijer & van der Leeden
    1999), written out here from the formulas."""
    n, k = sizes.sum(), len(sizes)
    h = n / sizes
    theta_j = k * full - ((1 - sizes / n) * deleted).sum()
    pseudo = h * full - (h - 1) * deleted
    return math.sqrt((((pseudo - theta_j) ** 2) / (h - 1)).sum() / k), full - theta_j


def test_standard_errors_are_the_jackknife_of_the_direct_deleted_values(data, tmp_path
                                                                          ) -> None:
    path, x, y, v = data
    rep = reprdiag.analyze(path, **_options(uncertainty=True, blocks=K)).inputs[0]
    assert set(rep.uncertainty) == set(BOTH)
    direct = _deleted_direct(tmp_path, x, y, v)
    sizes = np.bincount(block_labels(torch.arange(N), 0, K).numpy(), minlength=K)
    assert rep.uncertainty_method["blocks"] == K
    for name in BOTH:
        se, bias = busing_jackknife(rep.metrics[name], np.array([d[name] for d in direct]),
                                    sizes.astype(float))
        got = rep.uncertainty[name]
        assert got["se"] == pytest.approx(se, rel=1e-6, abs=1e-12), name
        assert got["bias"] == pytest.approx(bias, rel=1e-6, abs=1e-12), name
        assert got["ci_low"] < rep.metrics[name] < got["ci_high"] or got["se"] == 0, name
    assert rep.uncertainty["nc1"]["se"] > 0 and rep.uncertainty["pair_cka"]["se"] > 0


def test_values_equal_the_plain_run_and_chunks_change_nothing(data) -> None:
    path, *_ = data
    plain = reprdiag.analyze(path, **_options()).metrics
    a = reprdiag.analyze(path, **_options(uncertainty=True, blocks=K, chunk_rows=600)).inputs[0]
    b = reprdiag.analyze(path, **_options(uncertainty=True, blocks=K, chunk_rows=29)).inputs[0]
    for name in BOTH:
        assert a.metrics[name] == pytest.approx(plain[name], rel=1e-10), name
        for key in ("se", "bias", "ci_low", "ci_high"):
            assert b.uncertainty[name][key] == pytest.approx(a.uncertainty[name][key],
                                                             rel=1e-8, abs=1e-12), (name, key)


def test_nan_drop_removes_the_rows_from_every_block(data, tmp_path) -> None:
    """--nan drop: the dropped rows leave the blocked class and cross-moments too (the sizes
    the jackknife uses are the moments' blocks, which agree with them)."""
    _, x, y, v = data
    bad = x.copy()
    bad[[5, 300]] = np.nan
    path = tmp_path / "nan.safetensors"
    save_file({"emb": bad, "y": y, "view": v}, str(path))
    rep = reprdiag.analyze(path, **_options(uncertainty=True, blocks=K, nan="drop")).inputs[0]
    keep = np.ones(N, bool)
    keep[[5, 300]] = False
    assert rep.metrics["nc1"] == pytest.approx(nc1_np(x[keep], y[keep]), rel=1e-10)
    assert rep.metrics["alignment"] == pytest.approx(alignment_np(x[keep], v[keep]), rel=1e-10)
    assert all(math.isfinite(rep.uncertainty[m]["se"]) for m in BOTH)


def test_blocked_statistic_merges_like_a_statistic() -> None:
    """Two halves' blocked class and cross-moments merge (frames and states per block) into
    the whole's: the torchrun merge, in one process."""
    from reprdiag.stats.state import merged

    rng = np.random.default_rng(2)
    x = torch.from_numpy(rng.standard_normal((200, 3)) + 4)
    ids = torch.from_numpy(rng.integers(0, 4, 200))
    ids[:100] = ids[:100] % 2  # the first half sees classes 0, 1 only

    def blocked_classes(lo: int, hi: int) -> BlockedStatistic[ClassMoments]:
        out = BlockedStatistic([ClassMoments(3, second_moments=True) for _ in range(K)], 3,
                               tidy=ClassMoments.nonempty)
        for part, (rows, part_ids) in out.split(lo, [x[lo:hi], ids[lo:hi]]):
            part.update(rows, part_ids)
        return out

    def blocked_pair(lo: int, hi: int) -> BlockedStatistic[PairMoments]:
        out = BlockedStatistic([PairMoments(3, 3) for _ in range(K)], 3)
        for part, (rows, other) in out.split(lo, [x[lo:hi], 2 * x[lo:hi] + 1]):
            part.update(rows, other)
        return out

    for make in (blocked_classes, blocked_pair):
        whole, halves = make(0, 200), merged(make(0, 100), make(100, 200))
        for b in range(K):
            w, g = whole.without(b), halves.without(b)
            want, got = w.state(w.frame()), g.state(w.frame())  # about the same shift
            for key, value in want.items():
                torch.testing.assert_close(got[key], value, rtol=1e-10, atol=1e-9)


def test_pair_cross_moments_count_against_the_memory_budget(data, monkeypatch) -> None:
    """K blocks of (d + d')² cross-moments are part of the budget that fits K."""
    path, *_ = data
    per_block = companions.pair_block_bytes(D, D)
    monkeypatch.setenv(BUDGET_ENV, str(moment_bytes(D, 7, per_block)))
    with pytest.warns(ReprdiagWarning, match="using 7 blocks"):
        rep = reprdiag.analyze(path, **_options(uncertainty=True))
    assert rep.inputs[0].uncertainty_method["blocks"] == 7
    alone = reprdiag.analyze(path, keys=["emb"], metrics=["vne"], uncertainty=True,
                             device="cpu")  # without the pair, 20 blocks fit
    assert alone.inputs[0].uncertainty_method["blocks"] == 20


def test_blocks_share_the_per_class_second_moment_budget(data, monkeypatch) -> None:
    """Per-class second moments of all K blocks share CLASS_SQUARES_BYTES: when C·d²·8 fits
    it but K times that does not, per-class ranks are left out (NaN, with NaN SE) under
    --uncertainty, while the other label metrics keep value and SE."""
    path, *_ = data
    monkeypatch.setattr(companions, "CLASS_SQUARES_BYTES", 6 * D * D * 8 * 2)  # 6 classes
    plain = reprdiag.analyze(path, **_options(metrics=["class_erank_min", "nc1"]))
    assert math.isfinite(plain.metrics["class_erank_min"])
    rep = reprdiag.analyze(path, **_options(metrics=["class_erank_min", "nc1"],
                                            uncertainty=True, blocks=K)).inputs[0]
    assert math.isnan(rep.metrics["class_erank_min"])
    assert math.isnan(rep.uncertainty["class_erank_min"]["se"])
    assert rep.metrics["nc1"] == pytest.approx(plain.metrics["nc1"], rel=1e-10)
    assert rep.uncertainty["nc1"]["se"] > 0


def test_extras_streamed_whole_get_no_estimate_instead_of_failing(data) -> None:
    """A producer that streams labels without per-block copies (blocks=0) beside blocked
    moments: the label metrics keep their values and get no SE; the others get theirs."""
    from reprdiag.pipeline import summarize

    path, x, y, _ = data
    config = AnalysisConfig(labels="y", precision="float64", uncertainty=True, blocks=K,
                            metrics=("nc1", "vne"))
    source = gather_sources(path, ["emb"])[0]
    opts = stream_for(source, config, torch.device("cpu"))
    acc = accumulate(source, opts, companions=companions_for(source, config, blocks=0))
    result = summarize(source, acc, config)
    assert set(result.uncertainty) == {"vne"}
    assert result.metrics["nc1"] == pytest.approx(nc1_np(x, y), rel=1e-10)
