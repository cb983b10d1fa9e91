"""Rendering a :class:`~reprdiag.similarity.Similarity`: table, CSV and the CKA heatmap."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from rich.console import RenderableType
from rich.markup import escape
from rich.table import Table

from reprdiag.report.folder import write_run_folder
from reprdiag.report.plots import save_figure, short_names
from reprdiag.report.table import legend_lines
from reprdiag.similarity import Similarity


def _cell(value: float) -> str:
    return "—" if np.isnan(value) else f"{value:.3f}"


def similarity_frame(result: Similarity, debiased: bool = False) -> pd.DataFrame:
    """The CKA matrix as a DataFrame indexed and labelled by input (``FILE[KEY]``)."""
    values = result.cka_debiased if debiased else result.cka_linear
    return pd.DataFrame(values, index=result.labels, columns=result.labels)


def similarity_csv(result: Similarity) -> str:
    """Long form, one row per pair: ``a,b,cka_linear,cka_debiased``."""
    rows = [(a, b, result.cka_linear[i, j], result.cka_debiased[i, j])
            for i, a in enumerate(result.labels) for j, b in enumerate(result.labels)]
    buffer = io.StringIO()
    pd.DataFrame(rows, columns=["a", "b", "cka_linear", "cka_debiased"]).to_csv(
        buffer, index=False, float_format="%.10g")
    return buffer.getvalue()


def similarity_tables(result: Similarity, debiased: bool = False) -> list[RenderableType]:
    """The CKA matrix under ``#i`` column labels with their legend below (one line per input,
    so a narrow terminal never breaks an entry), then, for two runs with the same keys, one row
    per key across the runs."""
    values = result.cka_debiased if debiased else result.cka_linear
    short = short_names(result.labels)
    names = [f"#{i + 1}" for i in range(len(short))]
    kind = "debiased linear CKA" if debiased else "linear CKA"
    matrix = Table(title=f"{kind} · N={result.n:,} · {result.precision}")
    matrix.add_column("", style="bold")
    for n in names:
        matrix.add_column(n, justify="right")
    for n, row in zip(names, values, strict=True):
        matrix.add_row(n, *(_cell(v) for v in row))
    tables: list[RenderableType] = [matrix, legend_lines(names, short)]
    runs = result.across_runs()
    if runs:
        files = list(dict.fromkeys(result.files))
        per_key = Table(title="CKA per key")
        per_key.add_column("key", style="bold")
        per_key.add_column("CKA", justify="right")
        per_key.add_column("debiased", justify="right")
        for key, (biased, unbiased) in runs.items():
            per_key.add_row(escape(key), _cell(biased), _cell(unbiased))
        tables += [per_key, legend_lines(["run 1", "run 2"], files[:2])]
    return tables


def similarity_figure(result: Similarity, debiased: bool = False) -> Figure:
    """The CKA heatmap of Kornblith et al. (inputs × inputs, 0 to 1), values written in cells
    up to 16 inputs."""
    values = result.cka_debiased if debiased else result.cka_linear
    labels = short_names(result.labels)
    size = 2.5 + 0.45 * len(labels)
    fig = Figure(figsize=(size + 1.2, size))
    ax = fig.add_subplot()
    image = ax.imshow(np.clip(values, 0, 1), vmin=0, vmax=1, cmap="magma", origin="lower")
    ax.set_xticks(range(len(labels)), labels, rotation=60, ha="right", fontsize=8)
    ax.set_yticks(range(len(labels)), labels, fontsize=8)
    if len(labels) <= 16:
        for (i, j), v in np.ndenumerate(values):
            ax.text(j, i, _cell(v), ha="center", va="center", fontsize=7,
                    color="black" if v > 0.6 else "white")
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    ax.set_title(f"{'debiased ' if debiased else ''}linear CKA (N = {result.n:,})", fontsize=10)
    fig.tight_layout()
    return fig


def save_similarity(result: Similarity, out_dir: Path, debiased: bool = False) -> list[Path]:
    """Make ``out_dir`` hold ``similarity.json``, ``similarity.csv`` and ``cka.png``, swapped
    in whole (:func:`reprdiag.report.folder.write_run_folder`)."""
    names = ["similarity.json", "similarity.csv", "cka.png"]

    def write(folder: Path) -> None:
        (folder / names[0]).write_text(json.dumps(result.to_dict(), indent=2,
                                                  ensure_ascii=False) + "\n", encoding="utf-8")
        (folder / names[1]).write_text(similarity_csv(result), encoding="utf-8")
        save_figure(similarity_figure(result, debiased), folder / names[2])

    write_run_folder(Path(out_dir), write)
    return [Path(out_dir) / name for name in names]
