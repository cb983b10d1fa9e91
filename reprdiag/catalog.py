"""What each metric is, without importing the metrics (and torch): ``reprdiag list-metrics``.

Two files are generated from the metric registry, which stays the one source:
``reprdiag/catalog.json`` (read by ``list-metrics``) and, in a source checkout,
``docs/metrics.md`` (the metrics reference: formula, range, direction, complexity and
citation of each metric, from its registry entry and docstring). ``python -m reprdiag.catalog``
rewrites both; ``python -m reprdiag.catalog --markdown`` prints the reference instead.
``tests/test_catalog.py`` fails when either file disagrees with the registry.

>>> [m["name"] for m in read_catalog()][:3]
['vne', 'vne_normalized', 'effective_rank']
"""

from __future__ import annotations

import importlib
import inspect
import json
import re
import sys
from importlib import resources
from pathlib import Path
from typing import Any

#: The fields of each entry, as ``list-metrics --format json`` gives them.
FIELDS = ("name", "summary", "range", "direction", "citation", "uses_sample", "discrete",
          "options")
CATALOG = "catalog.json"
#: the metrics reference, relative to the repository root (beside the package)
REFERENCE = Path("docs") / "metrics.md"

_DIRECTION = {"higher": "↑ higher is healthier", "lower": "↓ lower is healthier",
              "neutral": "· neither (no healthier direction)"}
_NEEDS = {"classes": "`--labels` (class ids of the rows)",
          "pair": "`--pair` (a second, row-aligned view)"}
_SEE = re.compile(r"see\s+:func:`~?([\w.]+)`")
_ROLE = re.compile(r":(?:func|mod|class|meth|attr|data):`~?([\w.]+)`")

_PREAMBLE = """\
# Metrics reference

<!-- Generated from the metric registry by `python -m reprdiag.catalog`: do not edit by hand.
     tests/test_catalog.py fails when this file is stale. -->

Every metric reprdiag computes, in the order of the tables. Each entry comes from the metric's
registry entry (`reprdiag.metrics.METRICS[name]`: summary, range, direction, citation) and
its docstring (formula, range, complexity, citation). `reprdiag list-metrics` prints the same
list; `reprdiag list-metrics --format json` gives it as data.

Notation: X is N×d (one sample per row), z_i = x_i/‖x_i‖ (the zero vector for a row that is
exactly zero, at any scale), C the unbiased covariance with eigenvalues λ₁ ≥ … ≥ 0, σ_k the
singular values of raw (uncentred) X, ρ = ZᵀZ/N with eigenvalues η_k. Logs are natural and
0·ln 0 = 0. Spectra keep min(N, d) values. M is the row sample (`--sample-size`, all rows
when N ≤ M). The exact definitions, with reference values at
`numpy.random.default_rng(0).standard_normal((64, 16))`, are in [design.md](design.md) §3;
how these values relate to other implementations of the same metrics is in
[implementations.md](implementations.md); which metrics to read first, in the
[README](../README.md#reading-your-report).
"""


def read_catalog() -> list[dict[str, Any]]:
    """Every metric's entry, in the order of the tables."""
    text = resources.files("reprdiag").joinpath(CATALOG).read_text(encoding="utf-8")
    return json.loads(text)


def from_registry() -> list[dict[str, Any]]:
    """The entries as the registry has them (imports every metric, and torch)."""
    from reprdiag.metrics.registry import resolve

    return [{f: (list(v) if isinstance(v := getattr(info, f), tuple) else v) for f in FIELDS}
            for info in resolve(None)]


def catalog_text() -> str:
    """``catalog.json`` as it should read."""
    return json.dumps(from_registry(), indent=1, ensure_ascii=False) + "\n"


