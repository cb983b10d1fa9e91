"""Precision policy and the float32 path's error floor (reprdiag/precision.py, issue 16).

References are independent float64 numpy computations from the definitions (docs/design.md §3),
never reprdiag's own code path.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.numpy import save_file

import reprdiag
from reprdiag import precision
from reprdiag.precision import AUTO_FLOAT64_MAX, choose

SAMPLE = Path(__file__).resolve().parents[1] / "sample_data"
CHECKED = ["rankme", "effective_rank", "vne", "std_normalized"]


def _entropy_rank(s: np.ndarray, eps: float = 0.0) -> float:
    p = s / s.sum() + eps
    p = p[p > 0]
    return float(np.exp(-(p * np.log(p)).sum()))


def reference(x: np.ndarray) -> dict[str, float]:
    """The four metrics in float64 numpy, straight from their definitions."""
    x = x.astype(np.float64)
    n, d = x.shape
    sigma = np.linalg.svd(x, compute_uv=False)
    centred = np.linalg.svd(x - x.mean(axis=0), compute_uv=False)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    z = x / np.where(norms > 0, norms, 1.0)
    eta = np.clip(np.linalg.eigvalsh(z.T @ z / n), 0, None)
    eta = eta[eta > eta.max() * d * np.finfo(np.float64).eps]
    eta = eta / eta.sum()
    return {"rankme": _entropy_rank(sigma, 1e-7),
            "effective_rank": _entropy_rank(centred),
            "vne": float(-(eta * np.log(eta)).sum()),
            "std_normalized": float(np.sqrt(d) * z.std(axis=0, ddof=1).mean())}


def _collapsed(n: int, d: int, offset: float = 0.0, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, 4)) @ rng.standard_normal((4, d)) * 3
    return (x + 1e-3 * rng.standard_normal((n, d)) + offset).astype(np.float32)


# -- the policy --------------------------------------------------------------------------------
def test_auto_is_float64_below_the_threshold_and_float32_above() -> None:
    side = int((AUTO_FLOAT64_MAX / 384**2) // 1)
    assert choose("float32", "auto", side, 384)[0] == torch.float64
    assert choose("float32", "auto", side + 1, 384)[0] == torch.float32
    assert choose("float16", "auto", None, 384)[0] == torch.float32  # N unknown
    assert choose("float64", "auto", 10**9, 4096)[0] == torch.float64
    assert choose("float32", "float32", 10, 2)[0] == torch.float32
    assert choose("float64", "float32", 10, 2)[0] == torch.float32


def test_report_records_precision_used_and_why(tmp_path: Path) -> None:
    out = tmp_path / "run"
    rep = reprdiag.analyze(SAMPLE / "collapsed.safetensors", metrics=["rankme"], device="cpu")
    rep.save(out)
    record = json.loads((out / "report.json").read_text())["inputs"][0]["precision"]
    assert record["work_dtype"] == "float64" and "costs little" in record["reason"]
    assert record["unresolved"] == {"covariance": 0, "singular_values": 0,
                                    "autocorrelation": 0}


def test_auto_switches_to_float32_above_the_threshold(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(precision, "AUTO_FLOAT64_MAX", 1e6)
    x = torch.from_numpy(_collapsed(2_000, 64))
    res = reprdiag.analyze(x, metrics=["rankme"], device="cpu").inputs[0]
    assert res.precision["work_dtype"] == "float32"
    assert "> 1e+06" in res.precision["reason"]


# -- the default precision on small collapsed inputs -------------------------------------------
@pytest.mark.parametrize("name, make", [
    ("sample collapsed", lambda: None),
    ("collapsed, offset 1e2", lambda: _collapsed(3_000, 96, offset=100.0)),
])
def test_default_precision_matches_float64_on_small_collapsed_inputs(
        name: str, make, tmp_path: Path) -> None:
    x = make()
    if x is None:
        path = SAMPLE / "collapsed.safetensors"
        from safetensors.numpy import load_file

        x = next(iter(load_file(path).values()))
    else:
        path = tmp_path / "x.safetensors"
        save_file({"emb": x}, path)
    got = reprdiag.analyze(path, metrics=CHECKED, device="cpu").metrics
    ref = reference(x)
    for k in CHECKED:
        assert got[k] == pytest.approx(ref[k], rel=1e-8), (name, k)


def test_identical_rows_give_zero_entropy_and_spread(tmp_path: Path) -> None:
    row = np.random.default_rng(3).standard_normal(50).astype(np.float32) + 1e4
    path = tmp_path / "same.safetensors"
    save_file({"emb": np.tile(row, (1_000, 1))}, path)
    got = reprdiag.analyze(path, metrics=["vne", "std_normalized", "rankme"],
                           device="cpu").metrics
    assert got["vne"] == 0.0 and got["std_normalized"] == 0.0
    assert got["rankme"] == pytest.approx(_entropy_rank(np.array([1.0] + [0.0] * 49), 1e-7),
                                          rel=1e-8)


# -- the float32 path: its floor, and the one warning ------------------------------------------
@pytest.fixture(scope="module")
def forced_float32(tmp_path_factory: pytest.TempPathFactory) -> tuple[np.ndarray, object]:
    x = _collapsed(40_000, 128)
    path = tmp_path_factory.mktemp("f32") / "collapsed.safetensors"
    save_file({"emb": x}, path)
    rep = reprdiag.analyze(path, device="cpu", precision="float32", chunk_rows=8192,
                           metrics=[*CHECKED, "isoscore", "numerical_rank"])
    return x, rep.inputs[0]


def test_float32_floor_bounds_the_measured_eigenvalue_error(forced_float32) -> None:
    x, res = forced_float32
    exact = np.clip(np.linalg.eigvalsh(np.cov(x.astype(np.float64).T))[::-1], 0, None)
    got = np.asarray(res.spectra["covariance"])
    floor = res.precision["floors"]["covariance"]
    assert res.precision["chunk_rows"] == 8192 and res.precision["work_dtype"] == "float32"
    assert np.abs(got - exact).max() <= floor
    assert (exact[:4] > floor).all() and res.precision["unresolved"]["covariance"] == 124


def test_float32_warns_once_and_the_interval_holds_the_exact_value(forced_float32) -> None:
    x, res = forced_float32
    floor_notes = [w for w in res.warnings if "error floor" in w]
    assert len(floor_notes) == 1 and "--precision float64" in floor_notes[0]
    ref = reference(x)
    moved = res.precision["sensitive"]
    assert {"rankme", "effective_rank"} <= set(moved)
    for k, (lo, hi) in moved.items():
        if k in ref:
            assert lo <= ref[k] <= hi, k


def test_float32_does_not_warn_when_nothing_depends_on_the_floor(tmp_path: Path) -> None:
    x = np.random.default_rng(1).standard_normal((20_000, 32)).astype(np.float32)
    path = tmp_path / "iso.safetensors"
    save_file({"emb": x}, path)
    res = reprdiag.analyze(path, device="cpu", precision="float32", metrics=CHECKED).inputs[0]
    assert res.precision["sensitive"] == {} and not res.warnings
    ref = reference(x)
    for k in CHECKED:
        assert res.metrics[k] == pytest.approx(ref[k], rel=1e-4)
