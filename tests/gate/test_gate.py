"""gate: rule semantics, config parsing and discovery, the collapse preset, JUnit XML."""

from __future__ import annotations

import math
from pathlib import Path
from xml.etree import ElementTree as ET

import numpy as np
import pytest
import torch

import reprdiag
from reprdiag.errors import ConfigError, InputError, UsageError
from reprdiag.gate import (
    PRESETS,
    GateConfig,
    Rule,
    evaluate,
    find_config,
    junit_xml,
    load_config,
    metric_names,
    metric_value,
    parse_fail_if,
    parse_gate_table,
    parse_rules,
    resolve_rules,
    write_junit,
)
from reprdiag.report.export import render
from reprdiag.results import InputResult, Report
from tests.helpers import ROOT


def _result(metrics: dict[str, float], key: str = "emb", n: int = 1000, d: int = 100
            ) -> InputResult:
    return InputResult(name=f"f[{key}]", n=n, d=d, dtype="float32", metrics=metrics,
                       spectra={}, solver={}, key=key)


def _report(**metrics: float) -> Report:
    return Report([_result(metrics)])


@pytest.mark.parametrize(("expr", "value", "passes"), [
    ("rankme < 64", 64.0, True), ("rankme < 64", 63.999, False),
    ("rankme <= 64", 64.0, False), ("rankme <= 64", 64.001, True),
    ("avg_cosine > 0.5", 0.5, True), ("avg_cosine > 0.5", 0.5001, False),
    ("avg_cosine >= 0.5", 0.5, False), ("avg_cosine>=0.5", 0.4999, True)])
def test_fail_if_fails_exactly_when_the_comparison_is_true(expr: str, value: float,
                                                           passes: bool) -> None:
    rule = parse_fail_if(expr)
    assert rule.bound in (64.0, 0.5)
    assert evaluate(_report(**{rule.metric: value}), [rule]).passed is passes


def test_nan_values_never_pass() -> None:
    rule = Rule("alpha_req", "max", 10.0)
    assert not evaluate(_report(alpha_req=math.nan), [rule]).passed
    assert not rule.holds(math.nan, 10.0)


def test_relative_rules_use_the_magnitude_of_the_baseline() -> None:
    drop = Rule("er_entropy", "max_drop", 0.01)
    # baseline −600: a 1% drop allows values down to −606
    assert drop.threshold(-600.0) == pytest.approx(-606.0)
    base = _report(er_entropy=-600.0, vne=4.0)
    assert evaluate(_report(er_entropy=-605.9, vne=4.0), [drop], base).passed
    assert not evaluate(_report(er_entropy=-606.1, vne=4.0), [drop], base).passed
    rise = Rule("avg_cosine", "max_rise", 0.5)
    base = _report(avg_cosine=0.2)
    ok = evaluate(_report(avg_cosine=0.3), [rise], base)
    assert ok.passed and ok.checks[0].threshold == pytest.approx(0.3)
    assert ok.checks[0].baseline == 0.2
    assert not evaluate(_report(avg_cosine=0.31), [rise], base).passed


def test_relative_rule_without_baseline_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="needs a baseline"):
        evaluate(_report(vne=1.0), [Rule("vne", "max_drop", 0.1)])


def test_frac_metrics_divide_by_min_n_d() -> None:
    r = _result({"rankme": 30.0, "effective_rank": 12.0}, n=60, d=200)
    assert metric_value(r, "rankme_frac") == 30.0 / 60
    assert metric_value(r, "effective_rank_frac") == 12.0 / 60
    assert metric_value(r, "rankme") == 30.0
    names = metric_names()
    assert "rankme_frac" in names and "cov_offdiag_frac" in names
    assert "vne_frac" not in names
    with pytest.raises(InputError, match="has no value of 'vne'"):
        metric_value(r, "vne")