def prose(doc: str) -> str:
    """A docstring as Markdown prose: doctests dropped, reST literals and roles as code spans,
    ``<`` and ``*`` escaped so that GitHub shows them as written.

    >>> prose("Σ_W for N<d; see :func:`~a.b.nc1` and ``x*y``.\\n\\n>>> f(1)\\n2")
    'Σ_W for N\\\\<d; see `nc1` and `x*y`.'
    """
    lines: list[str] = []
    for line in doc.splitlines():
        if line.lstrip().startswith(">>>"):
            break
        lines.append(line)
    text = "\n".join(lines).strip()
    text = _ROLE.sub(lambda m: f"``{m.group(1).rsplit('.', 1)[-1]}``", text)
    parts = re.split(r"``(.+?)``", text, flags=re.S)  # odd parts are code: left as they are
    for i in range(0, len(parts), 2):
        parts[i] = parts[i].replace("<", "\\<").replace("*", "\\*")
    return "".join(f"`{p}`" if i % 2 else p for i, p in enumerate(parts))


def _referenced(func: Any) -> list[Any]:
    """The functions a docstring defers to ("see :func:`nc1`"), followed two levels deep."""
    found: list[Any] = []
    todo = [func]
    for _ in range(2):
        nxt = []
        for f in todo:
            module = sys.modules.get(getattr(f, "__module__", ""))
            for name in _SEE.findall(inspect.getdoc(f) or ""):
                mod, _, attr = name.rpartition(".")
                target = getattr(importlib.import_module(mod), attr, None) if mod else None
                target = target or getattr(module, attr, None)
                if callable(target) and target is not func and target not in found:
                    found.append(target)
                    nxt.append(target)
        todo = nxt
    return found


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def _entry(info: Any) -> str:
    """One metric's section of the reference."""
    facts = [f"- **Range:** `{info.range}`", f"- **Direction:** {_DIRECTION[info.direction]}",
             f"- **Citation:** {info.citation}"]
    source = ("the row sample (`--sample-size` rows; all rows when N ≤ M)" if info.uses_sample
              else "the streamed moments of all N rows")
    if info.derived_from:
        source = (f"`{info.derived_from}` of the same input; computed only when named "
                  f"(`--metrics {info.name}`)")
    elif info.needs:
        source += ", and the statistics " + _NEEDS[info.needs] + " streams"
    facts.append(f"- **Computed from:** {source}")
    if info.options:
        facts.append("- **Options:** " + ", ".join(f"`{o}`" for o in info.options))
    if info.discrete:
        facts.append("- **Integer-valued:** `--uncertainty` gives it no standard error")
    body = [prose(inspect.getdoc(info.func) or "")]
    for target in _referenced(info.func):
        body.append(f"From `{target.__module__}.{target.__name__}`: "
                    + prose(inspect.getdoc(target) or ""))
    return (f"### `{info.name}`\n\n{info.summary}.\n\n" + "\n".join(facts) + "\n\n"
            + "\n\n".join(body) + "\n")


def metrics_markdown() -> str:
    """``docs/metrics.md`` as it should read (imports every metric, and torch)."""
    from reprdiag.metrics.registry import resolve

    infos = resolve(None)
    arrow = {"higher": "↑", "lower": "↓", "neutral": "·"}
    table = ["| metric | what it measures | range | dir | citation |", "|---|---|---|---|---|"]
    table += [f"| [`{i.name}`](#{i.name}) | {_cell(i.summary)} | {_cell(i.range)} | "
              f"{arrow[i.direction]} | {_cell(i.citation)} |" for i in infos]
    return (_PREAMBLE + "\n" + "\n".join(table) + "\n\n## Definitions\n\n"
            + "\n".join(_entry(i) for i in infos))


def reference_path() -> Path | None:
    """``docs/metrics.md`` of the source checkout this package runs from, if there is one."""
    root = Path(__file__).resolve().parents[1]
    return root / REFERENCE if (root / "docs").is_dir() else None


def main(argv: list[str]) -> None:
    """Rewrite ``catalog.json`` and ``docs/metrics.md``, or print the reference (``--markdown``)."""
    if "--markdown" in argv:
        sys.stdout.write(metrics_markdown())
        return
    Path(__file__).with_name(CATALOG).write_text(catalog_text(), encoding="utf-8")
    if (path := reference_path()) is not None:
        path.write_text(metrics_markdown(), encoding="utf-8")


if __name__ == "__main__":
    main(sys.argv[1:])
