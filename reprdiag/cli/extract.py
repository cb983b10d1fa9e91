"""``reprdiag extract`` and the ``--model/--data/--layer`` options that ``analyze`` shares."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape
from rich.table import Table

from reprdiag.cli.core import RichProgress, app, handle_errors, stdout
from reprdiag.errors import UsageError

if TYPE_CHECKING:
    from reprdiag.models.extract import ModelRun

ModelOpt = Annotated[str | None, typer.Option(
    "--model", metavar="SPEC",
        help="Model: a torch.export .pt2, a TorchScript file, package.module:factory "
    "(imports and trusts that module) or hf:FOLDER.", show_default=False)]
WeightsOpt = Annotated[str | None, typer.Option(
    "--weights", metavar="FILE", help="Weights for a factory: safetensors or a .pt state dict "
    "(weights_only).", show_default=False)]
ModelArgOpt = Annotated[list[str] | None, typer.Option(
    "--model-arg", metavar="KEY=VALUE",
        help="key=value passed to the factory (repeatable).", show_default=False)]
DataOpt = Annotated[str | None, typer.Option(
    "--data", metavar="DATA",
        help="Inputs: a tensor file, a folder of them, package.module:function, or a "
    "text file (hf:).", show_default=False)]
DataKeyOpt = Annotated[str | None, typer.Option(
    "--data-key", metavar="KEY",
        help="Array of the data file holding the inputs.", show_default=False)]
LayerOpt = Annotated[list[str] | None, typer.Option(
    "--layer", "-l", metavar="NAME",
        help="Module name as named_modules() spells it (repeatable); default: the "
    "model output (hf: every hidden.N).", show_default=False)]
ListLayersOpt = Annotated[bool, typer.Option(
    "--list-layers", help="Print the model's layers with output shapes on one batch.")]
BatchSizeOpt = Annotated[int, typer.Option("--batch-size", metavar="N", help="Examples per batch.")]
LimitOpt = Annotated[int | None, typer.Option(
    "--limit", metavar="N", help="Use only the first N examples.", show_default=False)]
POOL_HELP = ("Reduce outputs of >2 axes: mean|first|flatten|spatial (3-D default: mean; "
             "spatial: N×C×H×W → N×C).")


def model_run(model: str | None, data: str | None, weights: str | None,
              model_arg: list[str] | None, data_key: str | None, layer: list[str] | None,
              batch_size: int, limit: int | None, pool: str | None, device: str) -> ModelRun:
    """The library's :class:`ModelRun` from command-line options (both --model and --data)."""
    from reprdiag.models.extract import ModelRun
    from reprdiag.models.load import parse_model_args

    if model is None or data is None:
        raise UsageError(f"{'--model' if model else '--data'} needs "
                         f"{'--data' if model else '--model'}",
                         hint="pass --model SPEC --data DATA")
    return ModelRun(model, data, weights, parse_model_args(model_arg), data_key,
                    tuple(layer or ()), batch_size, limit, pool, device)


def print_layers(run: ModelRun) -> None:
    """``--list-layers``: each layer with its module type and output shape on one batch."""
    from reprdiag.models.extract import list_layers

    table = Table(title=escape(f"layers of {run.model}"),
                  caption="output shapes from the first batch; — : did not produce one tensor")
    for col in ("layer", "type", "output shape"):
        table.add_column(col)
    for name, kind, shape in list_layers(run):
        table.add_row(escape(name), escape(kind), "—" if shape is None else
                      " × ".join(str(s) for s in shape))
    stdout.print(table)


@app.command("extract")
@handle_errors
def extract_command(
    model: ModelOpt = None,
    data: DataOpt = None,
    out: Annotated[Path | None, typer.Option(
        "--out", "-o", metavar="FILE",
            help="Output file: .safetensors or .h5 (one N×d tensor per layer).",
        show_default=False)] = None,
    layer: LayerOpt = None,
    weights: WeightsOpt = None,
    model_arg: ModelArgOpt = None,
    data_key: DataKeyOpt = None,
    batch_size: BatchSizeOpt = 64,
    limit: LimitOpt = None,
    pool: Annotated[str | None, typer.Option("--pool", help=POOL_HELP, metavar="MODE")] = None,
    device: Annotated[str, typer.Option("--device", help="auto|cpu|cuda|cuda:N|mps.",
                                        metavar="DEVICE")
                      ] = "auto",
    list_layers_flag: ListLayersOpt = False,
    backend: Annotated[str, typer.Option(
        "--backend", metavar="auto|nccl|gloo", help="Under torchrun: auto is NCCL when every "
        "rank has a GPU, else gloo.")
                       ] = "auto",
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar or summary.")
                     ] = False,
) -> None:
    """Run a model over a dataset and save the rows of each named layer to one file (under
    torchrun: one shard per rank, OUT_STEM-RRRRR-of-WWWWW.SUFFIX)."""
    from reprdiag.device import resolve_device
    from reprdiag.distributed import is_main_process, session
    from reprdiag.models.extract import extract, shard_path
    from reprdiag.report.folder import check_writable_file

    if out is not None and not list_layers_flag:
        check_writable_file(out, "--out")  # before the model runs
    run = model_run(model, data, weights, model_arg, data_key, layer, batch_size, limit, pool,
                    device)
    if list_layers_flag:
        if is_main_process():
            print_layers(run)
        return
    if out is None:
        raise UsageError("no output file given", hint="pass -o emb.safetensors (or .h5)")
    with session(resolve_device(run.device), backend) as ctx:
        shapes = extract(run, out, progress=RichProgress(enabled=not quiet, unit="batches"),
                         distributed=ctx if ctx is not None else False)
        world = ctx.world_size if ctx is not None else 1
    if not quiet and is_main_process():
        first = shard_path(out, 0, world)
        target = out if world == 1 else first.with_name(first.name.replace("00000-of", "*-of"))
        table = Table()
        for col in ("layer", "N × d", "dtype"):
            table.add_column(col)
        for name, (n, d, dtype) in shapes.items():
            table.add_row(escape(name), f"{n:,} × {d}", dtype)
        stdout.print(f"wrote {target}", markup=False, soft_wrap=True)  # a path: never cut
        stdout.print(table)
