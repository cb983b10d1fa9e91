"""``reprdiag gate`` and ``analyze --gate`` end to end, through the console-script entry point."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from xml.etree import ElementTree as ET

import pytest

from tests.helpers import SAMPLE, run_main

HEALTHY = str(SAMPLE / "minilm.safetensors")
COLLAPSED = str(SAMPLE / "collapsed.safetensors")


def _gate(*args: str, cwd: Path, env: dict[str, str] | None = None
          ) -> subprocess.CompletedProcess[str]:
    return run_main([*args, "--device", "cpu", "-q"], cwd=cwd, env=env)


def test_default_preset_passes_the_healthy_sample(tmp_path: Path) -> None:
    proc = _gate("gate", HEALTHY, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "gate: PASS: 2 of 2 rules hold" in proc.stdout
    assert "std_normalized ≥ 0.1" in proc.stdout and "effective_rank_frac ≥ 0.1" in proc.stdout
    assert proc.stderr == ""


def test_default_preset_fails_the_collapsed_sample_with_junit(tmp_path: Path) -> None:
    summary = tmp_path / "summary.md"
    summary.write_text("earlier step\n")
    proc = _gate("gate", COLLAPSED, "--junit", "gate.xml", cwd=tmp_path,
                 env={"GITHUB_STEP_SUMMARY": str(summary)})
    assert proc.returncode == 1, proc.stderr
    assert proc.stderr.splitlines() == [
        "reprdiag: gate failed: 1 of 2 rules failed (effective_rank_frac ≥ 0.1)"]
    suite = ET.parse(tmp_path / "gate.xml").getroot().find("testsuite")
    assert suite is not None and suite.get("tests") == "2" and suite.get("failures") == "1"
    failed = [c.get("name") for c in suite.iter("testcase") if c.find("failure") is not None]
    assert failed == ["effective_rank_frac ≥ 0.1"]
    text = summary.read_text()
    assert text.startswith("earlier step\n")  # appended, not overwritten
    assert "| embeddings | effective_rank_frac ≥ 0.1 | 0.013032 | ≥ 0.1 | ❌ FAIL |" in text


def test_baseline_rule_catches_a_drop(tmp_path: Path, minilm_run: Path) -> None:
    (tmp_path / "reprdiag.toml").write_text(
        f'[gate]\nbaseline = "{minilm_run}"\n\n[gate.rules]\nvne = {{ max_drop = 0.05 }}\n'
        'avg_cosine = { max_rise = 0.5 }\n')
    proc = _gate("gate", COLLAPSED, "-f", "json", cwd=tmp_path)  # config found in the cwd
    assert proc.returncode == 1, proc.stderr
    checks = {c["metric"]: c for c in json.loads(proc.stdout)["checks"]}
    assert checks["vne"]["result"] == "FAIL" and checks["avg_cosine"]["result"] == "FAIL"
    base = json.loads((minilm_run / "report.json").read_text())["inputs"][0]["metrics"]
    assert checks["vne"]["baseline"] == base["vne"]
    assert checks["vne"]["threshold"] == pytest.approx(0.95 * base["vne"], rel=1e-12)
    same = _gate("gate", HEALTHY, cwd=tmp_path)
    assert same.returncode == 0, same.stdout + same.stderr


@pytest.mark.parametrize(("config", "message"), [
    ("[gate.rules\n", "is not valid TOML"),
    ('[gate.rules]\nrankmee = { min = 3 }\n', "unknown metric 'rankmee'; did you mean 'rankme'"),
    ('[gate.rules]\nvne = { max_drop = 0.1 }\n', "needs a baseline run"),
])
def test_malformed_configs_exit_2_with_one_line(tmp_path: Path, minilm_run: Path, config: str,
                                                 message: str) -> None:
    (tmp_path / "bad.toml").write_text(config)
    proc = _gate("gate", str(minilm_run), "--config", "bad.toml", cwd=tmp_path)
    assert proc.returncode == 2
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("reprdiag: error: bad.toml")
    assert message in lines[0]
    assert proc.stdout == ""


def test_bad_input_and_bad_fail_if_exit_2(tmp_path: Path, minilm_run: Path) -> None:
    proc = _gate("gate", str(minilm_run), "--fail-if", "rankme = 3", cwd=tmp_path)
    assert proc.returncode == 2 and len(proc.stderr.splitlines()) == 1
    assert "METRIC OP NUMBER" in proc.stderr
    proc = _gate("gate", str(tmp_path / "missing.npy"), cwd=tmp_path)
    assert proc.returncode == 2 and proc.stderr.startswith("reprdiag: error: ")
    assert len(proc.stderr.splitlines()) == 1


def test_pyproject_table_and_fail_if(tmp_path: Path, minilm_run: Path) -> None:
    (tmp_path / "pyproject.toml").write_text(
        '[project]\nname = "x"\n\n[tool.reprdiag.gate.rules]\nrankme_frac = { min = 0.5 }\n')
    proc = _gate("gate", str(minilm_run), "--fail-if", "rankme < 1000", cwd=tmp_path)
    assert proc.returncode == 1
    assert "rankme_frac ≥ 0.5" in proc.stdout and "rankme ≥ 1000" in proc.stdout
    assert proc.stderr.splitlines() == ["reprdiag: gate failed: 1 of 2 rules failed "
                                        "(rankme ≥ 1000)"]


def test_analyze_gate_writes_the_report_then_fails(tmp_path: Path) -> None:
    (tmp_path / "ci.toml").write_text('[gate]\npreset = "collapse"\n')
    proc = _gate("analyze", COLLAPSED, "-m", "vne", "--out", "run", "--gate", "ci.toml",
                 "-f", "json", "--no-plots", cwd=tmp_path)
    assert proc.returncode == 1, proc.stderr
    report = json.loads(proc.stdout)  # stdout stays one JSON document; the gate is on stderr
    assert set(report["inputs"][0]["metrics"]) == {"vne", "std_normalized", "effective_rank"}
    assert (tmp_path / "run" / "report.json").is_file()
    assert "effective_rank_frac ≥ 0.1" in proc.stderr
    assert proc.stderr.splitlines()[-1].startswith("reprdiag: gate failed: 1 of 2 rules")
