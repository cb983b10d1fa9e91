"""Plots (matplotlib, headless): the spectrum figure of each input, and a per-input metric plot."""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from reprdiag.errors import UsageError
from reprdiag.metrics.rank import ALPHA_RANKS, power_law_fit
from reprdiag.report.export import PLOT_FORMATS, atomic_write, make_folder, slug, unique_slugs
from reprdiag.results import Comparison, InputResult, Report
from reprdiag.uncertainty import LEVEL, t_quantile

LAYER_METRICS = ("vne_normalized", "rankme", "effective_rank", "isoscore", "avg_cosine",
                 "std_normalized")


def normalized(values: list[float] | np.ndarray) -> np.ndarray:
    """Eigenvalues as fractions of their sum (unchanged when the sum is 0).

    >>> normalized([3.0, 1.0]).tolist()
    [0.75, 0.25]
    """
    lam = np.asarray(values, dtype=np.float64)
    return lam / lam.sum() if lam.sum() > 0 else lam


def plot_spectrum(ax: Axes, values: list[float] | np.ndarray, label: str, fmt: str = ".-",
                  **style: object) -> None:
    """Draw λ_k/Σλ against k on log-log axes (zero eigenvalues left out)."""
    frac = normalized(values)
    k = np.arange(1, frac.size + 1)
    pos = frac > 0
    ax.loglog(k[pos], frac[pos], fmt, label=label, **{"ms": 3, "lw": 1, **style})


def plot_cumulative(ax: Axes, values: list[float] | np.ndarray, label: str,
                    **style: object) -> np.ndarray:
    """Draw the cumulative explained variance Σ_{i≤k} λ_i/Σλ against k; return it."""
    cum = np.cumsum(normalized(values))
    ax.semilogx(np.arange(1, cum.size + 1), cum, "-", label=label, **{"lw": 1.5, **style})
    return cum


def style_spectrum_axes(ax1: Axes, ax2: Axes) -> None:
    """Labels, titles, legends and grids of the spectrum and cumulative-variance panels."""
    ax1.set_xlabel("rank k")
    ax1.set_ylabel("normalized eigenvalue")
    ax1.set_title("Eigenvalue spectrum")
    ax1.legend(fontsize=8, loc="lower left")
    ax2.set_ylim(0, 1.02)
    ax2.set_xlabel("number of components k")
    ax2.set_ylabel("fraction of variance")
    ax2.set_title("Cumulative explained variance")
    ax2.legend(fontsize=8, loc="lower right")
    for ax in (ax1, ax2):
        ax.grid(True, which="both", alpha=0.3)


def spectrum_figure(result: InputResult) -> Figure:
    """Left: normalized covariance eigenvalues λ_k/Σλ on log-log axes with the fitted α-ReQ
    power law; right: cumulative explained variance."""
    lam = np.asarray(result.spectra["covariance"], dtype=np.float64)
    frac = normalized(lam)
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.2), constrained_layout=True)
    pos = frac > 0
    plot_spectrum(ax1, lam, "λ_k / Σλ (covariance)")
    _jackknife_band(ax1, result, lam)
    eta = np.asarray(result.spectra.get("autocorrelation", []), dtype=np.float64)
    if eta.size and eta.sum() > 0:
        plot_spectrum(ax1, eta, "η_k (autocorrelation of x/‖x‖)", "-", alpha=0.6)
    ranks = ALPHA_RANKS if int(pos.sum()) >= ALPHA_RANKS[0] + 1 else (1, ALPHA_RANKS[1])
    alpha, r2 = power_law_fit(torch.from_numpy(lam), ranks)
    if math.isfinite(alpha):
        lo, hi = ranks[0], min(ranks[1], int(pos.sum()))
        ks = np.arange(lo, hi + 1)
        y = np.log(frac[lo - 1: hi])
        c = np.average(y + alpha * np.log(ks), weights=1.0 / ks)
        ax1.loglog(ks, np.exp(c) * ks**-alpha, "r--", lw=1.5,
                   label=f"power law α = {alpha:.3g} (R² = {r2:.3f}, ranks {lo}–{hi})")
    cum = plot_cumulative(ax2, lam, "cumulative explained variance")
    for level in (0.9, 0.99):
        idx = int(np.searchsorted(cum, level)) + 1
        if idx <= lam.size:
            ax2.axhline(level, color="gray", lw=0.6, ls=":")
            ax2.plot([idx], [cum[idx - 1]], "o", ms=4,
                     label=f"{level:.0%} of variance in {idx} of {lam.size} dims")
    style_spectrum_axes(ax1, ax2)
    fig.suptitle(f"{result.name}  (N = {result.n:,}, d = {result.d})", fontsize=10)
    return fig


