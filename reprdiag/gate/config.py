"""The gate's configuration: a TOML gate table (``[gate]`` in ``reprdiag.toml`` or
``[tool.reprdiag.gate]`` in ``pyproject.toml``), ``--fail-if "rankme < 64"`` expressions and
presets, parsed into :class:`~reprdiag.results.Rule` s; unknown keys and names are errors that
list the valid ones.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from reprdiag.errors import ConfigError, UsageError
from reprdiag.gate.rules import DEFAULT_PRESET, PRESETS, check_metric
from reprdiag.loaders import check_regular_file
from reprdiag.results import KINDS, MODIFIERS, Rule, check_se_modifier, unknown_key

#: Keys of the gate table; the rules go in its ``rules`` sub-table; ``margin_se``/``max_se``
#: here are defaults for every rule.
TABLE_KEYS = ("rules", "fail_if", "preset", "baseline", *MODIFIERS)
CONFIG_NAME = "reprdiag.toml"


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
