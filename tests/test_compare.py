"""compare: deltas against the first run, direction colours, key matching, verdict, plots."""

from __future__ import annotations

import json
import math
import subprocess
from collections.abc import Iterator
from pathlib import Path

import h5py
import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch

import reprdiag
from reprdiag.compare import match_inputs
from reprdiag.errors import InputError, UsageError
from reprdiag.report.export import render
from reprdiag.report.plots import compare_figure, compare_layers_figure, layer_figure
from reprdiag.results import Comparison, InputResult, Report, classify
from tests.helpers import run_main


@pytest.fixture(autouse=True)
def _close_figures() -> Iterator[None]:
    yield
    plt.close("all")


FAST = ["vne", "rankme", "effective_rank", "avg_cosine", "alpha_req", "std_normalized"]


def _x(n: int = 400, d: int = 16, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, d))


def _collapsed(n: int = 400, d: int = 16, k: int = 2, seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, k)) @ rng.standard_normal((k, d)) + 1e-3 * rng.standard_normal(
        (n, d))


def _result(name: str, key: str | None, metrics: dict[str, float], n: int = 100,
            d: int = 10, cov: list[float] | None = None) -> InputResult:
    return InputResult(name=name, n=n, d=d, dtype="float64", metrics=metrics,
                       spectra={"covariance": cov or [4.0, 2.0, 1.0, 1.0]}, solver={}, key=key)


def test_run_with_itself_gives_exactly_zero_deltas(tmp_path: Path) -> None:
    x = torch.from_numpy(_x())
    report = reprdiag.analyze(x, metrics=FAST, device="cpu")
    report.save(tmp_path / "A", plots=False)
    # a saved run (JSON round trip) against the live report and against itself
    cmp = reprdiag.compare([report, tmp_path / "A", tmp_path / "A"])
    frame = cmp.frame
    assert set(frame["metric"]) == set(FAST)
    assert (frame["delta"] == 0.0).all() and (frame["delta_pct"] == 0.0).all()
    assert set(frame["change"]) == {"same"}
    assert "identical" in cmp.verdict()
    assert cmp.runs == ["run1", "A", "A#2"]


def test_deltas_match_an_independent_computation() -> None:
    a = reprdiag.analyze(torch.from_numpy(_x()), metrics=FAST, device="cpu")
    b = reprdiag.analyze(torch.from_numpy(_collapsed()), metrics=FAST, device="cpu")
    cmp = reprdiag.compare([a, b], labels=["healthy", "collapsed"])
    rows = cmp.frame[cmp.frame["run"] == "collapsed"].set_index("metric")
    for name in FAST:
        v0, v1 = a.metrics[name], b.metrics[name]
        assert rows.loc[name, "value"] == v1
        assert rows.loc[name, "delta"] == pytest.approx(v1 - v0, rel=1e-15, abs=0)
        assert rows.loc[name, "delta_pct"] == pytest.approx(100 * (v1 - v0) / abs(v0),
                                                            rel=1e-12)
    # rank 2 of 16: ranks fall (worse), alignment rises (worse), α-ReQ has no direction
    assert rows.loc["rankme", "change"] == "worse"
    assert rows.loc["effective_rank", "change"] == "worse"
    assert rows.loc["alpha_req", "change"] == "neutral"
    verdict = cmp.verdict()
    assert verdict.startswith("collapsed vs healthy:") and "largest:" in verdict
    assert "\n" not in verdict


@pytest.mark.parametrize(("delta", "direction", "expected"), [
    (1.0, "higher", "better"), (-1.0, "higher", "worse"), (1.0, "lower", "worse"),
    (-1.0, "lower", "better"), (5.0, "neutral", "neutral"), (0.0, "lower", "same"),
    (math.nan, "higher", "n/a")])
def test_classify_by_direction(delta: float, direction: str, expected: str) -> None:
    assert classify(delta, direction) == expected


def test_layers_are_matched_by_key_whatever_their_order() -> None:
    a = Report([_result("a[l0]", "l0", {"vne": 1.0}), _result("a[l1]", "l1", {"vne": 2.0}),
                _result("a[extra]", "extra", {"vne": 9.0})])
    b = Report([_result("b[l1]", "l1", {"vne": 2.5}), _result("b[l0]", "l0", {"vne": 0.5})])
    cmp = reprdiag.compare([a, b], labels=["A", "B"])
    assert list(cmp.inputs) == ["l0", "l1"] and cmp.layered
    f = cmp.frame.set_index(["input", "run"])
    assert f.loc[("l0", "B"), "delta"] == -0.5 and f.loc[("l1", "B"), "delta"] == 0.5
    assert cmp.notes == ["extra only in A; skipped"]


