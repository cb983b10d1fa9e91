"""compare and gate with jackknife standard errors: noise is told from signal."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

import reprdiag
from reprdiag.compare import compare
from reprdiag.errors import ConfigError, InputError
from reprdiag.gate import Rule, gate, parse_gate_table
from reprdiag.report.export import render
from reprdiag.results import NOISE, Report, z_score
from tests.helpers import run_main

pytestmark = pytest.mark.usefixtures("one_thread")
KEY = ["vne", "effective_rank", "rankme", "participation_ratio", "std_normalized",
       "avg_cosine"]


def _samples() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Two samples of one Gaussian (power-law spectrum), and a collapsed copy of the second
    (all but 8 directions shrunk 20×)."""
    g = torch.Generator().manual_seed(0)
    scale = torch.arange(1, 33, dtype=torch.float64) ** -0.5
    x = torch.randn(4000, 32, dtype=torch.float64, generator=g) * scale + 0.3
    a, b = x[:2000], x[2000:]
    c = b.clone()
    c[:, 8:] *= 0.05
    return a, b, c


@pytest.fixture(scope="module")
def reports() -> dict[str, Report]:
    torch.set_num_threads(1)
    return {name: reprdiag.analyze(x, metrics=KEY, uncertainty=True, device="cpu")
            for name, x in zip("ABC", _samples(), strict=True)}


def test_z_is_delta_over_the_combined_se(reports: dict[str, Report]) -> None:
    cmp = compare([reports["A"], reports["B"]], labels=["A", "B"])
    row = cmp.frame.query("run == 'B' and metric == 'rankme'").iloc[0]
    a, b = reports["A"].inputs[0], reports["B"].inputs[0]
    want = (b.metrics["rankme"] - a.metrics["rankme"]) / np.hypot(a.se("rankme"),
                                                                  b.se("rankme"))
    assert row["z"] == pytest.approx(want, rel=1e-12)
    assert row["se"] == b.se("rankme")
    assert z_score(0.0, 0.1, 0.1) == 0.0


def test_two_samples_of_one_distribution_are_within_noise(reports: dict[str, Report]) -> None:
    cmp = compare([reports["A"], reports["B"]], labels=["A", "B"])
    part = cmp.frame[cmp.frame["run"] == "B"]
    assert (part["z"].abs() < 3).all(), part[["metric", "z"]]
    assert (part["change"] == NOISE).mean() >= 0.8
    loose = compare([reports["A"], reports["B"]], labels=["A", "B"], noise_z=3.0)
    assert "no real change" in loose.verdict() and "largest" not in loose.verdict()


def test_collapse_is_a_real_change(reports: dict[str, Report]) -> None:
    cmp = compare([reports["A"], reports["C"]], labels=["A", "C"])
    part = cmp.frame[cmp.frame["run"] == "C"].set_index("metric")
    for name in ("effective_rank", "rankme", "vne", "std_normalized"):
        assert part.loc[name, "change"] == "worse" and part.loc[name, "z"] < -10, name
    verdict = cmp.verdict()
    assert "worse" in verdict and "largest:" in verdict and "z = −" in verdict


def test_markdown_and_csv_carry_z(reports: dict[str, Report]) -> None:
    cmp = compare([reports["A"], reports["B"]], labels=["A", "B"])
    md = render(cmp, "markdown")
    assert "| z B |" in md and "≈" in md and "±" in md
    assert {"se", "z"} <= set(render(cmp, "csv").splitlines()[0].split(","))
    plain = compare([reprdiag.analyze(_samples()[0], metrics=["vne"], device="cpu")] * 2)
    assert "z" not in plain.frame.columns


def test_gate_margin_passes_noise_and_fails_collapse(reports: dict[str, Report]) -> None:
    strict = [Rule(m, "max_drop", 0.0) for m in ("effective_rank", "rankme", "vne")]
    margin = [Rule(m, "max_drop", 0.0, margin_se=2) for m in ("effective_rank", "rankme",
                                                               "vne")]
    assert not gate(reports["B"], rules=strict, baseline=reports["A"]).passed  # noise fails
    assert gate(reports["B"], rules=margin, baseline=reports["A"]).passed
    collapsed = gate(reports["C"], rules=margin, baseline=reports["A"])
    assert not collapsed.passed and len(collapsed.failures) == 3
    check = gate(reports["B"], rules=margin[:1], baseline=reports["A"]).checks[0]
    a, b = reports["A"].inputs[0], reports["B"].inputs[0]
    assert check.se == pytest.approx(np.hypot(a.se("effective_rank"), b.se("effective_rank")))
    assert "− 2·SE" in check.bound_text()


