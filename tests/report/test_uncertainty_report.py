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


def test_spectrum_se_is_the_jackknife_of_each_eigenvalue(report: Report,
                                                          x: torch.Tensor) -> None:
    result = report.inputs[0]
    lam = np.asarray(result.spectra["covariance"])
    labels = block_labels(torch.arange(len(x)), 0, 6).numpy()
    rows = x.numpy()
    deleted = np.array([np.sort(np.linalg.eigvalsh(np.cov(rows[labels != b].T)))[::-1]
                        for b in range(6)])
    sizes = np.bincount(labels, minlength=6)
    want = jackknife(lam, deleted, sizes)["se"]
    np.testing.assert_allclose(result.spectra_se["covariance"], want, rtol=1e-7, atol=1e-12)


def test_spectrum_plot_draws_the_band(report: Report) -> None:
    fig = spectrum_figure(report.inputs[0])
    bands = [c for c in fig.axes[0].collections if isinstance(c, PolyCollection)]
    assert len(bands) == 1
    labels = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert any("jackknife band (6 blocks)" in lbl for lbl in labels)
