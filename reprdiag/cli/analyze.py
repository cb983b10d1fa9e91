"""``reprdiag analyze`` and ``reprdiag list-metrics``."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

from reprdiag.api import analyze as run_analysis
from reprdiag.cli.app import RichProgress, app, emit, handle_errors, stdout
from reprdiag.cli.extract import (
    POOL_HELP,
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
from reprdiag.distributed import is_main_process
from reprdiag.errors import UsageError
from reprdiag.extract import analyze_model
from reprdiag.report.export import render
from reprdiag.report.model import Report
from reprdiag.report.table import metric_tables, metrics_list_table


class Format(str, Enum):
    table = "table"
    json = "json"
    csv = "csv"
    markdown = "markdown"


def split_csv(values: list[str] | None) -> list[str] | None:
    """``--metrics a,b --metrics c`` → ``['a', 'b', 'c']``."""
    if not values:
        return None
    return [v.strip() for item in values for v in item.split(",") if v.strip()]


def show(report: Report, fmt: Format) -> None:
    """Print a report to stdout in the chosen form."""
    if fmt is Format.table:
        for table in metric_tables(report, stdout.width):
            stdout.print(table)
    else:
        emit(render(report, fmt.value))


@app.command("list-metrics")
@handle_errors
def list_metrics() -> None:
    """List every metric with its definition, range, direction and citation."""
    stdout.print(metrics_list_table())


@app.command("analyze")
@handle_errors
def analyze(
    files: Annotated[list[Path] | None, typer.Argument(help="Embedding files: safetensors, HDF5, "
                                                "npy, npz, pt/pth.", show_default=False)
                     ] = None,
    key: Annotated[list[str] | None, typer.Option("--key", "-k", help="Tensor/dataset to analyze "
                                           "(repeatable); default: every 2-D array.")] = None,
    metrics: Annotated[list[str] | None, typer.Option("--metrics", "-m", help="Comma-separated "
                                               "metric names; default: all.")] = None,
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Write report.json, CSVs, "
                                      "summary.md and plots to this folder.")] = None,
    fmt: Annotated[Format, typer.Option("--format", "-f", help="Form of stdout.")
                   ] = Format.table,
    concat: Annotated[bool, typer.Option("--concat", help="Treat the files as row shards "
                                         "of one dataset.")] = False,
    pool: Annotated[str | None, typer.Option("--pool", help=POOL_HELP)] = None,
    device: Annotated[str, typer.Option("--device", help="auto|cpu|cuda|cuda:N|mps.")
                      ] = "auto",
    precision: Annotated[str, typer.Option("--precision", help="auto (fp32 products for "
                                           "fp32/16 data, fp64 for fp64)|float32|float64.")
                         ] = "auto",
    chunk_size: Annotated[int | None, typer.Option("--chunk-size", help="Rows per chunk "
                                            "(default: ~64 MiB).")] = None,
    sample_size: Annotated[int, typer.Option("--sample-size", help="Rows sampled for "
                                             "pairwise metrics.")] = 16384,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the row sample.")] = 0,
    kappa: Annotated[float, typer.Option("--kappa", help="vMF concentration κ of "
                                         "er_entropy.")] = 10.0,
    er_estimator: Annotated[str, typer.Option("--er-estimator", help="plugin|joe.")
                            ] = "plugin",
    er_compat: Annotated[str, typer.Option("--er-compat", help="exact|reference (the "
                                           "official code's float arithmetic).")] = "exact",
    nan: Annotated[str, typer.Option("--nan", help="error|drop rows holding NaN/Inf.")
                   ] = "error",
    plot_format: Annotated[str, typer.Option("--plot-format", help="png|svg|pdf.")] = "png",
    no_plots: Annotated[bool, typer.Option("--no-plots", help="Skip plots in --out.")
                        ] = False,
    backend: Annotated[str, typer.Option("--backend", help="Under torchrun: auto (NCCL when "
                                         "every rank has a GPU, else gloo)|nccl|gloo.")
                       ] = "auto",
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
    list_metrics_flag: Annotated[bool, typer.Option("--list-metrics", help="List the "
                                                    "metrics and exit.")] = False,
    model: ModelOpt = None, weights: WeightsOpt = None, model_arg: ModelArgOpt = None,
    data: DataOpt = None, data_key: DataKeyOpt = None, layer: LayerOpt = None,
    list_layers_flag: ListLayersOpt = False, batch_size: BatchSizeOpt = 64,
    limit: LimitOpt = None,
) -> None:
    """Compute every diagnostic of each 2-D array in FILES (one table row each), or of each
    --layer of a --model run over --data."""
    if list_metrics_flag:
        stdout.print(metrics_list_table())
        return
    if model is not None or data is not None:
        if files:
            raise UsageError("pass embedding FILES or --model/--data, not both")
        run = model_run(model, data, weights, model_arg, data_key, layer, batch_size, limit,
                        pool, device)
        if list_layers_flag:
            print_layers(run)
            return
        report = analyze_model(
            run, metrics=split_csv(metrics), precision=precision, sample_size=sample_size,
            seed=seed, kappa=kappa, er_estimator=er_estimator, er_compat=er_compat, nan=nan,
            progress=RichProgress(enabled=not quiet, unit="batches"))
    elif not files:
        raise UsageError("no input file given", hint="reprdiag analyze FILE [FILE ...]")
    else:
        report = run_analysis(
            files, keys=key or None, metrics=split_csv(metrics), concat=concat, pool=pool,
            device=device, precision=precision, chunk_rows=chunk_size, sample_size=sample_size,
            seed=seed, kappa=kappa, er_estimator=er_estimator, er_compat=er_compat, nan=nan,
            progress=RichProgress(enabled=not quiet), backend=backend)
    if not is_main_process():  # under torchrun, rank 0 alone prints and writes
        return
    if out is not None:
        report.save(out, plots=not no_plots, plot_format=plot_format)
    show(report, fmt)
