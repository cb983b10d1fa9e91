"""``reprdiag plot-history``: plot a SpectralMonitor CSV (metric against step)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from reprdiag.cli.analyze import split_csv
from reprdiag.cli.core import app, handle_errors, stdout


@app.command("plot-history")
@handle_errors
def plot_history(
    file: Annotated[Path, typer.Argument(help="History CSV written by SpectralMonitor.",
                                         show_default=False)],
    out: Annotated[Path | None, typer.Option("--out", "-o", metavar="IMAGE",
                                             help="Image to write (.png, .svg "
                                      "or .pdf); default: FILE with .png.")] = None,
    metrics: Annotated[list[str] | None, typer.Option("--metrics", "-m", metavar="NAMES",
                                                      help="Comma-separated "
                                               "columns to plot; default: every metric.")
                       ] = None,
) -> None:
    """Plot each metric of a training history against the step, one panel per metric."""
    from reprdiag.monitor import history_metrics, read_history
    from reprdiag.report.plots import save_history_plot

    frame = read_history(file)
    names = history_metrics(frame, split_csv(metrics))
    path = save_history_plot(frame, names, out if out is not None else file.with_suffix(".png"))
    stdout.print(f"wrote {path} ({len(names)} metrics, {len(frame)} steps)", highlight=False)
