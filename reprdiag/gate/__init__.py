"""The gate: rules on metric values that pass or fail a run (exit 0 or 1 in CI).

A :class:`Rule` bounds one metric: ``min``/``max`` absolutely, or ``max_drop``/``max_rise``
as a fraction of a baseline run's value. Rank-like metrics also exist scaled by the size of
the input, ``<metric>_frac = <metric> / min(N, d)`` (e.g. ``rankme_frac``), so one threshold
reads the same at every width. Rules come from a TOML table (``[gate]`` in ``reprdiag.toml``
or ``[tool.reprdiag.gate]`` in ``pyproject.toml``), from ``--fail-if "rankme < 64"``
expressions, or from a preset; without any rules the ``collapse`` preset applies.

>>> import torch
>>> x = torch.randn(500, 32, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
>>> result = gate(x, device="cpu")
>>> result.passed, [c.rule.describe() for c in result.checks]
(True, ['std_normalized ≥ 0.1', 'effective_rank_frac ≥ 0.1'])
>>> gate(x[:, :1].repeat(1, 32), device="cpu").passed
False

The package: :mod:`~reprdiag.gate.rules` (what a rule may bound, reading values, presets),
:mod:`~reprdiag.gate.config` (the TOML table and ``--fail-if`` parser) and
:mod:`~reprdiag.gate.evaluation` (:func:`evaluate`, :func:`gate`). :class:`Rule`,
:class:`Check` and :class:`GateResult` are result types (:mod:`reprdiag.results`); the JUnit
XML, markdown and tables are rendered by :mod:`reprdiag.report`.
"""

from __future__ import annotations

from reprdiag.gate.config import (
    CONFIG_NAME,
    TABLE_KEYS,
    GateConfig,
    find_config,
    load_config,
    parse_fail_if,
    parse_gate_table,
    parse_rules,
    resolve_rules,
    se_modifiers,
)
from reprdiag.gate.evaluation import evaluate, gate
from reprdiag.gate.rules import (
    DEFAULT_PRESET,
    PRESETS,
    base_metric,
    check_metric,
    metric_names,
    metric_se,
    metric_value,
    needed_metrics,
)
from reprdiag.report.export import junit_xml, write_junit
from reprdiag.results import KINDS, MODIFIERS, Check, GateResult, Rule

__all__ = ["CONFIG_NAME", "DEFAULT_PRESET", "KINDS", "MODIFIERS", "PRESETS", "TABLE_KEYS",
           "Check", "GateConfig", "GateResult", "Rule", "base_metric", "check_metric",
           "evaluate", "find_config", "gate", "junit_xml", "load_config", "metric_names",
           "metric_se", "metric_value", "needed_metrics", "parse_fail_if", "parse_gate_table",
           "parse_rules", "resolve_rules", "se_modifiers", "write_junit"]
