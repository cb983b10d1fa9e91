"""``reprdiag compare``: runs side by side, deltas against the first, overlaid spectra."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from reprdiag.cli.analyze import say_written, split_csv
from reprdiag.cli.core import app, emit, handle_errors, stdout, warn_results
from reprdiag.cli.gate import check_outputs
from reprdiag.cli.options import (
    AnalysisOptions,
    Format,
    FormatOption,
    PlotFormat,
    PlotFormatOption,
    with_analysis_options,
)
from reprdiag.defaults import NOISE_Z

if TYPE_CHECKING:
    from reprdiag.results import Comparison


def show(comparison: Comparison, fmt: Format) -> None:
    """Print a comparison to stdout in the chosen form (tables, then notes and verdict)."""
    from reprdiag.report.export import render
    from reprdiag.report.table import comparison_tables

    if fmt is not Format.table:
        emit(render(comparison, fmt.value))
    else:
        for table in comparison_tables(comparison, stdout.width):
            stdout.print(table)
        for note in comparison.notes:
            stdout.print(f"note: {note}", markup=False, soft_wrap=True)
        stdout.print(f"verdict: {comparison.verdict()}", markup=False, soft_wrap=True)


@app.command("compare")
@handle_errors
@with_analysis_options
def compare(
    runs: Annotated[list[Path], typer.Argument(help="Run folders (holding report.json) or "
                                               "embedding files; the first is the reference.",
                                               show_default=False)],
    metrics: Annotated[list[str] | None, typer.Option("--metrics", "-m", metavar="NAMES",
                                                      help="Comma-separated "
                                                      "metric names; default: all.")] = None,
    out: Annotated[Path | None, typer.Option("--out", "-o", metavar="DIR",
                                             help="Write compare.png (overlaid "
                                             "spectra), compare.csv/json/md to this folder.")
                   ] = None,
    fmt: FormatOption = Format.table,
    plot_format: PlotFormatOption = PlotFormat.png,
    no_plots: Annotated[bool, typer.Option("--no-plots", help="Skip plots in --out.")] = False,
    noise_z: Annotated[float, typer.Option("--noise-z", metavar="Z", help="With standard errors "
                                           "(--uncertainty): |z| below this is within "
                                           "noise.")] = NOISE_Z,
    match: Annotated[str, typer.Option(
        "--match", metavar="key|suffix", help="Pair inputs of runs by their full key, or by "
        "its last part (suffix: hidden_states/layer_3 pairs with layer_3).")] = "key",
    analysis: AnalysisOptions = AnalysisOptions(),
) -> None:
    """Compare runs A B [C ...]: each metric's value per run and its change against A."""
    from reprdiag.compare import compare as run_compare
    from reprdiag.distributed import is_main_process
    from reprdiag.report.export import save

    check_outputs(out)  # before any data is read
    comparison = run_compare(runs, metrics=split_csv(metrics), noise_z=noise_z, match=match,
                             **analysis.api_kwargs())
    if not is_main_process():  # under torchrun, rank 0 alone prints and writes
        return
    warn_results(r for results in comparison.inputs.values() for r in results)
    if out is not None:
        save(comparison, out, plots=not no_plots, plot_format=plot_format.value)
    show(comparison, fmt)
    if out is not None:
        say_written(out, fmt)
