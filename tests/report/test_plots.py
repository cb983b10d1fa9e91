"""The figures carry the data they claim to: check the artists, not only the files."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

import reprdiag
from reprdiag.report.plots import layer_figure, save_plots, spectrum_figure


@pytest.fixture(scope="module")
def report() -> reprdiag.Report:
    g = torch.Generator().manual_seed(0)
    decay = torch.arange(1, 41, dtype=torch.float64) ** -0.6
    a = torch.randn(3000, 40, dtype=torch.float64, generator=g) * decay
    b = torch.randn(3000, 40, dtype=torch.float64, generator=g) * decay**2
    return reprdiag.analyze([a, b], device="cpu", sample_size=256)


def test_spectrum_figure_content(report: reprdiag.Report) -> None:
    result = report.inputs[0]
    fig = spectrum_figure(result)
    ax1, ax2 = fig.axes
    assert ax1.get_xscale() == "log" and ax1.get_yscale() == "log"
    lam = np.asarray(result.spectra["covariance"])
    first = ax1.get_lines()[0]
    np.testing.assert_allclose(first.get_ydata(), lam / lam.sum())
    labels = [t.get_text() for t in ax1.get_legend().get_texts()]
    assert any(lbl.startswith("power law α") for lbl in labels)
    fit = next(line for line in ax1.get_lines() if line.get_label().startswith("power law"))
    x, y = np.asarray(fit.get_xdata(), float), np.asarray(fit.get_ydata(), float)
    slope = np.polyfit(np.log(x), np.log(y), 1)[0]
    assert -slope == pytest.approx(result.metrics["alpha_req"], rel=1e-9)
    cum = ax2.get_lines()[0].get_ydata()
    assert cum[-1] == pytest.approx(1.0) and np.all(np.diff(cum) >= 0)
    assert ax1.get_xlabel() and ax1.get_ylabel() and ax2.get_xlabel() and ax2.get_ylabel()
    assert "N = 3,000" in fig._suptitle.get_text()


def test_layer_figure_has_one_point_per_input(report: reprdiag.Report) -> None:
    """Unrelated inputs (two tensors) get bars, one per input, not a line across them."""
    fig = layer_figure(report)
    visible = [ax for ax in fig.axes if ax.get_visible()]
    assert {ax.get_title() for ax in visible} >= {"rankme", "vne_normalized"}
    ax = next(a for a in visible if a.get_title() == "rankme")
    assert ax.get_lines() == []
    np.testing.assert_allclose([b.get_height() for b in ax.patches],
                               [r.metrics["rankme"] for r in report.inputs])
    assert ax.get_ylabel() == "rankme  (↑ higher is healthier)"
    cos = next(a for a in visible if a.get_title() == "avg_cosine")
    assert "↓ lower is healthier" in cos.get_ylabel()


def test_layers_of_one_file_are_joined_by_a_line(report: reprdiag.Report) -> None:
    layers = [replace(r, name=f"runs/m.h5[hidden/layer_{i}]", path="runs/m.h5",
                      key=f"hidden/layer_{i}") for i, r in enumerate(report.inputs)]
    fig = layer_figure(replace(report, inputs=layers))
    ax = next(a for a in fig.axes if a.get_visible() and a.get_title() == "rankme")
    np.testing.assert_allclose(ax.get_lines()[0].get_ydata(),
                               [r.metrics["rankme"] for r in report.inputs])
    assert [t.get_text() for t in ax.get_xticklabels()] == ["layer_0", "layer_1"]
    assert ax.get_xlabel() == "layer"


def test_save_plots_names(report: reprdiag.Report, tmp_path: Path) -> None:
    written = save_plots(report, tmp_path)
    assert sorted(p.name for p in written) == ["layers.png", "spectrum-tensor0.png",
                                               "spectrum-tensor1.png"]
    assert all(p.stat().st_size > 10_000 for p in written)


def test_inputs_whose_names_slug_alike_get_one_plot_each(tmp_path: Path) -> None:
    """Keys ``a/b``, ``a-b`` and ``a b`` all slug to ``a-b``: three inputs, three plots."""
    import h5py

    g = np.random.default_rng(0)
    with h5py.File(tmp_path / "f.h5", "w") as f:
        for key in ("a/b", "a-b", "a b"):
            f[key] = g.standard_normal((50, 4))
    report = reprdiag.analyze(tmp_path / "f.h5", metrics=["rankme"], device="cpu")
    assert len(report.inputs) == 3
    written = save_plots(report, tmp_path)
    spectra = sorted(p.name for p in written if p.name.startswith("spectrum-"))
    assert spectra == ["spectrum-f.h5-a-b-2.png", "spectrum-f.h5-a-b-3.png",
                       "spectrum-f.h5-a-b.png"]
