"""--labels and --pair through the real analysis path: specs, alignment checks, streaming."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors.numpy import save_file

import reprdiag
from reprdiag.errors import InputError, UsageError
from reprdiag.metrics.labels import nc1
from reprdiag.stats import StreamingMoments
from reprdiag.stats.classes import ClassMoments
from tests.helpers import SAMPLE, run_main

LABEL_METRICS = ["nc1", "lidar", "nc2_equinorm", "nc2_equiangularity", "class_balance",
                 "class_erank_min", "class_erank_median"]
PAIR_METRICS = ["alignment", "barlow_ondiag", "barlow_offdiag", "pair_cka"]


def nc1_reference(x: np.ndarray, y: np.ndarray) -> float:
    classes = np.unique(y)
    mus = np.stack([x[y == c].mean(0) for c in classes])
    sw = sum((x[y == c] - m).T @ (x[y == c] - m) for c, m in zip(classes, mus, strict=True))
    off = mus - x.mean(0)
    sb = off.T @ off / len(classes)
    pinv = np.linalg.pinv(sb, rcond=x.shape[1] * np.finfo(float).eps, hermitian=True)
    return float(np.trace(sw / len(x) @ pinv) / len(classes))


@pytest.fixture
def files(tmp_path):
    rng = np.random.default_rng(0)
    y = rng.integers(0, 4, 600)
    x = (rng.standard_normal((4, 8)) * 2)[y] + rng.standard_normal((600, 8)) + 3.0
    view = x + 0.2 * rng.standard_normal(x.shape)
    save_file({"emb": x, "labels": y, "view": view}, str(tmp_path / "a.safetensors"))
    save_file({"y": y}, str(tmp_path / "labels.safetensors"))
    save_file({"y": y[:-1]}, str(tmp_path / "short.safetensors"))
    return tmp_path, x, y, view


def test_labels_key_or_file_and_chunking(files) -> None:
    tmp, x, y, _ = files
    same = reprdiag.analyze(tmp / "a.safetensors", keys=["emb"], labels="labels",
                            metrics=LABEL_METRICS, device="cpu")
    other = reprdiag.analyze(tmp / "a.safetensors", keys=["emb"], chunk_rows=37,
                             labels=f"{tmp / 'labels.safetensors'}:y", metrics=LABEL_METRICS,
                             device="cpu")
    assert same.metrics["nc1"] == pytest.approx(nc1_reference(x, y), rel=1e-10)
    for name in LABEL_METRICS:
        assert other.metrics[name] == pytest.approx(same.metrics[name], rel=1e-10), name
    assert same.options["labels"] == "labels"


def test_defaults_include_label_and_pair_metrics_only_when_given(files) -> None:
    tmp, *_ = files
    plain = reprdiag.analyze(tmp / "a.safetensors", keys=["emb"], device="cpu")
    assert not set(plain.metrics) & set(LABEL_METRICS + PAIR_METRICS)
    both = reprdiag.analyze(tmp / "a.safetensors", keys=["emb"], labels="labels", pair="view",
                            device="cpu")
    assert set(LABEL_METRICS + PAIR_METRICS) <= set(both.metrics)
    assert "uniformity" in plain.metrics


def test_pair_matches_row_reference(files) -> None:
    tmp, x, _, view = files
    rep = reprdiag.analyze(tmp / "a.safetensors", keys=["emb"], pair="view", chunk_rows=50,
                           metrics=PAIR_METRICS, device="cpu")
    zx = x / np.linalg.norm(x, axis=1, keepdims=True)
    zv = view / np.linalg.norm(view, axis=1, keepdims=True)
    assert rep.metrics["alignment"] == pytest.approx(np.mean(((zx - zv) ** 2).sum(1)), rel=1e-10)


def test_nan_drop_drops_the_same_rows_from_the_labels(files) -> None:
    tmp, x, y, _ = files
    bad = x.copy()
    bad[[5, 77]] = np.nan
    save_file({"emb": bad, "labels": y}, str(tmp / "nan.safetensors"))
    rep = reprdiag.analyze(tmp / "nan.safetensors", keys=["emb"], labels="labels", nan="drop",
                           metrics=["nc1"], device="cpu")
    keep = np.ones(len(x), bool)
    keep[[5, 77]] = False
    assert rep.metrics["nc1"] == pytest.approx(nc1_reference(x[keep], y[keep]), rel=1e-10)


def test_refusals(files) -> None:
    tmp, *_ = files
    a = tmp / "a.safetensors"
    with pytest.raises(InputError, match="599 rows for the 600 rows"):
        reprdiag.analyze(a, keys=["emb"], labels=str(tmp / "short.safetensors"), device="cpu")
    with pytest.raises(UsageError, match="has no key 'lables'"):
        reprdiag.analyze(a, keys=["emb"], labels="lables", device="cpu")
    with pytest.raises(UsageError, match="'nc1' needs --labels"):
        reprdiag.analyze(a, keys=["emb"], metrics=["nc1"], device="cpu")
    with pytest.raises(UsageError, match="not a file"):
        reprdiag.analyze(torch.randn(10, 3), labels="y", device="cpu")
    x = np.random.default_rng(1).standard_normal((600, 8))
    x[9] = np.inf
    save_file({"emb": np.ones((600, 8)) + np.eye(600, 8), "view": x}, str(tmp / "b.safetensors"))
    with pytest.raises(InputError, match=r"\[view\]: row 9 holds NaN or Inf"):
        reprdiag.analyze(tmp / "b.safetensors", keys=["emb"], pair="view", device="cpu")


def test_class_moments_merge_with_the_total(files) -> None:
    """The class sums and the total moments describe the same rows (one pass feeds both)."""
    _, x, y, _ = files
    m, c = StreamingMoments(8), ClassMoments(8)
    m.update(torch.from_numpy(x))
    c.update(torch.from_numpy(x), torch.from_numpy(y))
    torch.testing.assert_close((c.means() * c.counts[:, None]).sum(0) / c.counts.sum(), m.mean)
    assert nc1(m, c) == pytest.approx(nc1_reference(x, y), rel=1e-10)


def test_cli_digits_labels_and_mismatch(tmp_path) -> None:
    cmd = ["analyze", str(SAMPLE / "digits.safetensors"), "--labels",
           str(SAMPLE / "digits-labels.safetensors"), "-m", "nc1,lidar", "-f", "json", "-q"]
    done = run_main(cmd)
    assert done.returncode == 0, done.stderr
    metrics = json.loads(done.stdout)["inputs"][0]["metrics"]
    assert 0 < metrics["nc1"] < 5 and 1 <= metrics["lidar"] <= 9
    save_file({"y": np.zeros(10, dtype=np.int64)}, str(tmp_path / "y.safetensors"))
    cmd[3] = str(tmp_path / "y.safetensors")
    done = run_main(cmd)
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2 and len(lines) == 1, done.stderr
    assert lines[0].startswith("reprdiag: error: ") and "10 rows for the 1,797 rows" in lines[0]
