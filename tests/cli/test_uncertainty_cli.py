"""``reprdiag analyze --uncertainty`` end to end, through the console-script entry point."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from reprdiag.metrics import METRICS
from reprdiag.stats.blocked import BUDGET_ENV, moment_bytes
from tests.helpers import run_main

CONTINUOUS = {m for m, info in METRICS.items() if not info.discrete and not info.needs}


@pytest.fixture(scope="module")
def emb(tmp_path_factory: pytest.TempPathFactory) -> Path:
    rng = np.random.default_rng(7)
    path = tmp_path_factory.mktemp("u") / "emb.npy"
    np.save(path, (rng.standard_normal((600, 16)) * np.arange(1, 17) ** -0.5).astype("f4"))
    return path


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return run_main(list(args), env=env)


def test_uncertainty_out_folder_and_json(emb: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    proc = run("analyze", str(emb), "--uncertainty", "--blocks", "8", "--out", str(out),
               "--format", "json")
    assert proc.returncode == 0, proc.stderr
    entry = json.loads(proc.stdout)["inputs"][0]
    assert set(entry["uncertainty"]) == CONTINUOUS
    assert entry["uncertainty_method"]["method"] == "jackknife"
    assert entry["uncertainty_method"]["blocks"] == 8
    for name, est in entry["uncertainty"].items():
        value = entry["metrics"][name]
        assert est["se"] >= 0 and est["ci_low"] <= value <= est["ci_high"], name
    saved = json.loads((out / "report.json").read_text())["inputs"][0]
    assert saved["uncertainty"] == entry["uncertainty"]
    csv = pd.read_csv(out / "metrics.csv")
    assert csv.loc[0, "vne_se"] == pytest.approx(entry["uncertainty"]["vne"]["se"])
    assert (out / "spectrum.png").stat().st_size > 10_000


def test_table_shows_plus_minus(emb: Path) -> None:
    proc = run("analyze", str(emb), "--uncertainty", "--blocks", "5", "-m", "vne,rankme")
    assert proc.returncode == 0, proc.stderr
    assert "value ± SE" in proc.stdout and proc.stdout.count("±") >= 3


def test_too_few_blocks_is_usage_error(emb: Path) -> None:
    proc = run("analyze", str(emb), "--uncertainty", "--blocks", "4")
    assert proc.returncode == 2
    assert proc.stderr.startswith("reprdiag: error:") and proc.stderr.count("\n") == 1
    assert "--blocks must be at least 5" in proc.stderr


def test_memory_budget_lowers_blocks_with_a_warning(emb: Path) -> None:
    proc = run("analyze", str(emb), "--uncertainty", "--format", "json", "-m", "vne",
               env={BUDGET_ENV: str(moment_bytes(16, 6))})
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.startswith("reprdiag: warning:") and "using 6 blocks" in proc.stderr
    assert proc.stderr.count("\n") == 1
    assert json.loads(proc.stdout)["inputs"][0]["uncertainty_method"]["blocks"] == 6


def test_memory_budget_too_small_is_resource_error(emb: Path) -> None:
    proc = run("analyze", str(emb), "--uncertainty", env={BUDGET_ENV: str(moment_bytes(16, 4))})
    assert proc.returncode == 3
    assert proc.stderr.startswith("reprdiag: error:") and proc.stderr.count("\n") == 1
    assert "memory budget" in proc.stderr and "Traceback" not in proc.stderr


@pytest.fixture(scope="module")
def labelled(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from safetensors.numpy import save_file

    rng = np.random.default_rng(3)
    y = rng.integers(0, 4, 500)
    x = (rng.standard_normal((4, 8)) * 2)[y] + rng.standard_normal((500, 8))
    path = tmp_path_factory.mktemp("lp") / "emb.safetensors"
    save_file({"emb": x.astype("f4"), "y": y,
               "view": (x + 0.3 * rng.standard_normal(x.shape)).astype("f4")}, str(path))
    return path


LABEL_PAIR = {"nc1", "lidar", "nc2_equinorm", "nc2_equiangularity", "class_balance",
              "class_erank_min", "class_erank_median", "alignment", "barlow_ondiag",
              "barlow_offdiag", "pair_cka"}


def test_uncertainty_with_labels_and_pair(labelled: Path, tmp_path: Path) -> None:
    """--uncertainty --labels KEY --pair KEY: every label and paired-view metric has its SE
    in the JSON, report.json, metrics.csv and the table."""
    out = tmp_path / "run"
    args = ["analyze", f"{labelled}", "--key", "emb", "--labels", "y", "--pair", "view",
            "--uncertainty", "--blocks", "6"]
    proc = run(*args, "--out", str(out), "--format", "json")
    assert proc.returncode == 0, proc.stderr
    entry = json.loads(proc.stdout)["inputs"][0]
    assert set(entry["uncertainty"]) >= LABEL_PAIR | CONTINUOUS
    for name in LABEL_PAIR:
        est, value = entry["uncertainty"][name], entry["metrics"][name]
        assert est["se"] > 0 and est["ci_low"] < value < est["ci_high"], name
    csv = pd.read_csv(out / "metrics.csv")
    for name in ("nc1", "lidar", "pair_cka", "alignment"):
        assert csv.loc[0, f"{name}_se"] == pytest.approx(entry["uncertainty"][name]["se"])
    table = run(*args, "-m", "nc1,pair_cka")
    assert table.returncode == 0, table.stderr
    rows = [line for line in table.stdout.splitlines() if "nc1" in line or "pair_cka" in line]
    assert len(rows) == 2 and all("±" in line for line in rows), table.stdout
