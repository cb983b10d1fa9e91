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
"""

from __future__ import annotations

import math
import os
import re
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from reprdiag.compare import match_inputs
from reprdiag.distributed import joined
from reprdiag.errors import ConfigError, InputError, UsageError, did_you_mean
from reprdiag.loaders import check_regular_file
from reprdiag.metrics import resolve
from reprdiag.report.export import junit_xml, write_junit
from reprdiag.results import (
    KINDS,
    MODIFIERS,
    Check,
    GateResult,
    InputResult,
    Report,
    Rule,
    check_se_modifier,
    unknown_key,
)
from reprdiag.runs import RunLike, input_key, load_run, run_label

__all__ = ["CONFIG_NAME", "DEFAULT_PRESET", "PRESETS", "Check", "GateConfig", "GateResult",
           "Rule", "evaluate", "find_config", "gate", "junit_xml", "load_config",
           "needed_metrics", "parse_fail_if", "parse_gate_table", "parse_rules",
           "resolve_rules", "write_junit"]

#: Metrics that count dimensions; each also exists as ``<name>_frac`` = value / min(N, d).
SCALABLE = ("effective_rank", "rankme", "participation_ratio", "stable_rank", "numerical_rank")
FRAC_SUFFIX = "_frac"
#: Keys of the gate table; the rules go in its ``rules`` sub-table; ``margin_se``/``max_se``
#: here are defaults for every rule.
TABLE_KEYS = ("rules", "fail_if", "preset", "baseline", *MODIFIERS)
CONFIG_NAME = "reprdiag.toml"


def metric_names() -> list[str]:
    """Every name a rule may bound: the registered metrics plus the ``_frac`` scalings.

    >>> [n for n in metric_names() if n.startswith("rankme")]
    ['rankme', 'rankme_frac']
    """
    names = []
    for info in resolve(None):
        names.append(info.name)
        if info.name in SCALABLE:
            names.append(info.name + FRAC_SUFFIX)
    return names


def base_metric(name: str) -> str:
    """The registered metric a rule's name reads (``rankme_frac`` → ``rankme``).

    >>> base_metric("rankme_frac"), base_metric("cov_offdiag_frac")
    ('rankme', 'cov_offdiag_frac')
    """
    if name.endswith(FRAC_SUFFIX) and name[: -len(FRAC_SUFFIX)] in SCALABLE:
        return name[: -len(FRAC_SUFFIX)]
    return name


def metric_value(result: InputResult, name: str, source: str = "") -> float:
    """The value a rule reads from one input: a metric, or a rank scaled by min(N, d).

    >>> r = InputResult("x", n=100, d=50, dtype="f", metrics={"rankme": 25.0}, spectra={},
    ...                 solver={})
    >>> metric_value(r, "rankme_frac")
    0.5
    """
    base = base_metric(name)
    if base not in result.metrics:
        raise InputError(f"has no value of {base!r}", source=source or result.name,
                         hint="re-run reprdiag analyze without --metrics, or with this metric")
    value = result.metrics[base]
    return value / min(result.n, result.d) if base != name else value


def metric_se(result: InputResult, name: str) -> float:
    """The standard error of what a rule reads (NaN when the run carries none).

    >>> r = InputResult("x", n=100, d=50, dtype="f", metrics={"rankme": 25.0}, spectra={},
    ...                 solver={}, uncertainty={"rankme": {"se": 2.0}})
    >>> metric_se(r, "rankme"), metric_se(r, "rankme_frac"), metric_se(r, "vne")
    (2.0, 0.04, nan)
    """
    base = base_metric(name)
    se = result.se(base)
    return se / min(result.n, result.d) if base != name else se


def check_metric(name: str, source: str) -> None:
    """Fail with the list of valid names when ``name`` is not a metric a rule can bound."""
    valid = metric_names()
    if name not in valid:
        raise ConfigError(f"unknown metric {name!r}", source=source,
                          hint=did_you_mean(name, valid) + "valid: " + ", ".join(valid))


#: Built-in rule sets. ``collapse`` is the default (docs/gate.md explains each threshold).
PRESETS: dict[str, tuple[Rule, ...]] = {
    "collapse": (
        # complete collapse: every row points the same way, std of x/‖x‖ → 0 (isotropic ≈ 1)
        Rule("std_normalized", "min", 0.1, origin="preset collapse"),
        # dimensional collapse: the spectrum lives in a tenth of the available dimensions
        Rule("effective_rank_frac", "min", 0.1, origin="preset collapse"),
    ),
}
DEFAULT_PRESET = "collapse"


@dataclass(frozen=True)
class GateConfig:
    """The rules of a gate table and its baseline (a path, relative to the config file)."""

    rules: tuple[Rule, ...] = ()
    baseline: str | None = None
    source: str = ""
    #: ``margin_se`` / ``max_se`` of the gate table: applied to its rules and to --fail-if's.
    se_defaults: dict[str, float] = field(default_factory=dict)


def _number(value: object, where: str, source: str) -> float:
    """A TOML value that must be a number (finiteness is checked by :class:`Rule`)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"{where} must be a number, got {value!r}", source=source)
    return float(value)


