"""Progress and feedback (issue 18 item 3): a status per phase, plain lines when stderr is not
a terminal, a bar that fits 80 columns, and the closing line of ``--out``."""

from __future__ import annotations

import importlib
import io
import json
import subprocess
from pathlib import Path

import pytest
from rich.console import Console

from tests.helpers import SAMPLE, run_main

HEALTHY = str(SAMPLE / "minilm.safetensors")
app_module = importlib.import_module("reprdiag.cli.core")


def run(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None
        ) -> subprocess.CompletedProcess[str]:
    """The CLI in this process: stderr is a string buffer, not a terminal, as when piped."""
    return run_main([*args, "--device", "cpu"], cwd=cwd, env=env)


def test_plain_lines_name_each_phase_when_stderr_is_not_a_terminal() -> None:
    proc = run("analyze", HEALTHY, "--uncertainty", "--blocks", "5", "-f", "json",
               env={"REPRDIAG_PROGRESS_S": "0.05"})
    assert proc.returncode == 0, proc.stderr
    json.loads(proc.stdout)  # progress never reaches stdout
    lines = proc.stderr.splitlines()
    assert lines and all(line.startswith("reprdiag: [") for line in lines), lines
    assert any("minilm.safetensors[embeddings] · jackknife: " in line and " of 5 blocks (" in line
               for line in lines)
    phases = {p for p in ("· spectra …", "· metrics …", "rows (") if any(p in x for x in lines)}
    assert phases, lines  # at least one of the uncounted phases or the read showed up


def test_quiet_and_short_runs_print_no_progress() -> None:
    proc = run("analyze", HEALTHY, "-m", "vne", "-q", "-f", "json",
               env={"REPRDIAG_PROGRESS_S": "0.01"})
    assert proc.returncode == 0 and proc.stderr == ""
    proc = run("analyze", HEALTHY, "-m", "vne", "-f", "json")  # default: a line per 10 s
    assert proc.returncode == 0 and proc.stderr == ""


def test_out_ends_with_where_it_wrote_what(tmp_path: Path) -> None:
    proc = run("analyze", HEALTHY, "-m", "vne", "-q", "--out", "A", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    wrote = "report.json, metrics.csv, spectrum.csv, summary.md, report.html and 1 plot (png)"
    assert proc.stdout.splitlines()[-1] == f"wrote A/: {wrote}"
    proc = run("analyze", HEALTHY, "-m", "vne", "-q", "--out", "B", "-f", "json", cwd=tmp_path)
    assert json.loads(proc.stdout)["inputs"][0]["metrics"]["vne"] > 0
    assert proc.stderr.splitlines() == [f"wrote B/: {wrote}"]


def test_bar_fits_80_columns_with_its_total_and_rate(monkeypatch: pytest.MonkeyPatch) -> None:
    term = Console(file=io.StringIO(), width=80, force_terminal=True)
    monkeypatch.setattr(app_module, "stderr", term)
    progress = app_module.RichProgress(enabled=True)
    progress.DELAY_S = 0.0
    progress.start("some/long/folder/of/embeddings/a_rather_long_file_name.safetensors"
                   "[hidden_states/layer_11]", 2_000_000)
    progress.advance(1_000)
    progress.advance(500_000)
    bar = progress._bar
    assert bar is not None
    record = Console(width=80, record=True, file=io.StringIO())
    record.print(bar.make_tasks_table(bar.tasks))
    progress.finish()
    lines = [x for x in record.export_text().splitlines() if x.strip()]
    assert len(lines) == 1 and len(lines[0]) <= 80, lines
    assert "501000/2000000 rows" in lines[0] and "rows/s" in lines[0]
    assert "…" in lines[0] and "some/long" not in lines[0]
