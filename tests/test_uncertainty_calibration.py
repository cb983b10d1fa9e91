"""Calibration of the jackknife SE on Gaussian data of known covariance (quick versions of
``bench/uncertainty.py``; the larger replicate counts and their figures are in
bench/RESULTS.md)."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.usefixtures("one_thread")


def _bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_uncertainty",
                                                  ROOT / "bench" / "uncertainty.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_se_matches_replicate_spread_at_d32() -> None:
    """Power-law covariance (exponent 1, bending to 2 beyond rank 16), d = 32, N = 2000:
    the mean jackknife SE of every continuous metric is within 30% of the metric's standard
    deviation over independent replicates, and the 95% intervals cover the replicates' mean
    in most replicates (the full figures, 400 replicates: bench/RESULTS.md)."""
    bench = _bench()
    model = bench.power_law(32, bend=16)
    runs = bench.jackknife_runs(model, 2000, reps=30)
    spread = bench.metric_values(model, 2000, reps=150, metrics=bench.CONTINUOUS)
    table = bench.calibration(runs, spread)
    assert set(table.index) == set(bench.CONTINUOUS)
    bad = table[(table["ratio"] < 0.7) | (table["ratio"] > 1.3)]
    assert bad.empty, bad
    assert (table["coverage_mean"] >= 0.8).all(), table["coverage_mean"]
    assert 0.88 <= table["coverage_mean"].mean() <= 1.0


def test_high_dimension_tail_metrics() -> None:
    """d = 384, N = 2000 (d/N ≈ 0.2), Gaussian with the MiniLM sample's covariance: the
    jackknife SE of the spectrum-tail metrics stays within 0.7–2.5× the true spread
    (measured at 200 + 20 replicates: 0.89–1.09×, bench/RESULTS.md)."""
    bench = _bench()
    model = bench.minilm()
    runs = bench.jackknife_runs(model, 2000, reps=8, metrics=bench.TAIL_METRICS)
    spread = bench.metric_values(model, 2000, reps=40, metrics=bench.TAIL_METRICS)
    table = bench.calibration(runs, spread)
    assert ((table["ratio"] > 0.7) & (table["ratio"] < 2.5)).all(), table["ratio"]