def short_names(names: list[str]) -> list[str]:
    """Input names without their common prefix (cut at a separator), for axis labels.

    >>> short_names(["a.h5[hidden/layer_0]", "a.h5[hidden/layer_1]"])
    ['layer_0', 'layer_1']
    >>> short_names(["d/minilm.safetensors[embeddings]", "d/collapsed.safetensors[embeddings]"])
    ['minilm.safetensors[embeddings]', 'collapsed.safetensors[embeddings]']
    """
    if len(names) < 2:
        return [slug(n) for n in names]
    prefix = os.path.commonprefix(names)  # noqa: RUF071 (character-wise on purpose)
    cut = max(prefix.rfind(sep) for sep in "/[") + 1 if prefix else 0
    return [_unbracketed(n[cut:]) or n for n in names]


def _unbracketed(name: str) -> str:
    """A name cut inside its ``[key]`` loses the key's closing bracket; a whole one keeps it."""
    return name[:-1] if name.endswith("]") and "[" not in name else name


def _jackknife_band(ax: Axes, result: InputResult, lam: np.ndarray) -> None:
    """Shade the per-eigenvalue jackknife interval λ_k ± t·SE_k (over Σλ), when computed."""
    se = np.asarray(result.spectra_se.get("covariance", []), dtype=np.float64)
    if se.size != lam.size or lam.sum() <= 0:
        return
    method = result.uncertainty_method
    level = float(method.get("level", LEVEL))
    t = t_quantile(level, max(int(method.get("blocks", 20)) - 1, 1))
    k, total = np.arange(1, lam.size + 1), lam.sum()
    lo, hi = (lam - t * se) / total, (lam + t * se) / total
    pos = lam > 0
    # on log axes a band narrower than the line is invisible: say so rather than promise it
    rel = float(np.max((hi[pos] - lo[pos]) / (2 * lam[pos] / total))) if pos.any() else 0.0
    thin = "; within the line's width" if rel < 0.05 else ""
    ax.fill_between(k[pos], np.clip(lo[pos], lam[pos] / total * 1e-3, None), hi[pos],
                    alpha=0.35, lw=0.6, edgecolor="C0", zorder=1,
                    label=f"{level:.0%} jackknife band ({method.get('blocks', '?')} blocks"
                    f"{thin})")


def panel_grid(count: int, columns: int = 3) -> tuple[Figure, list[Axes]]:
    """A figure with ``count`` panels in rows of at most ``columns``; spare cells hidden."""
    cols = min(columns, max(1, count))
    rows = math.ceil(count / cols) or 1
    fig, axes = plt.subplots(rows, cols, figsize=(4 * cols, 3 * rows), squeeze=False,
                             constrained_layout=True)
    flat = list(axes.flat)
    for ax in flat[count:]:
        ax.set_visible(False)
    return fig, flat[:count]


#: A panel's note of which way is healthy, by the metric's direction.
HEALTHY = {"higher": "↑ higher is healthier", "lower": "↓ lower is healthier",
           "neutral": "no healthy direction"}


def one_model(results: list[InputResult]) -> bool:
    """Whether inputs are layers of one model: all from one file (its path, else the file part
    of the name ``FILE[KEY]``), or keys sharing a prefix
    (``hidden_states/layer_0``, ``hidden_states/layer_1``); then a line joins them.

    >>> from reprdiag.results import InputResult as R
    >>> one_model([R("a", 1, 1, "f", {}, {}, {}, path="m.h5", key=k) for k in "xy"])
    True
    >>> one_model([R("a", 1, 1, "f", {}, {}, {}, path=p, key="emb") for p in "ab"])
    False
    """
    paths = {r.path or (r.name.partition("[")[0] if "[" in r.name else None) for r in results}
    if len(paths) == 1 and None not in paths:
        return True
    prefixes = {r.key.rsplit("/", 1)[0] if r.key and "/" in r.key else None for r in results}
    return len(prefixes) == 1 and None not in prefixes


def metric_series_figure(series: dict[str, list[InputResult]], title: str,
                         metrics: tuple[str, ...] = LAYER_METRICS) -> Figure:
    """One panel per metric: its value across inputs, one series (run) per line when the
    inputs are layers of one model (:func:`one_model`), else grouped bars (unrelated files
    have no order a line could follow). Each panel's y label says which way is healthy.

    The x axis is the inputs of the first series, in order, under short labels; each series
    is labelled with its name (with the metric's name for the series named ``""``).
    """
    from reprdiag.metrics import METRICS
    from reprdiag.report.table import short_labels

    first = next(iter(series.values()))
    names = [m for m in metrics if any(m in r.metrics for rs in series.values() for r in rs)]
    fig, axes = panel_grid(len(names))
    labels = short_labels([r.name for r in first], longest=32)
    lines = one_model(first)
    x = np.arange(len(first))
    width = 0.8 / max(1, len(series))
    for ax, name in zip(axes, names, strict=False):
        for j, (label, results) in enumerate(series.items()):
            values = [r.metrics.get(name, math.nan) for r in results]
            if lines:
                ax.plot(x, values, "o-", label=label or name)
            else:
                ax.bar(x + (j - (len(series) - 1) / 2) * width, values, width,
                       label=label or name)
        direction = METRICS[name].direction if name in METRICS else "neutral"
        ax.set_title(name)
        ax.set_xlabel("layer" if lines else "input")
        ax.set_ylabel(f"{name}  ({HEALTHY.get(direction, '')})", fontsize=8)
        tilt = len(first) * max(map(len, labels)) > 36  # labels that would overlap
        ax.set_xticks(x, labels, rotation=30 if tilt else 0, ha="right" if tilt else "center",
                      fontsize=8)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(title, fontsize=10)
    return fig


