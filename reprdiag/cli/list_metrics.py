"""``reprdiag list-metrics``: every metric with its definition, range, direction and citation,
read from the catalog (no metric, and no torch, is imported)."""

from __future__ import annotations

import json
from enum import Enum
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from reprdiag.catalog import read_catalog
from reprdiag.cli.core import app, emit, handle_errors, stdout

#: The arrow of each direction, as every table shows it.
ARROWS = {"higher": "↑", "lower": "↓", "neutral": "·"}


class ListFormat(str, Enum):
    """The form of ``list-metrics``' stdout."""

    table = "table"
    json = "json"


def metrics_table(entries: list[dict[str, object]]) -> Table:
    """Each metric with its definition, range, direction and citation."""
    table = Table(title="reprdiag metrics", show_lines=True)
    table.add_column("name", no_wrap=True, style="bold")
    for col in ("definition", "range", "direction", "citation"):
        table.add_column(col, overflow="fold")
    for m in entries:
        direction = str(m["direction"])
        table.add_row(str(m["name"]), escape(str(m["summary"])), escape(str(m["range"])),
                      f"{ARROWS.get(direction, '')} {direction}", escape(str(m["citation"])))
    return table


def print_metrics(fmt: ListFormat = ListFormat.table) -> None:
    """Print the catalog as a table, or as a JSON list of entries."""
    entries = read_catalog()
    if fmt is ListFormat.json:
        emit(json.dumps(entries, indent=2, ensure_ascii=False))
    else:
        stdout.print(metrics_table(entries))


@app.command("list-metrics")
@handle_errors
def list_metrics(
    fmt: Annotated[ListFormat, typer.Option("--format", "-f", help="Form of stdout; json: a "
                                            "list of {name, summary, range, direction, "
                                            "citation, ...}.")] = ListFormat.table,
) -> None:
    """List every metric with its definition, range, direction and citation."""
    print_metrics(fmt)
