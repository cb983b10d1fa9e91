"""Jackknife results in the report: JSON, CSV, tables, markdown and the spectrum band."""

from __future__ import annotations

import io
import json
import math

import numpy as np
import pandas as pd
import pytest
import torch
from matplotlib.collections import PolyCollection
from rich.console import Console

import reprdiag
from reprdiag.report.export import render
from reprdiag.report.plots import spectrum_figure
from reprdiag.report.table import metric_tables
from reprdiag.results import Report
from reprdiag.stats.blocked import block_labels
from reprdiag.uncertainty import jackknife

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def x() -> torch.Tensor:
    g = torch.Generator().manual_seed(4)
    return torch.randn(800, 10, dtype=torch.float64, generator=g) * torch.arange(
        1, 11, dtype=torch.float64) ** -0.7


@pytest.fixture(scope="module")
def report(x: torch.Tensor) -> Report:
    torch.set_num_threads(1)
    return reprdiag.analyze([x, x[:400]], uncertainty=True, blocks=6, device="cpu")


def test_json_layout_and_round_trip(report: Report) -> None:
    data = json.loads(report.to_json())
    entry = data["inputs"][0]
    assert entry["uncertainty_method"]["method"] == "jackknife"
    assert entry["uncertainty_method"]["blocks"] == 6
    assert data["options"]["uncertainty"] is True and data["options"]["blocks"] == 6
    assert "numerical_rank" in entry["metrics"] and "numerical_rank" not in entry["uncertainty"]
    for est in entry["uncertainty"].values():
        assert set(est) == {"se", "ci_low", "ci_high", "bias"}
    back = Report.from_dict(data)
    assert back.inputs[0].uncertainty == report.inputs[0].uncertainty
    pd.testing.assert_frame_equal(back.uncertainty, report.uncertainty)


def test_nan_estimates_are_null_in_json(report: Report) -> None:
    copy = Report.from_dict(json.loads(report.to_json()))
    copy.inputs[0].uncertainty["vne"]["se"] = math.nan
    entry = json.loads(copy.to_json())["inputs"][0]
    assert entry["uncertainty"]["vne"]["se"] is None
    assert math.isnan(Report.from_dict(json.loads(copy.to_json())).inputs[0].se("vne"))


def test_csv_has_se_columns(report: Report) -> None:
    frame = pd.read_csv(io.StringIO(render(report, "csv")))
    names = list(report.inputs[0].uncertainty)
    assert [f"{m}_se" for m in names] == [c for c in frame.columns if c.endswith("_se")]
    assert frame.loc[1, "rankme_se"] == pytest.approx(report.inputs[1].se("rankme"))


def test_table_and_markdown_show_value_plus_minus_se(report: Report) -> None:
    console = Console(width=400, record=True)
    for table in metric_tables(report, 400):
        console.print(table)
    text = " ".join(console.export_text().split())  # a narrow last table wraps its caption
    assert "±" in text and "jackknife SE (6 blocks)" in text
    md = render(report, "markdown")
    se = report.inputs[0].se("rankme")
    assert f"± {se:.2g}" in md


def test_spectrum_se_is_the_jackknife_of_each_eigenvalue(x: torch.Tensor) -> None:
    """The exact path: each block's covariance decomposed again (numpy reference)."""
    exact = reprdiag.analyze(x, uncertainty=True, blocks=6, jackknife="exact", device="cpu")
    result = exact.inputs[0]
    assert result.uncertainty_method["deleted_spectra"] == "exact"
    lam = np.asarray(result.spectra["covariance"])
    labels = block_labels(torch.arange(len(x)), 0, 6).numpy()
    rows = x.numpy()
    deleted = np.array([np.sort(np.linalg.eigvalsh(np.cov(rows[labels != b].T)))[::-1]
                        for b in range(6)])
    sizes = np.bincount(labels, minlength=6)
    want = jackknife(lam, deleted, sizes)["se"]
    np.testing.assert_allclose(result.spectra_se["covariance"], want, rtol=1e-7, atol=1e-12)


def test_first_order_spectrum_se_is_the_jackknife_of_the_updated_eigenvalues(
        report: Report, x: torch.Tensor) -> None:
    """N/K = 133 ≥ d = 10, so auto takes first order: each block's eigenvalues are
    λ_k + v_kᵀ(C_b − C)v_k from the full decomposition (numpy float64 reference), and their
    jackknife SE lies within 5 % of the exact deletions' for the five largest and within 15 %
    for the close-spaced tail (where deleting a block reorders eigenvalues)."""
    result = report.inputs[0]
    assert result.uncertainty_method["deleted_spectra"] == "first-order"
    rows = x.numpy()
    labels = block_labels(torch.arange(len(x)), 0, 6).numpy()
    full = np.cov(rows.T)
    lam, vec = np.linalg.eigh(full)
    updated = np.array([np.sort(lam + np.einsum("ik,ij,jk->k", vec, np.cov(rows[labels != b].T)
                                                - full, vec))[::-1] for b in range(6)])
    sizes = np.bincount(labels, minlength=6)
    want = jackknife(lam[::-1], updated, sizes)["se"]
    np.testing.assert_allclose(result.spectra_se["covariance"], want, rtol=1e-7, atol=1e-12)
    exact = np.array([np.sort(np.linalg.eigvalsh(np.cov(rows[labels != b].T)))[::-1]
                      for b in range(6)])
    exact_se = jackknife(lam[::-1], exact, sizes)["se"]
    np.testing.assert_allclose(want[:5], exact_se[:5], rtol=0.05)
    np.testing.assert_allclose(want, exact_se, rtol=0.15)


def test_first_order_reports_no_bias_for_spectral_metrics(report: Report) -> None:
    """The jackknife bias is second order in the deletions: first-order ones cannot give it."""
    est = report.inputs[0].uncertainty
    assert math.isnan(est["effective_rank"]["bias"]) and math.isnan(est["vne"]["bias"])
    assert math.isfinite(est["effective_rank"]["se"])
    assert math.isfinite(est["avg_cosine"]["bias"])  # exact from the moments: kept
    assert json.loads(report.to_json())["inputs"][0]["uncertainty"]["vne"]["bias"] is None
    console = Console(width=400, record=True)
    for table in metric_tables(report, 400):
        console.print(table)
    assert "first-order deleted spectra" in console.export_text()


def test_spectrum_plot_draws_the_band(report: Report) -> None:
    fig = spectrum_figure(report.inputs[0])
    bands = [c for c in fig.axes[0].collections if isinstance(c, PolyCollection)]
    assert len(bands) == 1
    labels = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert any("jackknife band (6 blocks)" in lbl for lbl in labels)
