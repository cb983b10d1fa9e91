"""Scale (issue 16): only an exactly zero row is zero, so metrics that are scale-invariant by
definition read the same at any scale float64 holds."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import reprdiag

#: Invariant under x → s·x by their definitions (docs/design.md §3). Not: partition_isotropy
#: (exp(cᵀx)), cov_offdiag and vicreg_std (absolute variances).
INVARIANT = ["vne", "vne_normalized", "effective_rank", "rankme", "participation_ratio",
             "stable_rank", "numerical_rank", "alpha_req", "alpha_req_r2", "isoscore",
             "avg_cosine", "cov_offdiag_frac", "std_normalized", "er_entropy"]


def _data() -> np.ndarray:
    rng = np.random.default_rng(7)
    return rng.standard_normal((600, 24)) * np.geomspace(1.0, 0.05, 24) + 0.3


@pytest.mark.parametrize("scale", [1e-30, 1e30])
def test_scale_invariant_metrics_do_not_see_the_scale(scale: float) -> None:
    x = _data()
    base = reprdiag.analyze(x, metrics=INVARIANT, device="cpu").inputs[0]
    scaled = reprdiag.analyze(x * scale, metrics=INVARIANT, device="cpu").inputs[0]
    assert scaled.zero_rows == 0 and not scaled.warnings
    for k in INVARIANT:
        assert scaled.metrics[k] == pytest.approx(base.metrics[k], rel=1e-6, abs=1e-12), k


def test_std_normalized_of_tiny_data_is_that_of_the_data_itself() -> None:
    """The 1e-30 data used to count as all-zero rows (std_normalized 5.6e-18, not ≈1)."""
    x = _data()
    z = x / np.linalg.norm(x, axis=1, keepdims=True)
    expected = math.sqrt(x.shape[1]) * z.std(axis=0, ddof=1).mean()
    got = reprdiag.analyze(x * 1e-30, metrics=["std_normalized"], device="cpu")
    assert got.metrics["std_normalized"] == pytest.approx(expected, rel=1e-10)


def test_only_exactly_zero_rows_are_zero() -> None:
    x = torch.from_numpy(_data() * 1e-30)
    x[[3, 10]] = 0.0
    res = reprdiag.analyze(x, metrics=["avg_cosine"], device="cpu").inputs[0]
    assert res.zero_rows == 2 and any("all zeros" in w for w in res.warnings)
    z = x.numpy() / np.maximum(np.linalg.norm(x.numpy(), axis=1, keepdims=True), 1e-300)
    n = len(z)
    s = z.sum(axis=0)
    expected = (s @ s - (z * z).sum()) / (n * (n - 1))
    assert res.metrics["avg_cosine"] == pytest.approx(expected, rel=1e-10)
