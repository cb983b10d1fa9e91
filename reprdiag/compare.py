"""Compare runs: each metric's value per run, its change against the first run, and a verdict.

Inputs are matched across runs by key (``layer_3`` with ``layer_3``); runs that hold one
input each are matched whatever their keys. Δ = value − reference value, exactly (a run
compared with itself gives Δ = 0); Δ% = 100·Δ/|reference value|. Each change is ``better``,
``worse`` or ``neutral`` by the metric's direction (METRICS[name].direction), ``same`` when
Δ = 0 and ``n/a`` when a value is missing. When the runs carry jackknife standard errors
(``analyze --uncertainty``), z = Δ/√(se_ref² + se_run²) and a change with |z| < 2
(``noise_z``) is ``within noise``: the verdict speaks only of the others.

>>> import torch, reprdiag
>>> x = torch.randn(200, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
>>> cmp = reprdiag.compare([x, x[:, :2]], metrics=["rankme"], device="cpu")
>>> row = cmp.frame.iloc[-1]
>>> row["run"], row["change"], bool(row["delta"] < 0)
('run2', 'worse', True)
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from reprdiag.defaults import NOISE_Z
from reprdiag.errors import InputError, UsageError
from reprdiag.metrics import resolve
from reprdiag.pipeline import joined
from reprdiag.results import Comparison, InputResult, Report
from reprdiag.runs import RunLike, input_key, load_run, run_label, unique_labels

#: How inputs are matched across runs: by exact key, or by the key's last path component.
MATCHES = ("key", "suffix")


def match_key(result: InputResult, match: str = "key") -> str:
    """What an input is matched by: its key (``match="key"``), or the key's last path
    component (``"suffix"``: ``hidden_states/layer_3`` pairs with ``layer_3``).

    >>> r = InputResult("a.h5[hidden_states/layer_3]", 1, 1, "float32", {}, {}, {},
    ...                 key="hidden_states/layer_3")
    >>> match_key(r), match_key(r, "suffix")
    ('hidden_states/layer_3', 'layer_3')
    """
    key = input_key(result)
    return key.rsplit("/", 1)[-1] if match == "suffix" else key


def _keyed(report: Report, label: str, match: str) -> dict[str, InputResult]:
    keyed: dict[str, InputResult] = {}
    for r in report.inputs:
        k = match_key(r, match)
        if k in keyed:
            raise InputError(f"inputs {input_key(keyed[k])} and {input_key(r)} both end in "
                             f"{k!r}", source=label, hint="match them by full key (--match "
                             "key), or pick one with --key")
        keyed[k] = r
    return keyed


def match_inputs(reports: Sequence[Report], labels: Sequence[str], match: str = "key"
                 ) -> tuple[dict[str, list[InputResult]], list[str]]:
    """Pair the inputs of several runs: ``{key: [result in run 0, run 1, ...]}`` plus notes
    on inputs that only some runs hold.

    Runs holding a single input each are paired whatever their keys; otherwise inputs are
    matched by key (``match="suffix"``: by the key's last path component), in the first
    run's order.
    """
    if match not in MATCHES:
        raise UsageError(f"unknown --match {match!r}", hint=f"use one of {', '.join(MATCHES)}")
    if all(len(r.inputs) == 1 for r in reports):
        return {input_key(reports[0].inputs[0]): [r.inputs[0] for r in reports]}, []
    keyed = [_keyed(rep, lab, match) for rep, lab in zip(reports, labels, strict=True)]
    common = [k for k in keyed[0] if all(k in run for run in keyed)]
    if not common:
        listing = "; ".join(f"{lab}: {', '.join(run) or '-'}" for lab, run in zip(
            labels, keyed, strict=True))
        suffix = "" if match == "suffix" else "; keys that differ by a prefix pair with "\
            "--match suffix"
        raise InputError("the runs share no input key", source=", ".join(labels),
                         hint=f"pick one input of each with --key ({listing}){suffix}")
    notes = []
    for key in dict.fromkeys(k for run in keyed for k in run):
        if key not in common:
            holders = [lab for lab, run in zip(labels, keyed, strict=True) if key in run]
            notes.append(f"{key} only in {', '.join(holders)}; skipped")
    return {k: [run[k] for run in keyed] for k in common}, notes


def compare(runs: Sequence[RunLike], *, keys: Sequence[str] | None = None,
            labels: Sequence[str] | None = None, noise_z: float = NOISE_Z, match: str = "key",
            **analyze_options: Any) -> Comparison:
    """Compare two or more runs against the first.

    Each run is a run folder (``report.json``), a report file, an embedding file or tensor
    (analyzed with :func:`reprdiag.analyze` and ``analyze_options``), or a :class:`Report`.
    ``keys`` picks the inputs to compare and ``metrics`` (an analyze option) the metrics
    shown. A path given twice is read once. With standard errors (runs analyzed with
    ``uncertainty=True``), changes with |z| < ``noise_z`` are "within noise". ``match="suffix"``
    pairs inputs whose keys differ by a prefix (``hidden_states/layer_3`` with ``layer_3``).
    """
    if not (math.isfinite(noise_z) and noise_z > 0):
        raise UsageError(f"--noise-z must be a positive number, got {noise_z}",
                         hint=f"the default is {NOISE_Z:g} standard errors")
    if len(runs) < 2:
        raise UsageError(f"compare needs at least two runs, got {len(runs)}",
                         hint="reprdiag compare A B [C ...]")
    only = analyze_options.get("metrics")
    if only:
        resolve(only)  # unknown names fail before any reading
    with joined(analyze_options) as options:  # torchrun: one process group for every run
        reports = _load_all(runs, keys, options)
    names = unique_labels(labels or [run_label(run, i) for i, run in enumerate(runs)])
    matched, notes = match_inputs(reports, names, match)
    comparison = Comparison(runs=names, inputs=matched, notes=notes,
                            only=list(only) if only else None, noise_z=noise_z)
    for key, results in matched.items():
        if comparison.shapes_differ(key):
            shapes = ", ".join(f"{lab} {r.n}×{r.d}" for lab, r in zip(names, results,
                                                                     strict=True))
            comparison.notes.append(f"{key}: runs differ in N × d ({shapes}); rank and entropy "
                                    "values scale with min(N, d)")
    return comparison


def _load_all(runs: Sequence[RunLike], keys: Sequence[str] | None,
              analyze_options: dict[str, Any]) -> list[Report]:
    """Load (or analyze) each run once, however often it is named."""
    cache: dict[object, Report] = {}
    reports = []
    for run in runs:
        ident = str(Path(run).resolve()) if isinstance(run, str | os.PathLike) else id(run)
        if ident not in cache:
            cache[ident] = load_run(run, keys, **analyze_options)
        reports.append(cache[ident])
    return reports
