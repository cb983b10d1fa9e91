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
