"""``reprdiag compare`` end to end, through the console-script entry point."""

from __future__ import annotations

import io
import json
import subprocess
from pathlib import Path

import pandas as pd

from tests.helpers import SAMPLE, run_main

PNG = b"\x89PNG\r\n\x1a\n"


def _compare(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return run_main(["compare", *args, "--device", "cpu", "-q"], cwd=cwd)


def test_run_compared_with_itself_has_zero_deltas(tmp_path: Path, minilm_run: Path) -> None:
    proc = _compare(str(minilm_run), str(minilm_run), "-f", "json", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert data["runs"] == ["minilm", "minilm#2"]
    later = [r for r in data["rows"] if r["run"] == "minilm#2"]
    assert len(later) == 5
    assert all(r["delta"] == 0 and r["delta_pct"] == 0 and r["change"] == "same" for r in later)
    assert "identical" in data["verdict"]


def test_files_compared_with_table_plots_and_csv(tmp_path: Path, minilm_run: Path) -> None:
    proc = _compare(str(minilm_run), str(SAMPLE / "collapsed.safetensors"), "-m",
                    "rankme,avg_cosine,vne", "--out", "cmp", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    verdict = [line for line in lines if line.startswith("verdict: ")]
    assert verdict == [verdict[0]] and "collapsed.safetensors vs minilm: 3 worse" in verdict[0]
    assert "Δ collapsed.safetensors" in proc.stdout and "−98.0%" in proc.stdout
    out = tmp_path / "cmp"
    assert (out / "compare.png").read_bytes()[:8] == PNG
    frame = pd.read_csv(out / "compare.csv")
    ref = json.loads((minilm_run / "report.json").read_text())["inputs"][0]["metrics"]
    row = frame[(frame["metric"] == "rankme") & (frame["run"] == "collapsed.safetensors")]
    assert row["delta"].item() == row["value"].item() - ref["rankme"]
    assert list(frame["metric"].unique()) == ["rankme", "avg_cosine", "vne"]


def test_layered_files_compare_layer_by_layer(tmp_path: Path) -> None:
    layers = str(SAMPLE / "minilm_layers.h5")
    proc = _compare(layers, layers, "-k", "hidden_states/layer_0", "-k",
                    "hidden_states/layer_6", "-m", "rankme", "--out", "cmp", "-f", "csv",
                    cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    frame = pd.read_csv(io.StringIO(proc.stdout))
    assert list(frame["input"].unique()) == ["hidden_states/layer_0", "hidden_states/layer_6"]
    assert (frame["delta"] == 0).all()
    assert (tmp_path / "cmp" / "compare-layers.png").read_bytes()[:8] == PNG


def test_compare_errors_exit_2_with_one_line(tmp_path: Path, minilm_run: Path) -> None:
    proc = _compare(str(minilm_run), cwd=tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.splitlines() == [
        "reprdiag: error: compare needs at least two runs, got 1; reprdiag compare A B [C ...]"]
    proc = _compare(str(minilm_run), str(tmp_path / "nothing"), cwd=tmp_path)
    assert proc.returncode == 2 and len(proc.stderr.splitlines()) == 1
    assert proc.stderr.startswith("reprdiag: error: ")