def test_runs_without_a_shared_key_are_an_error() -> None:
    a = Report([_result("a", "x", {"vne": 1.0}), _result("a2", "y", {"vne": 1.0})])
    b = Report([_result("b", "z", {"vne": 1.0}), _result("b2", "w", {"vne": 1.0})])
    with pytest.raises(InputError, match="share no input key"):
        match_inputs([a, b], ["A", "B"])
    with pytest.raises(UsageError, match="at least two"):
        reprdiag.compare([a])


def test_different_sizes_are_allowed_and_noted() -> None:
    a = reprdiag.analyze(torch.from_numpy(_x(300, 16)), metrics=["rankme"], device="cpu")
    b = reprdiag.analyze(torch.from_numpy(_x(200, 8)), metrics=["rankme"], device="cpu")
    cmp = reprdiag.compare([a, b])
    assert cmp.shapes_differ("tensor")
    assert any("differ in N × d" in note and "300×16" in note for note in cmp.notes)
    assert cmp.frame["delta"].iloc[-1] < 0


def test_metrics_option_limits_rows_and_outputs_are_consistent(tmp_path: Path) -> None:
    a = Report([_result("a", "k", {"vne": 2.0, "rankme": 5.0, "avg_cosine": 0.1})])
    b = Report([_result("b", "k", {"vne": 1.0, "rankme": 5.0, "avg_cosine": 0.2})])
    cmp = reprdiag.compare([a, b], metrics=["avg_cosine", "vne"], labels=["A", "B"])
    assert cmp.metric_names == ["avg_cosine", "vne"]
    data = cmp.to_dict()
    assert [r["metric"] for r in data["rows"]] == ["avg_cosine"] * 2 + ["vne"] * 2
    assert data["rows"][-1]["delta_pct"] == -50.0
    md = render(cmp, "markdown")
    assert "| vne | 2 | 1 | −1 | −50.0% |" in md
    written = cmp.save(tmp_path / "out", plots=False)
    assert sorted(p.name for p in written) == ["compare.csv", "compare.html", "compare.json",
                                               "compare.md"]


def _legend_texts(ax) -> list[str]:
    return [t.get_text() for t in ax.get_legend().get_texts()]


def test_compare_figure_overlays_each_runs_normalized_spectrum() -> None:
    a = reprdiag.analyze(torch.from_numpy(_x()), metrics=["vne"], device="cpu")
    b = reprdiag.analyze(torch.from_numpy(_collapsed()), metrics=["vne"], device="cpu")
    cmp = reprdiag.compare([a, b], labels=["healthy", "collapsed"])
    fig = compare_figure(cmp)
    ax1, ax2 = fig.axes
    assert ax1.get_xscale() == "log" and ax1.get_yscale() == "log"
    lines = ax1.get_lines()
    assert [line.get_label().split(" ")[0] for line in lines] == ["healthy", "collapsed"]
    for line, rep in zip(lines, (a, b), strict=True):
        lam = np.asarray(rep.inputs[0].spectra["covariance"])
        frac = lam / lam.sum()
        np.testing.assert_allclose(line.get_ydata(), frac[frac > 0], rtol=1e-12)
        np.testing.assert_array_equal(line.get_xdata(), np.flatnonzero(frac > 0) + 1)
    cums = ax2.get_lines()
    assert len(cums) == 2
    # the collapsed run reaches 99% of its variance within its 2 directions, the healthy not
    assert cums[1].get_ydata()[1] > 0.99 > cums[0].get_ydata()[1]
    for line in cums:
        assert line.get_ydata()[-1] == pytest.approx(1.0)
    assert all(t.startswith(("healthy", "collapsed")) for t in _legend_texts(ax1))
    assert len(_legend_texts(ax2)) == 2


