"""reprdiag.pipeline: run(sources, config) -> Report (values against float64 numpy references,
the options block from the config), and how files and tensors become sources."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from reprdiag.config import AnalysisConfig
from reprdiag.errors import UsageError
from reprdiag.pipeline import FileSources, gather_sources, run


def data(n: int = 150, d: int = 6, seed: int = 0) -> np.ndarray:
    g = np.random.default_rng(seed)
    return g.standard_normal((n, d)) * np.geomspace(2, 0.2, d) + 0.5


def participation_ratio(x: np.ndarray) -> float:
    lam = np.linalg.eigvalsh(np.cov(x, rowvar=False))
    return float(lam.sum() ** 2 / (lam**2).sum())


def test_run_on_tensors_matches_numpy_and_records_the_config() -> None:
    xs = [data(seed=0), data(seed=1)]
    config = AnalysisConfig(metrics=["participation_ratio", "avg_cosine"], seed=2)
    report = run(FileSources([torch.from_numpy(x) for x in xs]), config, device="cpu")
    assert [r.name for r in report.inputs] == ["tensor0", "tensor1"]
    for result, x in zip(report.inputs, xs, strict=True):
        z = x / np.linalg.norm(x, axis=1, keepdims=True)
        cos = z @ z.T
        off = (cos.sum() - np.trace(cos)) / (len(x) * (len(x) - 1))
        assert result.metrics["participation_ratio"] == pytest.approx(participation_ratio(x),
                                                                      rel=1e-10)
        assert result.metrics["avg_cosine"] == pytest.approx(off, rel=1e-9)
    assert report.options == config.to_dict() and report.world_size == 1


def test_concat_joins_shards_key_by_key(tmp_path: Path) -> None:
    """Row shards with two keys: each key's shards analyze as one dataset, in file order."""
    a, b = data(200, 5, seed=3), data(200, 3, seed=4)
    files = []
    for i, rows in enumerate((slice(0, 70), slice(70, 200))):
        files.append(tmp_path / f"shard{i}.h5")
        with h5py.File(files[-1], "w") as f:
            f["a"], f["b"] = a[rows], b[rows]
    report = run(FileSources(files), AnalysisConfig(metrics=["participation_ratio"],
                                                    concat=True, precision="float64"),
                 device="cpu")
    assert [(r.key, r.n) for r in report.inputs] == [("a", 200), ("b", 200)]
    for result, x in zip(report.inputs, (a, b), strict=True):
        assert result.metrics["participation_ratio"] == pytest.approx(participation_ratio(x),
                                                                      rel=1e-10)


def test_sources_are_refused_with_one_line(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="no input given"):
        gather_sources([])
    with h5py.File(tmp_path / "one.h5", "w") as f:
        f["a"] = data(10, 2)
    with h5py.File(tmp_path / "two.h5", "w") as f:
        f["b"] = data(10, 2)
    with pytest.raises(UsageError, match="key 'a' is missing from a shard"):
        gather_sources([tmp_path / "one.h5", tmp_path / "two.h5"], concat=True)
