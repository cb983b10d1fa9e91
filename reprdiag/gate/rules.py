"""The rule vocabulary of the gate: which names a rule may bound, how it reads a value (and its
standard error) from an input, and the built-in presets. The rule itself, :class:`Rule`, is a
result type (a :class:`~reprdiag.results.Check` names its rule): :mod:`reprdiag.results`.

Rank-like metrics also exist scaled by the size of the input, ``<metric>_frac = <metric> /
min(N, d)`` (e.g. ``rankme_frac``), registered in the metric registry
(:func:`reprdiag.metrics.registry.register_fractions`) so ``analyze --metrics rankme_frac``
computes them too; a rule on one reads it from the run, or from its base metric in a run
analyzed without it.
"""

from __future__ import annotations

from collections.abc import Iterable

from reprdiag.errors import ConfigError, InputError, did_you_mean
from reprdiag.metrics import METRICS, resolve
from reprdiag.results import InputResult, Rule


def metric_names() -> list[str]:
    """Every name a rule may bound: the registered metrics, ``_frac`` scalings included.

    >>> [n for n in metric_names() if n.startswith("rankme")]
    ['rankme', 'rankme_frac']
    """
    return [info.name for info in resolve(None)]


def base_metric(name: str) -> str:
    """The metric a rule's name is derived from (``rankme_frac`` → ``rankme``), else itself.

    >>> base_metric("rankme_frac"), base_metric("cov_offdiag_frac")
    ('rankme', 'cov_offdiag_frac')
    """
    info = METRICS.get(name)
    return info.derived_from if info is not None and info.derived_from else name


def metric_value(result: InputResult, name: str, source: str = "") -> float:
    """The value a rule reads from one input: a metric; a ``_frac`` metric is its base metric
    scaled by min(N, d) (or its own value, in a run analyzed with it but not its base).

    >>> r = InputResult("x", n=100, d=50, dtype="f", metrics={"rankme": 25.0}, spectra={},
    ...                 solver={})
    >>> metric_value(r, "rankme_frac")
    0.5
    """
    base = base_metric(name)
    if base in result.metrics:
        value = result.metrics[base]
        return value / min(result.n, result.d) if base != name else value
    if name in result.metrics:
        return result.metrics[name]
    raise InputError(f"has no value of {base!r}", source=source or result.name,
                     hint="re-run reprdiag analyze without --metrics, or with this metric")


def metric_se(result: InputResult, name: str) -> float:
    """The standard error of what a rule reads (NaN when the run carries none).

    >>> r = InputResult("x", n=100, d=50, dtype="f", metrics={"rankme": 25.0}, spectra={},
    ...                 solver={}, uncertainty={"rankme": {"se": 2.0}})
    >>> metric_se(r, "rankme"), metric_se(r, "rankme_frac"), metric_se(r, "vne")
    (2.0, 0.04, nan)
    """
    base = base_metric(name)
    if base != name and base not in result.uncertainty and name in result.uncertainty:
        return result.se(name)
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


def needed_metrics(rules: Iterable[Rule]) -> list[str]:
    """The registered metrics the rules read (what an on-the-fly analysis must compute).

    >>> needed_metrics(PRESETS["collapse"])
    ['std_normalized', 'effective_rank']
    """
    return list(dict.fromkeys(base_metric(r.metric) for r in rules))
