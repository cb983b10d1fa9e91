"""``reprdiag analyze``."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from reprdiag.cli.core import (
    RichProgress,
    app,
    emit,
    handle_errors,
    stderr,
    stdout,
    warn_report,
    wrote_line,
)
from reprdiag.cli.extract import (
    BatchSizeOpt,
    DataKeyOpt,
    DataOpt,
    LayerOpt,
    LimitOpt,
    ListLayersOpt,
    ModelArgOpt,
    ModelOpt,
    WeightsOpt,
    model_run,
    print_layers,
)
from reprdiag.cli.gate import JunitOption, check_outputs, finish
from reprdiag.cli.list_metrics import print_metrics
from reprdiag.cli.options import (
    AnalysisOptions,
    Format,
    FormatOption,
    PlotFormat,
    PlotFormatOption,
    with_analysis_options,
)
from reprdiag.errors import EXIT_GATE_FAILED, UsageError

if TYPE_CHECKING:
    from reprdiag.results import Report


def split_csv(values: list[str] | None) -> list[str] | None:
    """``--metrics a,b --metrics c`` → ``['a', 'b', 'c']``."""
    if not values:
        return None
    return [v.strip() for item in values for v in item.split(",") if v.strip()]


def show(report: Report, fmt: Format) -> None:
    """Print a report to stdout in the chosen form."""
    from reprdiag.report.export import render
    from reprdiag.report.table import metric_tables

    if fmt is Format.table:
        for table in metric_tables(report, stdout.width):
            stdout.print(table)
    else:
        emit(render(report, fmt.value))


#: Files of a run folder named first in the closing line, in this order.
FIRST_FILES = ("report.json", "compare.json", "metrics.csv", "spectrum.csv", "compare.csv",
               "summary.md", "compare.md", "report.html")


def say_written(out: Path, fmt: Format) -> None:
    """The closing line: where ``--out`` wrote what (on stdout after a table, else stderr,
    so machine-readable stdout stays clean)."""
    names = sorted((p.name for p in out.iterdir() if p.is_file()),
                   key=lambda n: (FIRST_FILES.index(n) if n in FIRST_FILES else len(FIRST_FILES),
                                  n))
    console = stdout if fmt is Format.table else stderr
    console.print(wrote_line(out, names), markup=False, highlight=False, soft_wrap=True)


@app.command("analyze")
@handle_errors
@with_analysis_options
def analyze(
    files: Annotated[list[Path] | None, typer.Argument(help="Embedding files: safetensors, HDF5, "
                                                "npy, npz, pt/pth.", show_default=False)
                     ] = None,
    metrics: Annotated[list[str] | None, typer.Option("--metrics", "-m", metavar="NAMES",
                                                      help="Comma-separated "
                                               "metric names; default: all.")] = None,
    out: Annotated[Path | None, typer.Option("--out", "-o", metavar="DIR",
                                             help="Write report.json, CSVs, "
                                      "summary.md and plots to this folder.")] = None,
    fmt: FormatOption = Format.table,
    concat: Annotated[bool, typer.Option("--concat", help="Treat the files as row shards "
                                         "of one dataset.")] = False,
    plot_format: PlotFormatOption = PlotFormat.png,
    no_plots: Annotated[bool, typer.Option("--no-plots", help="Skip plots in --out.")
                        ] = False,
    list_metrics_flag: Annotated[bool, typer.Option("--list-metrics", help="List the "
                                                    "metrics and exit.")] = False,
    model: ModelOpt = None, weights: WeightsOpt = None, model_arg: ModelArgOpt = None,
    data: DataOpt = None, data_key: DataKeyOpt = None, layer: LayerOpt = None,
    list_layers_flag: ListLayersOpt = False, batch_size: BatchSizeOpt = 64,
    limit: LimitOpt = None,
    gate_config: Annotated[Path | None, typer.Option(
        "--gate", metavar="FILE", help="Then check the rules of this TOML config (as reprdiag gate "
        "--config) and exit 1 when one fails.")] = None,
    junit: JunitOption = None,
    analysis: AnalysisOptions = AnalysisOptions(),
) -> None:
    """Compute every diagnostic of each 2-D array in FILES (one table row each), or of each
    --layer of a --model run over --data."""
    if list_metrics_flag:
        print_metrics()
        return
    from reprdiag.distributed import is_main_process
    from reprdiag.gate import gate as run_gate
    from reprdiag.gate import load_config, needed_metrics, resolve_rules
    from reprdiag.models.extract import ModelSources
    from reprdiag.pipeline import FileSources, joined
    from reprdiag.pipeline import run as run_pipeline

    if junit is not None and gate_config is None:
        raise UsageError("--junit needs --gate CONFIG", hint="add --gate reprdiag.toml")
    check_outputs(out, junit)  # before any data is read
    config = load_config(gate_config) if gate_config is not None else None
    names = split_csv(metrics)
    if config is not None and names:  # the gate's metrics are computed too
        names = list(dict.fromkeys([*names, *needed_metrics(resolve_rules(config))]))
    a = analysis
    if config is not None and any(r.needs_se for r in resolve_rules(config)):
        a = a.with_settings(uncertainty=True)  # margin_se / max_se rules read standard errors
    if model is None and data is None and not files:
        raise UsageError("no input file given", hint="reprdiag analyze FILE [FILE ...]")
    if files and (model is not None or data is not None):
        raise UsageError("pass embedding FILES or --model/--data, not both")
    run = None if files else model_run(model, data, weights, model_arg, data_key, layer,
                                       batch_size, limit, a.settings.get("pool"), a.device)
    if run is not None and list_layers_flag:
        if is_main_process():  # under torchrun every rank would print the same list
            print_layers(run)
        return
    analysis_config = a.config(metrics=names, concat=concat)  # checked before any reading
    sources = FileSources(files, a.key) if run is None else ModelSources(run)
    progress = RichProgress(enabled=not a.quiet, unit="rows" if run is None else "batches")
    with joined(a.api_kwargs()) as options:  # torchrun: every rank runs this block alike
        report = run_pipeline(sources, analysis_config, device=a.device, progress=progress,
                              backend=a.backend, distributed=options["distributed"])
        label = ", ".join(f.name for f in files) if files else str(model)
        result = (None if config is None else
                  run_gate(report, config=config, label=label, **options))
    if not is_main_process():  # under torchrun, rank 0 alone prints and writes
        raise typer.Exit(0 if result is None or result.passed else EXIT_GATE_FAILED)
    warn_report(report)
    if out is not None:
        report.save(out, plots=not no_plots, plot_format=plot_format.value)
    show(report, fmt)
    if out is not None:
        say_written(out, fmt)
    if result is not None:
        finish(result, Format.table, junit, stdout if fmt is Format.table else stderr)
