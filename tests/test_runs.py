"""reprdiag.runs: what compare and gate accept (a run folder, its report.json, an embedding
file, a tensor, a Report) becomes one Report; inputs picked by key; labels."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

import reprdiag
from reprdiag.errors import InputError
from reprdiag.runs import is_report_path, load_run, run_label, select, unique_labels


@pytest.fixture(scope="module")
def layered(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, np.ndarray]:
    """An HDF5 file of two layers and the run folder of its analysis; layer ``b``'s rows."""
    root = tmp_path_factory.mktemp("runs")
    g = np.random.default_rng(0)
    b = g.standard_normal((120, 5)) * [3, 2, 1, 0.5, 0.1]
    with h5py.File(root / "emb.h5", "w") as f:
        f["a"], f["b"] = g.standard_normal((120, 4)), b
    reprdiag.analyze(root / "emb.h5", metrics=["vne", "effective_rank"], device="cpu",
                     precision="float64").save(root / "run", plots=False)
    return root / "emb.h5", root / "run", b


def test_folder_report_json_and_file_give_the_same_report(layered) -> None:
    file, folder, b = layered
    opts = {"metrics": ["vne", "effective_rank"], "device": "cpu", "precision": "float64"}
    reports = [load_run(folder), load_run(folder / "report.json"), load_run(file, **opts)]
    for report in reports:
        assert [r.key for r in report.inputs] == ["a", "b"]
    s = np.linalg.svd(b - b.mean(0), compute_uv=False)  # Roy & Vetterli: singular values
    p = s / s.sum()
    effective_rank = float(np.exp(-(p * np.log(p)).sum()))
    for report in reports:
        assert report.inputs[1].metrics["effective_rank"] == pytest.approx(effective_rank,
                                                                            rel=1e-9)


def test_keys_pick_inputs_from_saved_reports_and_reports(layered) -> None:
    _, folder, _ = layered
    assert [r.key for r in load_run(folder, keys=["b"]).inputs] == ["b"]
    report = load_run(folder)
    assert load_run(report) is report  # a Report is taken as it is
    assert [r.key for r in select(report, ["b", "a"], "x").inputs] == ["b", "a"]
    with pytest.raises(InputError, match=r"has no input 'c'") as info:
        load_run(folder, keys=["c"])
    assert "a, b" in str(info.value)  # says which inputs there are


def test_a_tensor_is_analyzed() -> None:
    x = torch.randn(50, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    report = load_run(x, metrics=["vne"], device="cpu")
    z = (x / x.norm(dim=1, keepdim=True)).numpy()
    eta = np.clip(np.linalg.eigvalsh(z.T @ z / 50), 0, None)
    eta = eta[eta > 0]
    assert report.inputs[0].metrics["vne"] == pytest.approx(float(-(eta * np.log(eta)).sum()),
                                                            rel=1e-9)


def test_report_paths_and_labels(tmp_path: Path) -> None:
    assert is_report_path(tmp_path) and is_report_path(tmp_path / "r.JSON")
    assert not is_report_path(tmp_path / "emb.h5")
    labels = [run_label(p, i) for i, p in enumerate(
        ["runs/base", Path("runs/new/report.json"), "emb.h5", torch.zeros(1)])]
    assert labels == ["base", "new", "emb.h5", "run4"]
    assert unique_labels(["a", "a", "b", "a"]) == ["a", "a#2", "b", "a#3"]
