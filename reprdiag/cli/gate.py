"""``reprdiag gate``: pass or fail a run against rules (exit 0 / 1), for CI."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.markup import escape

from reprdiag.cli.core import app, emit, handle_errors, stdout, warn_results
from reprdiag.cli.options import AnalysisOptions, Format, FormatOption, with_analysis_options
from reprdiag.errors import EXIT_GATE_FAILED

if TYPE_CHECKING:
    from reprdiag.gate import GateConfig
    from reprdiag.results import GateResult


def check_outputs(out: Path | None = None, junit: Path | None = None) -> None:
    """Refuse an ``--out`` folder or ``--junit`` file that cannot be written, before any
    data is read (a long run must not end in "cannot write")."""
    from reprdiag.report.folder import check_out_folder, check_writable_file

    if out is not None:
        check_out_folder(out)
    if junit is not None:
        check_writable_file(junit, "--junit")


def read_config(path: Path | None) -> GateConfig | None:
    """``--config PATH``, else ``reprdiag.toml`` or ``pyproject.toml`` here, else none."""
    from reprdiag.gate import find_config, load_config

    found = path if path is not None else find_config(Path.cwd())
    return load_config(found) if found is not None else None


def append_step_summary(result: GateResult) -> None:
    """Append the markdown table to ``$GITHUB_STEP_SUMMARY`` when GitHub Actions sets it."""
    from reprdiag.report.export import render

    target = os.environ.get("GITHUB_STEP_SUMMARY")
    if target:
        with open(target, "a", encoding="utf-8") as fh:
            fh.write(render(result, "markdown") + "\n")


def finish(result: GateResult, fmt: Format = Format.table, junit: Path | None = None,
           console: Console = stdout) -> None:
    """Show the checks (tables on ``console``), write the JUnit XML and the step summary;
    exit 1 when a rule failed."""
    from reprdiag.report.export import render, write_junit
    from reprdiag.report.table import gate_table

    if fmt is not Format.table:
        emit(render(result, fmt.value))
    else:
        console.print(gate_table(result))
        for note in result.notes:
            console.print(f"note: {note}", markup=False, soft_wrap=True)
        console.print(f"gate: {result.summary()}", markup=False, soft_wrap=True)
    if junit is not None:
        write_junit(result, junit)
    append_step_summary(result)
    if not result.passed:
        sys.stderr.write(f"reprdiag: gate failed: {result.detail()}\n")
        raise typer.Exit(EXIT_GATE_FAILED)


ConfigOption = Annotated[Path | None, typer.Option(
    "--config", "-c", metavar="FILE", help=escape(
        "TOML file with a [gate] (or [tool.reprdiag.gate]) table; default: ./reprdiag.toml, "
        "else [tool.reprdiag.gate] in ./pyproject.toml."))]
JunitOption = Annotated[Path | None, typer.Option(
    "--junit", metavar="FILE", help="Write JUnit XML (one testcase per rule) to this file.")]


@app.command("gate")
@handle_errors
@with_analysis_options
def gate(
    run: Annotated[Path, typer.Argument(help="A run folder (holding report.json) or an "
                                        "embedding file.", show_default=False)],
    config: ConfigOption = None,
    baseline: Annotated[Path | None, typer.Option(
        "--baseline", "-b", metavar="RUN", help="Run folder or embedding file that relative rules "
        "(max_drop, max_rise) compare against.")] = None,
    fail_if: Annotated[list[str] | None, typer.Option(
        "--fail-if", metavar="EXPR",
            help='Fail when this holds, e.g. "rankme < 64" (repeatable).')] = None,
    junit: JunitOption = None,
    fmt: FormatOption = Format.table,
    analysis: AnalysisOptions = AnalysisOptions(),
) -> None:
    """Exit 0 when every rule holds, 1 when one fails, 2 on bad input or a bad config.

    Without rules (no config, no --fail-if) the "collapse" preset applies.
    """
    from reprdiag.distributed import is_main_process
    from reprdiag.gate import gate as run_gate

    check_outputs(junit=junit)
    result = run_gate(run, rules=fail_if or (), config=read_config(config), baseline=baseline,
                      **analysis.api_kwargs())
    if not is_main_process():  # under torchrun, rank 0 alone prints; every rank exits alike
        raise typer.Exit(0 if result.passed else EXIT_GATE_FAILED)
    warn_results(result.inputs)
    finish(result, fmt, junit)
