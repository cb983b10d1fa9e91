"""``reprdiag.read_report``: every saved result back as the flat frame its CSV holds; counts are
integers in report.json and JSON keeps "≥" readable (issue 18 item 8)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pandas as pd
import pytest

import reprdiag
from reprdiag.errors import InputError
from tests.helpers import SAMPLE, run_main


def cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return run_main([*args, "--device", "cpu", "-q"], cwd=cwd)


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """analyze --out of both samples, compare --out of the two, a gate result as JSON."""
    root = tmp_path_factory.mktemp("read")
    metrics = "numerical_rank,vne,std_normalized,effective_rank"
    for name in ("minilm", "collapsed"):
        proc = cli("analyze", str(SAMPLE / f"{name}.safetensors"), "-m", metrics, "--out",
                   name, "--no-plots", cwd=root)
        assert proc.returncode == 0, proc.stderr
    proc = cli("compare", "minilm", "collapsed", "--out", "cmp", "--no-plots", cwd=root)
    assert proc.returncode == 0, proc.stderr
    proc = cli("gate", "collapsed", "--fail-if", "vne < 0", "-f", "json", cwd=root)
    assert proc.returncode == 0, proc.stderr
    (root / "gate.json").write_text(proc.stdout, encoding="utf-8")
    return root


def test_report_reads_as_metrics_csv(runs: Path) -> None:
    frame = reprdiag.read_report(runs / "minilm")
    csv = pd.read_csv(runs / "minilm" / "metrics.csv")
    assert list(frame.columns) == list(csv.columns)
    assert frame.loc[0, "input"] == csv.loc[0, "input"]
    for name in ("numerical_rank", "vne", "std_normalized", "effective_rank"):
        assert frame.loc[0, name] == pytest.approx(csv.loc[0, name], rel=1e-12)
    assert frame.equals(reprdiag.read_report(runs / "minilm" / "report.json"))
    with pytest.raises(ValueError):  # why read_report exists
        pd.read_json(runs / "minilm" / "report.json")


def test_comparison_reads_as_compare_csv(runs: Path) -> None:
    frame = reprdiag.read_report(runs / "cmp")
    csv = pd.read_csv(runs / "cmp" / "compare.csv")
    assert list(frame.columns) == list(csv.columns) and len(frame) == len(csv) == 8
    assert list(frame["change"]) == list(csv["change"])
    pd.testing.assert_series_equal(frame["delta"], csv["delta"], rtol=1e-12)


def test_gate_result_reads_one_row_per_check(runs: Path) -> None:
    data = json.loads((runs / "gate.json").read_text(encoding="utf-8"))
    frame = reprdiag.read_report(runs / "gate.json")
    assert len(frame) == len(data["checks"]) == 1
    assert list(frame["metric"]) == ["vne"] and list(frame["result"]) == ["PASS"]
    assert frame.loc[0, "value"] == pytest.approx(data["checks"][0]["value"], rel=1e-12)


def test_counts_are_integers_and_json_is_not_ascii_escaped(runs: Path) -> None:
    text = (runs / "minilm" / "report.json").read_text(encoding="utf-8")
    value = json.loads(text)["inputs"][0]["metrics"]["numerical_rank"]
    assert isinstance(value, int) and value == 381
    assert '"numerical_rank": 381,' in text or '"numerical_rank": 381\n' in text
    cmp = (runs / "cmp" / "compare.json").read_text(encoding="utf-8")
    assert "|Δ| ≥ 1%" in cmp and "\\u2265" not in cmp
    assert "\\u" not in (runs / "gate.json").read_text(encoding="utf-8")


def test_bad_paths_are_one_line_input_errors(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"holds neither report\.json nor compare\.json"):
        reprdiag.read_report(tmp_path)
    (tmp_path / "x.json").write_text('{"a": 1}', encoding="utf-8")
    with pytest.raises(InputError, match="is not a reprdiag report"):
        reprdiag.read_report(tmp_path / "x.json")
    with pytest.raises(InputError, match="no such file"):
        reprdiag.read_report(tmp_path / "missing.json")
