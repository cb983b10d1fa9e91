"""Checking rules on runs: :func:`evaluate` (a report against rules, relative rules against
a baseline's matching input) and :func:`gate` (load or analyze the runs, then evaluate).
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from typing import Any

from reprdiag.compare import match_inputs
from reprdiag.errors import InputError
from reprdiag.gate.config import GateConfig, load_config, resolve_rules
from reprdiag.gate.rules import base_metric, metric_se, metric_value, needed_metrics
from reprdiag.pipeline import joined
from reprdiag.results import Check, GateResult, InputResult, Report, Rule
from reprdiag.runs import RunLike, input_key, load_run, run_label


def evaluate(report: Report, rules: Sequence[Rule], baseline: Report | None = None,
             run: str = "", baseline_name: str | None = None) -> GateResult:
    """Check every rule on every input of ``report`` (relative rules against the matching
    input of ``baseline``, paired by key)."""
    pairs: dict[str, list[InputResult]] = {}
    notes: list[str] = []
    if baseline is not None and any(r.relative for r in rules):
        pairs, notes = match_inputs([report, baseline], [run or "run", baseline_name or
                                                         "baseline"])
        missing = [input_key(r) for r in report.inputs if input_key(r) not in pairs]
        if missing and any(r.relative for r in rules):
            raise InputError(f"the baseline has no input {missing[0]!r}",
                             source=baseline_name or "baseline",
                             hint="compare like with like, or pick inputs with --key")
    checks = []
    for result in report.inputs:
        pair = pairs.get(input_key(result))
        for rule in rules:
            value = metric_value(result, rule.metric, run)
            base = metric_value(pair[1], rule.metric, baseline_name or "baseline") if (
                rule.relative and pair) else None
            threshold = rule.threshold(base)
            se = metric_se(result, rule.metric)
            if base is not None:
                se = math.hypot(se, rule.threshold_se(base, metric_se(pair[1], rule.metric)))
            if rule.needs_se and math.isnan(se):
                raise InputError(f"has no standard error of {base_metric(rule.metric)!r}, "
                                 f"which rule {rule.describe()!r} needs",
                                 source=run or result.name, hint="analyze it with "
                                 "--uncertainty (an embedding file given to gate is)")
            checks.append(Check(rule, input_key(result), value, threshold, base,
                                rule.holds(value, threshold, se), se))
    return GateResult(checks, run=run, baseline=baseline_name, notes=notes)


def gate(run: RunLike, *, rules: Sequence[str | Rule] = (),
         config: GateConfig | str | os.PathLike[str] | None = None,
         baseline: RunLike | None = None, keys: Sequence[str] | None = None,
         label: str | None = None, **analyze_options: Any) -> GateResult:
    """Check a run against rules: those of ``config`` (a :class:`GateConfig` or a TOML path)
    and ``rules`` (``"rankme < 64"`` strings or :class:`Rule`), or the collapse preset when
    there are none. ``baseline`` (or the config's) is the reference of relative rules.

    Runs and baselines that are embedding files are analyzed with ``analyze_options``,
    computing only the metrics the rules read (with standard errors when a rule has
    ``margin_se`` or ``max_se``). ``label`` names the run in the output.
    """
    if config is not None and not isinstance(config, GateConfig):
        config = load_config(config)
    rule_list = resolve_rules(config, rules)
    if baseline is None and config is not None and config.baseline:
        baseline = config.baseline
    relative = [r for r in rule_list if r.relative]
    if baseline is None and relative:
        raise relative[0].no_baseline()
    analyze_options.setdefault("metrics", needed_metrics(rule_list))
    if any(r.needs_se for r in rule_list):
        analyze_options["uncertainty"] = True
    with joined(analyze_options) as options:  # torchrun: one process group for both runs
        report = load_run(run, keys, **options)
        base_report = load_run(baseline, keys, **options) if baseline is not None else None
    result = evaluate(report, rule_list, base_report, run=label or run_label(run, 0),
                      baseline_name=run_label(baseline, 1) if baseline is not None else None)
    result.inputs = [*report.inputs, *(base_report.inputs if base_report else [])]
    return result