def test_gate_max_se_fails_an_undecidable_rule(reports: dict[str, Report]) -> None:
    se = reports["A"].inputs[0].se("rankme")
    ok = gate(reports["A"], rules=[Rule("rankme", "min", 1.0, max_se=2 * se)])
    noisy = gate(reports["A"], rules=[Rule("rankme", "min", 1.0, max_se=se / 2)])
    assert ok.passed and not noisy.passed
    assert noisy.checks[0].too_noisy and "too noisy" in noisy.checks[0].message()
    assert bool(noisy.frame()["too_noisy"].iloc[0])
    frac = gate(reports["A"], rules=[Rule("rankme_frac", "min", 0.0, max_se=1.0)])
    assert frac.checks[0].se == pytest.approx(se / 32)


def test_rules_needing_se_refuse_a_run_without_it() -> None:
    plain = reprdiag.analyze(_samples()[0], metrics=["rankme"], device="cpu")
    with pytest.raises(InputError, match="--uncertainty"):
        gate(plain, rules=[Rule("rankme", "min", 1.0, margin_se=2)])
    auto = gate(_samples()[0], rules=[Rule("rankme", "min", 1.0, margin_se=2)], device="cpu")
    assert auto.passed and np.isfinite(auto.checks[0].se)  # analyzed with SEs on the fly


def test_config_modifiers() -> None:
    cfg = parse_gate_table({"margin_se": 2, "preset": "collapse", "fail_if": ["vne < 1"],
                            "rules": {"rankme": {"min": 5, "max_se": 0.5},
                                      "vne_normalized": {"min": 0.1, "margin_se": 0}}}, "cfg")
    by = {r.metric: r for r in cfg.rules}
    assert by["std_normalized"].margin_se == 2 and by["vne"].margin_se == 2
    assert (by["rankme"].margin_se, by["rankme"].max_se) == (2, 0.5)
    assert by["vne_normalized"].margin_se == 0
    for bad in ({"rules": {"vne": {"min": 1, "margin_se": -1}}},
                {"rules": {"vne": {"min": 1, "max_se": 0}}},
                {"rules": {"vne": {"margin_se": 2}}}, {"margin_se": "two"}):
        with pytest.raises(ConfigError):
            parse_gate_table(bad, "cfg")


# -- through the CLI --------------------------------------------------------------------------
@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("noise")
    out = {}
    for name, x in zip("ABC", _samples(), strict=True):
        out[name] = folder / f"{name}.npy"
        np.save(out[name], x[:1000].numpy().astype("f4"))
    return out


def run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return run_main(list(args), cwd=cwd)


def test_cli_compare_with_uncertainty(files: dict[str, Path]) -> None:
    proc = run("compare", str(files["A"]), str(files["C"]), "--uncertainty", "-m",
               "effective_rank,rankme", "--format", "json")
    assert proc.returncode == 0, proc.stderr
    rows = [r for r in json.loads(proc.stdout)["rows"] if r["run"] == "C.npy"]
    assert all(r["change"] == "worse" and r["z"] < -10 for r in rows)
    bad = run("compare", str(files["A"]), str(files["B"]), "--noise-z", "0")
    assert bad.returncode == 2 and bad.stderr.startswith("reprdiag: error:")
    assert bad.stderr.count("\n") == 1 and "--noise-z" in bad.stderr


def test_cli_gate_margin_config(files: dict[str, Path], tmp_path: Path) -> None:
    config = tmp_path / "reprdiag.toml"
    config.write_text(f'[gate]\nbaseline = "{files["A"]}"\nmargin_se = 2\n\n[gate.rules]\n'
                      "effective_rank = { max_drop = 0.0 }\n")
    same = run("gate", str(files["B"]), "--config", str(config))
    collapsed = run("gate", str(files["C"]), "--config", str(config))
    assert same.returncode == 0, same.stdout + same.stderr
    assert collapsed.returncode == 1 and "gate failed" in collapsed.stderr
    assert "margin 2 SE" in same.stdout and "±" in same.stdout


def test_cli_gate_on_a_run_without_se_is_exit_2(files: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "run"
    assert run("analyze", str(files["B"]), "-m", "rankme", "--out", str(out),
               "--no-plots").returncode == 0
    proc = run("gate", str(out), "--fail-if", "rankme < 1", "--config", str(_margin_cfg(
        tmp_path)))
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith("reprdiag: error:") and proc.stderr.count("\n") == 1
    assert "--uncertainty" in proc.stderr


def _margin_cfg(folder: Path) -> Path:
    path = folder / "margin.toml"
    path.write_text("[gate]\nmargin_se = 1\n\n[gate.rules]\nrankme = { min = 1 }\n")
    return path
