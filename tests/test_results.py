"""results: the three result types round-trip through to_dict/from_dict, import nothing above
them, and reprdiag.compare / reprdiag.gate are one object each (module and function)."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import numpy as np
import pandas as pd

import reprdiag
from reprdiag.report.export import junit_xml, render
from reprdiag.results import Comparison, GateResult, InputResult, Report, Rule


def _result(metrics: dict[str, float], key: str, se: dict[str, float] | None = None,
            n: int = 300, d: int = 12) -> InputResult:
    return InputResult(name=f"f.h5[{key}]", n=n, d=d, dtype="float32", metrics=metrics,
                       spectra={"covariance": [3.0, 1.0]}, solver={}, key=key,
                       uncertainty={m: {"se": s} for m, s in (se or {}).items()})


def test_comparison_round_trips_through_its_json() -> None:
    runs = [[_result({"vne": 2.0, "rankme": 9.0, "alpha_req": math.nan}, k,
                     {"vne": 0.1, "rankme": 0.5}) for k in ("l0", "l1")],
            [_result({"vne": 1.5, "rankme": 9.2, "alpha_req": 1.0}, k,
                     {"vne": 0.1, "rankme": 0.4}, n=200) for k in ("l0", "l1")]]
    cmp = Comparison(runs=["A", "B"], inputs={k: [runs[0][i], runs[1][i]]
                                              for i, k in enumerate(("l0", "l1"))},
                     notes=["a note"], noise_z=3.0)
    back = Comparison.from_dict(json.loads(cmp.to_json()))
    pd.testing.assert_frame_equal(back.to_frame(), cmp.to_frame())
    assert back.verdict() == cmp.verdict() and back.notes == ["a note"]
    assert render(back, "markdown") == render(cmp, "markdown")
    assert "within noise" in set(cmp.to_frame()["change"])  # noise_z = 3 came back


def test_gate_result_round_trips_through_its_json() -> None:
    se = {"vne": 0.2, "rankme": 1.5}
    report = Report([_result({"vne": 1.0, "rankme": 50.0}, "l0", se),
                     _result({"vne": 3.0, "rankme": 5.0}, "l1", se)])
    base = Report([_result({"vne": 2.0, "rankme": 40.0}, k, se) for k in ("l0", "l1")])
    rules = [Rule("vne", "min", 2.0, strict=True, origin="cfg", margin_se=1.0),
             Rule("rankme_frac", "min", 0.1), Rule("rankme", "max_drop", 0.5, max_se=2.0)]
    result = reprdiag.gate(report, rules=rules, baseline=base)
    data = json.loads(result.to_json())
    back = GateResult.from_dict(data)
    assert back.checks == result.checks
    assert (back.summary(), back.run, back.baseline) == (result.summary(), result.run,
                                                         result.baseline)
    assert junit_xml(back) == junit_xml(result)
    assert [r["metric"] for r in data["rules"]] == ["vne", "rankme_frac", "rankme"]


def test_report_round_trips_and_metrics_keep_their_two_shapes() -> None:
    one = Report([_result({"vne": 2.0, "numerical_rank": 7.0}, "l0")])
    back = Report.from_dict(json.loads(one.to_json()))
    assert back == one and isinstance(one.to_dict()["inputs"][0]["metrics"]["numerical_rank"],
                                      int)
    two = Report([_result({"vne": 2.0}, "l0"), _result({"vne": 1.0}, "l1")])
    assert one.metrics == {"vne": 2.0, "numerical_rank": 7.0}
    assert two.metrics == {"f.h5[l0]": {"vne": 2.0}, "f.h5[l1]": {"vne": 1.0}}
    assert [two[k].metrics["vne"] for k in ("l0", "l1")] == [2.0, 1.0]
    assert list(two.to_frame()["vne"]) == [2.0, 1.0]


def test_compare_and_gate_are_one_object_each_module_and_callable() -> None:
    import reprdiag.compare as compare_module
    import reprdiag.gate as gate_module

    assert reprdiag.compare is compare_module and reprdiag.gate is gate_module
    x = np.random.default_rng(0).standard_normal((200, 6))
    cmp = reprdiag.compare([x, x], metrics=["vne"], device="cpu")
    assert isinstance(cmp, Comparison) and (cmp.to_frame()["delta"] == 0).all()
    assert reprdiag.gate(x, rules=["vne < 0.5"], device="cpu").passed
    assert reprdiag.gate.PRESETS is gate_module.PRESETS


def test_results_import_nothing_above_them_nor_torch() -> None:
    code = ("import sys, reprdiag.results; print(sorted(m for m in sys.modules if "
            "m.startswith(('reprdiag.report', 'reprdiag.compare', 'reprdiag.gate', 'torch', "
            "'reprdiag.api'))))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120, check=True)
    assert proc.stdout.strip() == "[]"
