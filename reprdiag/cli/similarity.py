"""``reprdiag similarity``: linear CKA between layers, models or runs (row-aligned inputs)."""

from __future__ import annotations

import json
from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

from reprdiag.cli.core import app, emit, handle_errors, stdout


class SimilarityFormat(str, Enum):
    """The form of stdout."""

    table = "table"
    json = "json"
    csv = "csv"


@app.command("similarity")
@handle_errors
def similarity(
    inputs: Annotated[list[Path], typer.Argument(
        help="Embedding files with the same rows in the same order (one file of per-layer "
        "arrays gives the layer × layer matrix).", show_default=False, metavar="FILE...")],
    key: Annotated[list[str] | None, typer.Option(
        "--key", "-k", help="Array to take from every file (repeat for several); default: "
        "every 2-D array.", metavar="KEY")] = None,
    debiased: Annotated[bool, typer.Option(
        "--debiased", help="Show the debiased CKA (unbiased HSIC) in the table and heatmap; "
        "read it when N is not much larger than d.")] = False,
    out: Annotated[Path | None, typer.Option(
        "--out", "-o", help="Write similarity.json, similarity.csv and cka.png to this folder.",
        metavar="DIR")] = None,
    fmt: Annotated[SimilarityFormat, typer.Option("--format", "-f", help="Form of stdout.")
                   ] = SimilarityFormat.table,
    precision: Annotated[str, typer.Option(
        "--precision", help="Products in float64 (exact) or float32 (2× faster, summed in "
        "float64).", metavar="float64|float32")] = "float64",
    device: Annotated[str, typer.Option("--device", help="auto, cpu, cuda, cuda:N or mps.",
                                        metavar="DEVICE")] = "auto",
) -> None:
    """Linear CKA (Kornblith et al. 2019) between every pair of inputs, in one pass."""
    from reprdiag.report.similarity import similarity_csv, similarity_tables
    from reprdiag.similarity import similarity as run_similarity

    if out is not None:
        from reprdiag.report.folder import check_out_folder

        check_out_folder(out)  # before any data is read
    result = run_similarity(inputs, keys=key, precision=precision, device=device)
    if out is not None:
        from reprdiag.report.similarity import save_similarity

        save_similarity(result, out, debiased=debiased)
    if fmt is SimilarityFormat.json:
        emit(json.dumps(result.to_dict(), indent=2, ensure_ascii=False))
    elif fmt is SimilarityFormat.csv:
        emit(similarity_csv(result))
    else:
        for table in similarity_tables(result, debiased=debiased):
            stdout.print(table)
