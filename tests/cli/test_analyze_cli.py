"""``reprdiag analyze`` end to end: through typer's CliRunner, the console-script ``main()``
and (``python -m reprdiag``) a real subprocess."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from reprdiag.cli import app
from reprdiag.metrics import METRICS
from tests.helpers import PYTHON, SAMPLE, run_cli_env, run_main

HEALTHY = SAMPLE / "minilm.safetensors"
COLLAPSED = SAMPLE / "collapsed.safetensors"
LAYERS = SAMPLE / "minilm_layers.h5"
runner = CliRunner()


def run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([PYTHON, "-m", "reprdiag", *args], capture_output=True, text=True,
                          env=run_cli_env(), cwd=cwd, timeout=300)


def test_help_and_list_metrics() -> None:
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0 and "analyze" in result.output
    result = runner.invoke(app, ["analyze", "--help"])
    assert result.exit_code == 0 and "--metrics" in result.output
    result = runner.invoke(app, ["list-metrics"])
    assert result.exit_code == 0
    for name in METRICS:
        assert name in result.output


def test_json_output_matches_library(tmp_path: Path) -> None:
    import reprdiag

    result = runner.invoke(app, ["analyze", str(HEALTHY), "--format", "json", "--quiet"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    lib = reprdiag.analyze(HEALTHY)
    assert data["inputs"][0]["key"] == "embeddings"
    for name, value in lib.metrics.items():
        assert data["inputs"][0]["metrics"][name] == pytest.approx(value, rel=1e-12)


def test_metric_selection_and_csv() -> None:
    result = runner.invoke(app, ["analyze", str(HEALTHY), str(COLLAPSED), "-m", "vne,rankme",
                                 "--format", "csv"])
    assert result.exit_code == 0, result.output
    lines = result.stdout.strip().splitlines()
    assert lines[0] == "input,path,key,n,d,dtype,vne,rankme"
    assert len(lines) == 3


def test_hdf5_layers_give_one_row_each() -> None:
    result = runner.invoke(app, ["analyze", str(LAYERS), "--format", "json", "-m", "vne"])
    assert result.exit_code == 0, result.output
    keys = [r["key"] for r in json.loads(result.stdout)["inputs"]]
    assert keys == [f"hidden_states/layer_{i}" for i in range(7)]


def test_subprocess_out_folder(tmp_path: Path) -> None:
    out = tmp_path / "run"
    proc = run("analyze", str(HEALTHY), "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    assert "vne" in proc.stdout and "Traceback" not in proc.stderr
    names = {p.name for p in out.iterdir()}
    assert {"report.json", "metrics.csv", "spectrum.csv", "summary.md", "spectrum.png"} <= names
    assert not [n for n in names if n.endswith(".tmp")]
    report = json.loads((out / "report.json").read_text())
    entry = report["inputs"][0]
    assert (entry["n"], entry["d"], entry["dtype"]) == (2000, 384, "float32")
    assert set(entry["metrics"]) == {n for n, info in METRICS.items() if not info.needs}
    assert len(entry["spectra"]["covariance"]) == 384
    assert "eigvalsh" in entry["solver"]["covariance"]
    assert report["options"]["sample_size"] == 16384 and report["options"]["kappa"] == 10.0
    spectrum = pd.read_csv(out / "spectrum.csv")
    cov = spectrum[spectrum.spectrum == "covariance"]
    assert np.isclose(cov.cumulative.iloc[-1], 1.0)
    metrics = pd.read_csv(out / "metrics.csv")
    assert metrics.loc[0, "vne"] == pytest.approx(entry["metrics"]["vne"], rel=1e-12)


def test_markdown() -> None:
    proc = run_main(["analyze", str(COLLAPSED), "--format", "markdown", "-m", "effective_rank"])
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("| metric |")
    assert "effective_rank" in proc.stdout


def test_missing_file_is_one_line_exit_2() -> None:
    proc = run_main(["analyze", "no/such/file.safetensors"])
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "reprdiag: error: no/such/file.safetensors: no such file; check the path"]


def test_healthy_and_collapsed_sample_data_differ_as_expected() -> None:
    import reprdiag

    healthy = reprdiag.analyze(HEALTHY).metrics
    collapsed = reprdiag.analyze(COLLAPSED).metrics
    assert collapsed["effective_rank"] < 10 < 100 < healthy["effective_rank"]
    assert collapsed["vne"] < healthy["vne"]
    assert collapsed["avg_cosine"] > healthy["avg_cosine"]


def test_float32_products_warn_once_on_stderr_and_float64_does_not() -> None:
    """The collapsed sample's noise eigenvalues (λ₅/λ₄ ≈ 1.8e-7) are below the float32 floor:
    one warning line names the metrics that depend on them; the default (float64 here) is
    silent and report.json says why it chose float64."""
    forced = run_main(["analyze", str(COLLAPSED), "--precision", "float32", "-m", "rankme,vne",
                       "-f", "json"])
    assert forced.returncode == 0, forced.stderr
    lines = [ln for ln in forced.stderr.splitlines() if "error floor" in ln]
    assert len(lines) == 1 and lines[0].startswith("reprdiag: warning: ")
    assert "rankme in [" in lines[0] and "--precision float64" in lines[0]
    default = run_main(["analyze", str(COLLAPSED), "-m", "rankme,vne", "-f", "json"])
    assert default.returncode == 0 and "error floor" not in default.stderr
    precision = json.loads(default.stdout)["inputs"][0]["precision"]
    assert precision["work_dtype"] == "float64" and "costs little" in precision["reason"]
    assert json.loads(forced.stdout)["inputs"][0]["precision"]["sensitive"]["rankme"]