def se_modifiers(table: Mapping[str, Any], where: str, source: str,
                 defaults: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """``margin_se`` (≥ 0) and ``max_se`` (> 0) of a table, over ``defaults``.

    >>> se_modifiers({"min": 1, "margin_se": 2}, "rankme", "cfg", {"max_se": 0.5})
    {'max_se': 0.5, 'margin_se': 2.0}
    """
    out = dict(defaults or {})
    for key in MODIFIERS:
        if key in table:
            out[key] = _number(table[key], f"{where}.{key}", source)
            check_se_modifier(key, out[key], where, source)
    return out


def parse_rules(table: object, source: str, where: str = "[gate.rules]",
                defaults: Mapping[str, Any] | None = None) -> list[Rule]:
    """Rules from ``{metric: {min|max|max_drop|max_rise: number, margin_se|max_se: number}}``
    (``defaults``: the gate table's own ``margin_se``/``max_se``).

    >>> parse_rules({"rankme_frac": {"min": 0.1}, "vne": {"max_drop": 0.05}}, "cfg")
    ... # doctest: +NORMALIZE_WHITESPACE
    [Rule(metric='rankme_frac', kind='min', bound=0.1, strict=False, origin='cfg'),
     Rule(metric='vne', kind='max_drop', bound=0.05, strict=False, origin='cfg')]
    """
    if not isinstance(table, Mapping):
        raise ConfigError(f"{where} must be a table of metric = {{ min = ... }}", source=source)
    rules = []
    for name, bounds in table.items():
        check_metric(name, source)
        if not isinstance(bounds, Mapping) or not [k for k in bounds if k not in MODIFIERS]:
            raise ConfigError(f"{where} {name} must be a table such as {{ min = 0.1 }}",
                              source=source, hint="keys: " + ", ".join(KINDS + MODIFIERS))
        mods = se_modifiers(bounds, name, source, defaults)
        for kind, raw in bounds.items():
            if kind in MODIFIERS:
                continue
            if kind not in KINDS:
                raise unknown_key(kind, KINDS + MODIFIERS, f"{where} {name}", source)
            rules.append(Rule(name, kind, _number(raw, f"{name}.{kind}", source),
                              origin=source, **mods))
        if "min" in bounds and "max" in bounds and float(bounds["min"]) > float(bounds["max"]):
            raise ConfigError(f"{name}: min {bounds['min']} is above max {bounds['max']}",
                              source=source)
    return rules


_FAIL_IF = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_]*)\s*(<=|>=|<|>)\s*(\S+)\s*$")


def parse_fail_if(expr: str, source: str = "--fail-if") -> Rule:
    """A rule from ``"METRIC OP NUMBER"``: the gate fails when the comparison is true.

    >>> parse_fail_if("rankme < 64")
    Rule(metric='rankme', kind='min', bound=64.0, strict=False, origin='--fail-if')
    >>> parse_fail_if("avg_cosine >= 0.5").describe()
    'avg_cosine < 0.5'
    """
    match = _FAIL_IF.match(expr)
    if not match:
        raise UsageError(f"cannot read fail-if rule {expr!r}", source=source,
                         hint='write METRIC OP NUMBER with OP one of < <= > >=, e.g. '
                              '"rankme < 64"')
    name, op, number = match.groups()
    check_metric(name, source)
    try:
        bound = float(number)
    except ValueError:
        raise UsageError(f"{number!r} in {expr!r} is not a number", source=source) from None
    kind = "min" if op.startswith("<") else "max"
    return Rule(name, kind, bound, strict=op in ("<=", ">="), origin=source)