def test_layered_comparison_gets_a_metric_per_layer_figure(tmp_path: Path) -> None:
    path = tmp_path / "layers.h5"
    with h5py.File(path, "w") as f:
        for i in range(3):
            f.create_dataset(f"layer_{i}", data=_x(200, 8, seed=i))
    other = tmp_path / "other.h5"
    with h5py.File(other, "w") as f:
        for i in range(3):
            f.create_dataset(f"layer_{i}", data=_collapsed(200, 8, k=i + 1, seed=i))
    cmp = reprdiag.compare([path, other], metrics=["rankme", "vne_normalized"], device="cpu")
    assert list(cmp.inputs) == ["layer_0", "layer_1", "layer_2"]
    fig = compare_layers_figure(cmp)
    panels = {ax.get_title(): ax for ax in fig.axes if ax.get_visible()}
    assert set(panels) == {"rankme", "vne_normalized"}
    ax = panels["rankme"]
    assert [line.get_label() for line in ax.get_lines()] == ["layers.h5", "other.h5"]
    for line, j in zip(ax.get_lines(), (0, 1), strict=True):
        expected = [cmp.inputs[k][j].metrics["rankme"] for k in cmp.inputs]
        np.testing.assert_array_equal(line.get_ydata(), expected)
    assert [t.get_text() for t in ax.get_xticklabels()] == ["layer_0", "layer_1", "layer_2"]
    assert len(compare_figure(cmp).axes) == 6  # a spectrum row per layer
    written = cmp.save(tmp_path / "out")
    assert {p.name for p in written} >= {"compare.png", "compare-layers.png"}
    assert (tmp_path / "out" / "compare.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_layer_figure_still_labels_lines_by_metric() -> None:
    report = Report([_result("a[l0]", "l0", {"vne_normalized": 1.0}),
                     _result("a[l1]", "l1", {"vne_normalized": 2.0})])
    ax = next(ax for ax in layer_figure(report).axes if ax.get_visible())
    assert [line.get_label() for line in ax.get_lines()] == ["vne_normalized"]
    assert list(ax.get_lines()[0].get_ydata()) == [1.0, 2.0]


def test_comparison_holds_results_per_run() -> None:
    a = Report([_result("a", "k", {"vne": 2.0})])
    cmp = Comparison(runs=["A"], inputs={"k": a.inputs})
    assert "nothing to compare" in cmp.verdict()


def test_scale_dependent_metrics_move_with_scale_and_do_not_vote() -> None:
    """The metrics that do not vote are exactly those a rescaling moves; a rescaled copy of a
    run is neither better nor worse."""
    from reprdiag.results import SCALE_DEPENDENT, voting_direction

    rng = np.random.default_rng(3)
    x = rng.standard_normal((400, 16)) * np.geomspace(1.0, 0.1, 16) + 0.2
    names = [n for n, info in reprdiag.METRICS.items() if not info.needs]
    base = reprdiag.analyze(x, device="cpu").inputs[0].metrics
    scaled = reprdiag.analyze(7.0 * x, device="cpu").inputs[0].metrics
    moved = {n for n in names if abs(scaled[n] - base[n]) > 1e-6 * max(1.0, abs(base[n]))}
    assert moved == set(SCALE_DEPENDENT)
    assert all(voting_direction(n) == "neutral" for n in SCALE_DEPENDENT)
    cmp = reprdiag.compare([x, 7.0 * x], device="cpu")
    verdict = cmp.verdict()
    assert "better" not in verdict and "worse" not in verdict, verdict
    later = cmp.frame[cmp.frame["run"] == "run2"]
    assert set(later[later["delta_pct"].abs() > 1e-6]["change"]) == {"neutral"}
    assert set(later[later["metric"].isin(SCALE_DEPENDENT)]["change"]) == {"neutral"}


def test_match_suffix_pairs_keys_that_differ_by_a_prefix(tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    layers = [rng.standard_normal((300, 8)) for _ in range(2)]
    with h5py.File(tmp_path / "a.h5", "w") as f:
        for i, arr in enumerate(layers):
            f[f"hidden_states/layer_{i}"] = arr
    with h5py.File(tmp_path / "b.h5", "w") as f:
        for i, arr in enumerate(layers):
            f[f"layer_{i}"] = arr

    def cli(*extra: str) -> subprocess.CompletedProcess[str]:
        return run_main(["compare", "a.h5", "b.h5", "-m", "vne", "-f", "json", "-q", "--device",
                         "cpu", *extra], cwd=tmp_path)

    proc = cli()
    assert proc.returncode == 2 and "--match suffix" in proc.stderr
    assert len(proc.stderr.splitlines()) == 1
    proc = cli("--match", "suffix")
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert data["inputs"] == ["layer_0", "layer_1"]
    assert all(r["delta"] == 0 for r in data["rows"])
