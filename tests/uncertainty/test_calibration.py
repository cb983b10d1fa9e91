"""Calibration of the jackknife SE on Gaussian data of known covariance, through
``reprdiag.analyze(..., uncertainty=True)``: the mean reported SE of each metric against the
metric's standard deviation over independent replicates.

Quick versions (12 + 60 and 8 + 40 replicates) of ``bench/uncertainty.py calibrate --bend 16``
and ``highdim``, whose 400- and 300-replicate figures are in bench/RESULTS.md; the Gaussian
draws are written out here so the suite does not import bench/.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from safetensors.torch import load_file

import reprdiag
from reprdiag.metrics import METRICS, Statistics, compute, resolve
from tests.helpers import SAMPLE

pytestmark = pytest.mark.usefixtures("one_thread")
CONTINUOUS = [i.name for i in resolve(None) if not i.discrete and not i.needs]
TAIL = ["effective_rank", "rankme", "participation_ratio", "stable_rank", "alpha_req"]
N = 2000


def broken_power_law(d: int = 32, bend: int = 16) -> tuple[np.ndarray, np.ndarray]:
    """(R·diag(√λ), mean): λ_i = 1/i up to rank ``bend``, then ∝ 1/i² (continuous), in a
    random rotation R; a mean of norm half the total spread (a non-centred cloud)."""
    g = np.random.default_rng(0)
    rotation, _ = np.linalg.qr(g.standard_normal((d, d)))
    i = np.arange(1, d + 1, dtype=np.float64)
    lam = np.where(i <= bend, 1 / i, bend / i**2)
    mean = g.standard_normal(d)
    return rotation * np.sqrt(lam), mean / np.linalg.norm(mean) * np.sqrt(lam.sum()) / 2


def minilm_gaussian() -> tuple[np.ndarray, np.ndarray]:
    """(V·diag(√λ), mean) of the MiniLM sample's covariance (d = 384)."""
    x = load_file(str(SAMPLE / "minilm.safetensors"))["embeddings"].double().numpy()
    lam, vecs = np.linalg.eigh(np.cov(x, rowvar=False))
    return vecs * np.sqrt(lam.clip(0)), x.mean(0)


def draw(model: tuple[np.ndarray, np.ndarray], seed: int) -> torch.Tensor:
    root, mean = model
    z = np.random.default_rng(seed).standard_normal((N, len(mean)))
    return torch.from_numpy(z @ root.T + mean)


def calibration(model: tuple[np.ndarray, np.ndarray], metrics: list[str], se_reps: int,
                reps: int) -> pd.DataFrame:
    """Per metric: ratio = mean jackknife SE (``se_reps`` analyses, 20 blocks) / sd of the
    metric over ``reps`` other replicates; coverage = the share of 95% intervals holding the
    replicates' mean."""
    runs = pd.concat([reprdiag.analyze(draw(model, rep), metrics=metrics, uncertainty=True,
                                       blocks=20, device="cpu").uncertainty
                      for rep in range(se_reps)])
    values = pd.DataFrame([compute(Statistics.from_tensor(draw(model, 10_000 + rep)),
                                   [METRICS[m] for m in metrics]) for rep in range(reps)])
    rows = {}
    for name in metrics:
        est = runs.xs(name, level="metric")
        mean = values[name].mean()
        rows[name] = {"ratio": est["se"].mean() / values[name].std(ddof=1),
                      "coverage": ((est["ci_low"] <= mean) & (mean <= est["ci_high"])).mean()}
    return pd.DataFrame(rows).T


def test_se_matches_replicate_spread_at_d32() -> None:
    """d = 32, N = 2000: every continuous metric's mean SE is within 30% of its spread over
    replicates, and the 95% intervals cover the replicates' mean in most replicates."""
    table = calibration(broken_power_law(), CONTINUOUS, se_reps=12, reps=60)
    assert set(table.index) == set(CONTINUOUS)
    bad = table[(table["ratio"] < 0.7) | (table["ratio"] > 1.3)]
    assert bad.empty, bad
    assert (table["coverage"] >= 0.8).all(), table["coverage"]
    assert 0.88 <= table["coverage"].mean() <= 1.0


def test_high_dimension_tail_metrics() -> None:
    """d = 384, N = 2000 (d/N ≈ 0.2), Gaussian with the MiniLM sample's covariance: the
    jackknife SE of the spectrum-tail metrics stays within 0.7–2.5× the true spread
    (measured at 300 + 30 replicates: 0.89–1.09×, bench/RESULTS.md)."""
    table = calibration(minilm_gaussian(), TAIL, se_reps=8, reps=40)
    assert ((table["ratio"] > 0.7) & (table["ratio"] < 2.5)).all(), table["ratio"]