def parse_gate_table(table: object, source: str, base_dir: Path | None = None) -> GateConfig:
    """A :class:`GateConfig` from a gate table (``rules``, ``fail_if``, ``preset``,
    ``baseline``); unknown keys are errors that list the valid ones."""
    if not isinstance(table, Mapping):
        raise ConfigError("the gate section must be a table", source=source)
    for key in table:
        if key not in TABLE_KEYS:
            raise unknown_key(key, TABLE_KEYS, "the gate table", source)
    defaults = se_modifiers(table, "[gate]", source)
    rules = parse_rules(table.get("rules", {}), source, defaults=defaults)
    fail_if = table.get("fail_if", [])
    if isinstance(fail_if, str):
        fail_if = [fail_if]
    if not isinstance(fail_if, list) or not all(isinstance(e, str) for e in fail_if):
        raise ConfigError("fail_if must be a list of strings such as \"rankme < 64\"",
                          source=source)
    rules += [replace(parse_fail_if(e, source), **defaults) for e in fail_if]
    preset = table.get("preset")
    if preset is not None:
        if preset not in PRESETS:
            raise ConfigError(f"unknown preset {preset!r}", source=source,
                              hint="valid: " + ", ".join(PRESETS))
        rules = [*(replace(r, **defaults) for r in PRESETS[preset]), *rules]
    baseline = table.get("baseline")
    if baseline is not None and not isinstance(baseline, str):
        raise ConfigError("baseline must be a path (a string)", source=source)
    if baseline and base_dir is not None and not Path(baseline).is_absolute():
        baseline = str(base_dir / baseline)
    return GateConfig(tuple(rules), baseline, source, defaults)


def _read_toml(path: Path) -> dict[str, Any]:
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover - Python 3.10
        try:
            import tomli as tomllib
        except ImportError:
            raise ConfigError("reading TOML needs Python ≥ 3.11 or the tomli package",
                              source=str(path), hint="pip install tomli") from None
    if os.path.lexists(path) and not path.is_dir():  # a FIFO would block in open()
        check_regular_file(path, str(path), "a config file")
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError("no such config file", source=str(path),
                          hint="check the --config path") from None
    except IsADirectoryError:
        raise ConfigError("is a folder, not a config file", source=str(path)) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"is not valid TOML ({exc})", source=str(path),
                          hint="fix the syntax (https://toml.io)") from None
    except UnicodeDecodeError:
        raise ConfigError("is not valid TOML (not UTF-8 text)", source=str(path)) from None


def load_config(path: str | os.PathLike[str]) -> GateConfig:
    """Read the gate table of a TOML file: ``[gate]``, or ``[tool.reprdiag.gate]`` (as in
    ``pyproject.toml``). A relative ``baseline`` is relative to the file's folder."""
    path = Path(path)
    data = _read_toml(path)
    table = data.get("gate")
    if table is None:
        table = data.get("tool", {}).get("reprdiag", {}).get("gate")
    if table is None:
        raise ConfigError("has no [gate] or [tool.reprdiag.gate] table", source=str(path),
                          hint="add one, e.g. [gate.rules] rankme_frac = { min = 0.1 }")
    return parse_gate_table(table, str(path), path.parent)


def find_config(cwd: str | os.PathLike[str] = ".") -> Path | None:
    """``reprdiag.toml`` in ``cwd``, else ``pyproject.toml`` when it has a
    ``[tool.reprdiag.gate]`` table, else ``None``."""
    folder = Path(cwd)
    if (folder / CONFIG_NAME).is_file():
        return folder / CONFIG_NAME
    pyproject = folder / "pyproject.toml"
    if pyproject.is_file():
        data = _read_toml(pyproject)
        if data.get("tool", {}).get("reprdiag", {}).get("gate") is not None:
            return pyproject
    return None


def resolve_rules(config: GateConfig | None, fail_if: Sequence[str | Rule] = ()
                  ) -> list[Rule]:
    """The config's rules plus the ``--fail-if`` ones; the default preset when both are
    empty."""
    rules = list(config.rules) if config else []
    defaults = config.se_defaults if config else {}
    rules += [replace(r if isinstance(r, Rule) else parse_fail_if(r), **defaults)
              for r in fail_if]
    if not rules and defaults:
        given = ", ".join(f"{k} = {v:g}" for k, v in defaults.items())
        raise ConfigError(f"{given} in the gate table has no rule to apply to",
                          source=config.source if config else None,
                          hint='add [gate.rules], fail_if or preset = "collapse"')
    return rules or list(PRESETS[DEFAULT_PRESET])


def needed_metrics(rules: Iterable[Rule]) -> list[str]:
    """The registered metrics the rules read (what an on-the-fly analysis must compute).

    >>> needed_metrics(PRESETS["collapse"])
    ['std_normalized', 'effective_rank']
    """
    return list(dict.fromkeys(base_metric(r.metric) for r in rules))


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