def layer_figure(report: Report, metrics: tuple[str, ...] = LAYER_METRICS) -> Figure:
    """One panel per metric: its value across the report's inputs (layers), in order."""
    return metric_series_figure({"": report.inputs}, "Metrics per input", metrics)


def compare_figure(comparison: Comparison) -> Figure:
    """The runs' normalized covariance spectra overlaid on log-log axes (left) and their
    cumulative explained variance (right); one row of panels per matched input, one line per
    run, labelled with the run's name."""
    keys = list(comparison.inputs)
    fig, axes = plt.subplots(len(keys), 2, figsize=(11, 4.2 * len(keys)), squeeze=False,
                             constrained_layout=True)
    for (ax1, ax2), key in zip(axes, keys, strict=True):
        for label, result in zip(comparison.runs, comparison.inputs[key], strict=True):
            name = f"{label} (N = {result.n:,}, d = {result.d})"
            lam = result.spectra.get("covariance", [])
            plot_spectrum(ax1, lam, name)
            plot_cumulative(ax2, lam, name)
        style_spectrum_axes(ax1, ax2)
        if comparison.layered:
            ax1.set_title(f"{key}: eigenvalue spectrum")
            ax2.set_title(f"{key}: cumulative explained variance")
    fig.suptitle(f"Covariance spectra: {', '.join(comparison.runs)}", fontsize=10)
    return fig


def compare_layers_figure(comparison: Comparison,
                          metrics: tuple[str, ...] = LAYER_METRICS) -> Figure:
    """Each metric against the layer (matched input), one line per run."""
    series = {label: [comparison.inputs[k][j] for k in comparison.inputs]
              for j, label in enumerate(comparison.runs)}
    return metric_series_figure(series, "Metrics per layer", metrics)


def save_figure(fig: Figure, path: Path) -> None:
    fmt = path.suffix.lstrip(".").lower()
    atomic_write(path, lambda p: fig.savefig(p, format=fmt, dpi=120))
    plt.close(fig)


def save_plots(report: Report, out_dir: Path, plot_format: str = "png") -> list[Path]:
    """spectrum.png (one input) or spectrum-<input>.png each, plus layers.png for several."""
    written = []
    single = len(report.inputs) == 1
    slugs = unique_slugs([r.name for r in report.inputs])
    for result, stem in zip(report.inputs, slugs, strict=True):
        name = "spectrum" if single else f"spectrum-{stem}"
        path = out_dir / f"{name}.{plot_format}"
        save_figure(spectrum_figure(result), path)
        written.append(path)
    if not single:
        path = out_dir / f"layers.{plot_format}"
        save_figure(layer_figure(report), path)
        written.append(path)
    return written



def history_figure(frame: pd.DataFrame, metrics: Sequence[str]) -> Figure:
    """One panel per metric: its value against the training step (a monitor's history).

    Each panel holds one line whose data are exactly the CSV's ``step`` and metric columns
    (NaN values leave gaps).
    """
    fig, axes = panel_grid(len(metrics))
    steps = frame["step"].to_numpy(dtype=np.float64)
    for ax, name in zip(axes, metrics, strict=False):
        ax.plot(steps, frame[name].to_numpy(dtype=np.float64), ".-", ms=3, lw=1, label=name)
        ax.set_title(name)
        ax.set_xlabel("step")
        ax.set_ylabel(name)
        ax.grid(True, alpha=0.3)
    fig.suptitle("Metrics during training", fontsize=10)
    return fig


def save_history_plot(frame: pd.DataFrame, metrics: Sequence[str], path: Path) -> Path:
    """Write :func:`history_figure` to ``path`` (png, svg or pdf by its suffix), atomically."""
    fmt = path.suffix.lstrip(".").lower()
    if fmt not in PLOT_FORMATS:
        raise UsageError(f"cannot tell the plot format from {path.name!r}",
                         hint="end --out with .png, .svg or .pdf")
    make_folder(path.parent)
    save_figure(history_figure(frame, metrics), path)
    return path


def save_compare_plots(comparison: Comparison, out_dir: Path,
                       plot_format: str = "png") -> list[Path]:
    """compare.png (spectra), plus compare-layers.png when the runs hold several layers."""
    written = [out_dir / f"compare.{plot_format}"]
    save_figure(compare_figure(comparison), written[0])
    if comparison.layered:
        written.append(out_dir / f"compare-layers.{plot_format}")
        save_figure(compare_layers_figure(comparison), written[1])
    return written
