"""The registry's derived metrics: ``<rank>_frac`` = value / min(N, d), computed when named
(``analyze --metrics rankme_frac``), never by default, and read by the gate."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

import reprdiag
from reprdiag.cli import app
from reprdiag.metrics import METRICS
from reprdiag.metrics.registry import DERIVED, SCALABLE

FRACS = [f"{name}_frac" for name in SCALABLE]


def _effective_rank(x: np.ndarray) -> float:
    """Roy & Vetterli's effective rank in float64 numpy: exp entropy of √λ/Σ√λ of the
    covariance (an independent reference, not reprdiag's code path), over its non-zero
    eigenvalues."""
    lam = np.sort(np.linalg.eigvalsh(np.cov(x, rowvar=False)))[::-1]
    s = np.sqrt(lam[:np.linalg.matrix_rank(x - x.mean(0))])  # the rounding-level zeros out
    p = s[s > 0] / s.sum()
    return float(np.exp(-(p * np.log(p)).sum()))


def _stable_rank(x: np.ndarray) -> float:
    lam = np.linalg.eigvalsh(np.cov(x, rowvar=False))
    return float(lam.sum() / lam.max())


@pytest.mark.parametrize("shape", [(300, 12), (9, 40)])  # N > d and N < d
def test_fractions_equal_an_independent_reference_over_min_n_d(shape: tuple[int, int]) -> None:
    x = np.random.default_rng(1).standard_normal(shape) * np.geomspace(1, 0.05, shape[1])
    report = reprdiag.analyze(x, metrics=["effective_rank_frac", "stable_rank_frac",
                                          "numerical_rank_frac"], device="cpu")
    got = report.inputs[0].metrics
    scale = min(shape)
    assert list(got) == ["effective_rank_frac", "stable_rank_frac", "numerical_rank_frac"]
    assert got["effective_rank_frac"] == pytest.approx(_effective_rank(x) / scale, rel=1e-9)
    assert got["stable_rank_frac"] == pytest.approx(_stable_rank(x) / scale, rel=1e-9)
    rank = np.linalg.matrix_rank(x - x.mean(0))  # centred: min(N - 1, d)
    assert got["numerical_rank_frac"] == pytest.approx(rank / scale, abs=1e-12)


def test_fractions_are_registered_as_derived_and_not_computed_by_default() -> None:
    for name in FRACS:
        info = METRICS[name]
        assert info.needs == DERIVED and info.derived_from == name.removesuffix("_frac")
        assert info.direction == METRICS[info.derived_from].direction
        lo, hi = info.bounds(500, 20)
        base_lo, base_hi = METRICS[info.derived_from].bounds(500, 20)
        assert (lo, hi) == (base_lo / 20, base_hi / 20)
    x = np.random.default_rng(2).standard_normal((200, 8))
    assert not set(FRACS) & set(reprdiag.analyze(x, device="cpu").inputs[0].metrics)


def test_fractions_carry_jackknife_errors_scaled_like_their_base() -> None:
    x = np.random.default_rng(3).standard_normal((600, 10)) * np.geomspace(1, 0.1, 10)
    result = reprdiag.analyze(x, metrics=["effective_rank", "effective_rank_frac"],
                              uncertainty=True, device="cpu").inputs[0]
    assert result.se("effective_rank_frac") == pytest.approx(
        result.se("effective_rank") / 10, rel=1e-9)


def test_analyze_cli_computes_a_fraction_and_the_gate_reads_it(tmp_path: Path) -> None:
    x = np.random.default_rng(4).standard_normal((400, 16)).astype("float32")
    np.save(tmp_path / "x.npy", x)
    cli = CliRunner().invoke(app, ["analyze", str(tmp_path / "x.npy"), "--metrics",
                                   "rankme_frac", "--format", "json", "--quiet", "--device",
                                   "cpu", "--out", str(tmp_path / "run")])
    assert cli.exit_code == 0, cli.output
    value = json.loads(cli.stdout)["inputs"][0]["metrics"]["rankme_frac"]
    rankme = reprdiag.analyze(x, metrics=["rankme"], device="cpu").inputs[0].metrics["rankme"]
    assert value == pytest.approx(rankme / 16, rel=1e-6)
    # the saved run holds rankme_frac but not rankme: the gate reads the fraction itself
    result = reprdiag.gate(tmp_path / "run", rules=[f"rankme_frac < {value + 0.01}"])
    assert not result.passed and result.checks[0].value == value