def test_rules_are_checked_on_every_layer_and_paired_by_key() -> None:
    run = Report([_result({"vne": 1.0}, "l0"), _result({"vne": 3.0}, "l1")])
    base = Report([_result({"vne": 3.2}, "l1"), _result({"vne": 1.0}, "l0")])
    result = evaluate(run, [Rule("vne", "max_drop", 0.05)], base)
    assert [(c.input, c.baseline, c.passed) for c in result.checks] == [
        ("l0", 1.0, True), ("l1", 3.2, False)]


@pytest.mark.parametrize(("table", "message"), [
    ({"rules": {"rankmee": {"min": 1}}}, "unknown metric 'rankmee'; did you mean 'rankme'"),
    ({"rules": {"rankme": {"minimum": 1}}}, "unknown key 'minimum'"),
    ({"rules": {"rankme": {"min": "3"}}}, "must be a number"),
    ({"rules": {"rankme": {"min": True}}}, "must be a number"),
    ({"rules": {"vne": {"max_drop": -0.1}}}, "fraction ≥ 0"),
    ({"rules": {"vne": {"min": 3, "max": 2}}}, "above max"),
    ({"rules": {"vne": 3}}, "must be a table"),
    ({"rules": {"vne": {}}}, "must be a table"),
    ({"rulez": {}}, "unknown key 'rulez' in the gate table; did you mean 'rules'"),
    ({"preset": "nope"}, "unknown preset"),
    ({"fail_if": [3]}, "fail_if must be a list"),
    ({"baseline": 3}, "baseline must be a path"),
])
def test_malformed_tables_are_config_errors(table: dict, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_gate_table(table, "cfg.toml")
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_unknown_metric_error_lists_the_valid_names() -> None:
    with pytest.raises(ConfigError) as info:
        parse_rules({"bogus": {"min": 1}}, "cfg.toml")
    text = str(info.value)
    assert "valid:" in text and all(name in text for name in ("vne", "rankme_frac"))


def test_bad_fail_if_is_a_usage_error() -> None:
    with pytest.raises(UsageError, match="METRIC OP NUMBER"):
        parse_fail_if("rankme == 3")
    with pytest.raises(UsageError, match="not a number"):
        parse_fail_if("rankme < abc")


def test_gate_table_combines_preset_rules_and_fail_if(tmp_path: Path) -> None:
    cfg = parse_gate_table({"preset": "collapse", "rules": {"rankme": {"min": 5}},
                            "fail_if": "vne < 1", "baseline": "runs/main"}, "c", tmp_path)
    assert cfg.rules[:2] == PRESETS["collapse"]
    assert [r.describe() for r in cfg.rules[2:]] == ["rankme ≥ 5", "vne ≥ 1"]
    assert cfg.baseline == str(tmp_path / "runs/main")


def test_config_files_and_discovery(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "pyproject.toml").write_text(
        '[project]\nname = "x"\n\n[tool.reprdiag.gate.rules]\nrankme_frac = { min = 0.2 }\n')
    assert find_config(tmp_path) == tmp_path / "pyproject.toml"
    assert load_config(tmp_path / "pyproject.toml").rules[0] == Rule(
        "rankme_frac", "min", 0.2, origin=str(tmp_path / "pyproject.toml"))
    (tmp_path / "reprdiag.toml").write_text('[gate]\nfail_if = ["vne < 2"]\n')
    assert find_config(tmp_path) == tmp_path / "reprdiag.toml"  # wins over pyproject
    other = tmp_path / "other"
    other.mkdir()
    (other / "pyproject.toml").write_text('[project]\nname = "y"\n')
    assert find_config(other) is None
    (other / "broken.toml").write_text("[gate\n")
    with pytest.raises(ConfigError, match="is not valid TOML"):
        load_config(other / "broken.toml")
    with pytest.raises(ConfigError, match="has no \\[gate\\]"):
        load_config(other / "pyproject.toml")
    with pytest.raises(ConfigError, match="no such config file"):
        load_config(other / "missing.toml")


def _isotropic(n: int = 1000, d: int = 64, seed: int = 0) -> torch.Tensor:
    return torch.from_numpy(np.random.default_rng(seed).standard_normal((n, d)))


def test_collapse_preset_passes_isotropic_data_and_catches_both_collapses() -> None:
    healthy = reprdiag.gate(_isotropic(), device="cpu")
    assert healthy.passed and len(healthy.checks) == 2
    rng = np.random.default_rng(1)
    # dimensional collapse: rank 3 of 64 — effective rank fails, the std of x/|x| does not
    low_rank = torch.from_numpy(rng.standard_normal((1000, 3)) @ rng.standard_normal((3, 64)))
    dims = {c.rule.metric: c.passed for c in reprdiag.gate(low_rank, device="cpu").checks}
    assert dims == {"std_normalized": True, "effective_rank_frac": False}
    # complete collapse: one direction plus isotropic noise at 1% — the reverse
    point = torch.from_numpy(np.ones((1, 64)) + 0.01 * rng.standard_normal((1000, 64)))
    full = {c.rule.metric: c.passed for c in reprdiag.gate(point, device="cpu").checks}
    assert full == {"std_normalized": False, "effective_rank_frac": True}


def test_gate_reads_only_the_metrics_its_rules_need() -> None:
    result = reprdiag.gate(_isotropic(200, 8), rules=["vne < 0.1"], device="cpu")
    assert [c.rule.metric for c in result.checks] == ["vne"]
    config = GateConfig((Rule("rankme", "max_drop", 0.5),), baseline=None)
    with pytest.raises(ConfigError, match="needs a baseline"):
        reprdiag.gate(_isotropic(200, 8), config=config, device="cpu")


def test_junit_xml_has_one_testcase_per_check_and_the_failures(tmp_path: Path) -> None:
    run = Report([_result({"vne": 1.0, "rankme": 50.0}, "l0"),
                  _result({"vne": 3.0, "rankme": 5.0}, "l1")])
    result = evaluate(run, [Rule("vne", "min", 2.0), Rule("rankme_frac", "min", 0.1)],
                      run="A")
    path = write_junit(result, tmp_path / "gate.xml")
    root = ET.parse(path).getroot()
    assert root.tag == "testsuites"
    suite = root.find("testsuite")
    assert suite is not None and suite.get("tests") == "4" and suite.get("failures") == "2"
    cases = suite.findall("testcase")
    failed = [(c.get("classname"), c.get("name")) for c in cases if c.find("failure") is not None]
    assert failed == [("reprdiag.gate.l0", "vne ≥ 2"), ("reprdiag.gate.l1", "rankme_frac ≥ 0.1")]
    message = cases[0].find("failure").get("message")
    assert message.startswith("l0: vne = 1 violates the bound ≥ 2")
    assert junit_xml(evaluate(run, [Rule("vne", "min", 0.0)])).count("<failure") == 0


def test_result_summaries_and_markdown() -> None:
    result = evaluate(_report(vne=1.0, rankme=50.0),
                      [Rule("vne", "min", 2.0), Rule("rankme", "min", 10.0)], run="A")
    assert result.summary() == "FAIL: 1 of 2 rules failed (vne ≥ 2)"
    md = render(result, "markdown")
    assert "| emb | vne ≥ 2 | 1 | ≥ 2 | ❌ FAIL |" in md
    data = result.to_dict()
    assert data["passed"] is False and data["checks"][1]["result"] == "PASS"


def test_readme_config_example_is_valid(tmp_path: Path) -> None:
    readme = (ROOT / "docs" / "gate.md").read_text()
    example = readme.split("```toml\n", 1)[1].split("```", 1)[0]
    (tmp_path / "reprdiag.toml").write_text(example)
    config = load_config(tmp_path / "reprdiag.toml")
    assert config.baseline == str(tmp_path / "runs/main")
    assert [r.describe() for r in config.rules] == [
        "std_normalized ≥ 0.1", "effective_rank_frac ≥ 0.1", "rankme_frac ≥ 0.25",
        "vne drop ≤ 5% vs baseline", "avg_cosine ≤ 0.5", "avg_cosine rise ≤ 50% vs baseline",
        "numerical_rank ≥ 32"]


# -- one validation path for every way a rule is written (issue 14 item 10) --------------------
NAN, INF = float("nan"), float("inf")


@pytest.mark.parametrize("make", [
    lambda: parse_gate_table({"rules": {"rankme": {"min": NAN}}}, "cfg.toml"),
    lambda: parse_gate_table({"fail_if": ["rankme < nan"]}, "cfg.toml"),
    lambda: parse_fail_if("rankme < nan"),
    lambda: parse_fail_if("rankme > inf"),
    lambda: parse_gate_table({"rules": {"vne": {"max_drop": INF}}}, "cfg.toml"),
    lambda: Rule("rankme", "min", NAN),
], ids=["toml-min", "toml-fail_if", "cli-fail-if", "cli-inf", "toml-inf", "api"])
def test_non_finite_bounds_are_refused_everywhere(make) -> None:
    with pytest.raises(ConfigError, match=r"must be a finite number, got (nan|inf)"):
        make()


@pytest.mark.parametrize(("table", "message"), [
    ({"margin_se": NAN, "rules": {"vne": {"min": 1}}}, "[gate].margin_se must be a finite"),
    ({"rules": {"vne": {"min": 1, "max_se": INF}}}, "vne.max_se must be a finite number"),
    ({"rules": {"vne": {"min": 1, "margin_se": -1}}}, "vne.margin_se must be ≥ 0, got -1"),
    ({"max_se": 0, "rules": {"vne": {"min": 1}}}, "[gate].max_se must be > 0, got 0"),
])
def test_bad_se_modifiers_are_refused(table: dict, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_gate_table(table, "cfg.toml")
    assert message in str(info.value)


def test_api_rules_are_checked_like_config_rules() -> None:
    with pytest.raises(ConfigError, match=r"vne\.max_drop must be a fraction ≥ 0, got -0\.1"):
        Rule("vne", "max_drop", -0.1)
    with pytest.raises(ConfigError, match="unknown key 'minimum'"):
        Rule("vne", "minimum", 1.0)
    with pytest.raises(ConfigError, match=r"vne\.margin_se must be ≥ 0"):
        Rule("vne", "min", 1.0, margin_se=-2)


def test_margin_se_without_rules_is_refused() -> None:
    """``margin_se = 2`` alone used to be silently dropped (the preset ran without it)."""
    config = parse_gate_table({"margin_se": 2}, "cfg.toml")
    with pytest.raises(ConfigError) as info:
        resolve_rules(config)
    assert str(info.value) == ('cfg.toml: margin_se = 2 in the gate table has no rule to apply '
                               'to; add [gate.rules], fail_if or preset = "collapse"')
    # ... it applies to the preset or to --fail-if rules, as to the table's own rules
    assert {r.margin_se for r in resolve_rules(parse_gate_table(
        {"margin_se": 2, "preset": "collapse"}, "cfg.toml"))} == {2.0}
    assert [r.margin_se for r in resolve_rules(config, ["rankme < 3"])] == [2.0]


def test_a_gate_that_checks_nothing_fails() -> None:
    result = evaluate(Report([]), [Rule("rankme", "min", 1.0)])
    assert result.checks == [] and not result.passed
    assert result.summary() == "FAIL: no rule could be checked (the run holds no input)"


def test_config_that_is_a_fifo_is_refused_without_blocking(tmp_path: Path) -> None:
    import os
    import signal

    os.mkfifo(tmp_path / "reprdiag.toml")
    signal.alarm(20)  # a regression fails (the alarm interrupts open) instead of hanging
    try:
        with pytest.raises(InputError, match=r"reprdiag\.toml: is a named pipe \(FIFO\)"):
            load_config(tmp_path / "reprdiag.toml")
    finally:
        signal.alarm(0)
