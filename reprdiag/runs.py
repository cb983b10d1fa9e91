"""Runs: what ``compare`` and ``gate`` accept — a run folder, a ``report.json``, an embedding
file or tensor (analyzed on the fly), or a :class:`Report` — turned into a :class:`Report`.

>>> import torch
>>> rep = load_run(torch.eye(3, dtype=torch.float64), metrics=["vne"], device="cpu")
>>> [r.name for r in rep.inputs], round(rep.inputs[0].metrics["vne"], 6)
(['tensor'], 1.098612)
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import replace
from pathlib import Path
from typing import Any

from reprdiag.api import Input, analyze
from reprdiag.distributed.context import DistributedContext
from reprdiag.errors import InputError, source_label
from reprdiag.report.read import load_report
from reprdiag.results import InputResult, Report

RunLike = Input | Report


def is_report_path(path: Path) -> bool:
    """True for a run folder (holding ``report.json``) or a ``.json`` report file."""
    return path.is_dir() or path.suffix.lower() == ".json"


def input_key(result: InputResult) -> str:
    """The name inputs are matched by across runs: the array's key, else its full name."""
    return result.key or result.name


def select(report: Report, keys: Sequence[str] | None, source: str) -> Report:
    """The report restricted to the inputs named in ``keys`` (by key or full name)."""
    if not keys:
        return report
    picked = []
    for key in keys:
        match = [r for r in report.inputs if key in (r.key, r.name)]
        if not match:
            have = ", ".join(input_key(r) for r in report.inputs)
            raise InputError(f"has no input {key!r}", source=source, hint=f"it has: {have}")
        picked.extend(match)
    return replace(report, inputs=picked)


def load_run(run: RunLike, keys: Sequence[str] | None = None, **analyze_options: Any
             ) -> Report:
    """The :class:`Report` of one run.

    A folder or ``.json`` file is read as a saved report (``keys`` picks inputs); anything
    else is analyzed with :func:`reprdiag.analyze` and ``analyze_options``. Under
    ``torchrun`` (a ``DistributedContext`` as ``distributed``) the ranks agree on reading
    it: a report one rank cannot read fails every rank, instead of leaving the others
    waiting in the next analysis.
    """
    if isinstance(run, Report):
        return select(run, keys, "report")
    if isinstance(run, str | os.PathLike) and is_report_path(Path(run)):
        ctx = analyze_options.get("distributed")
        with ctx.agree() if isinstance(ctx, DistributedContext) else nullcontext():
            report = load_report(run)
        return select(report, keys, source_label(run))
    return analyze(run, keys=keys, **analyze_options)


def run_label(run: RunLike, index: int) -> str:
    """A short name for a run: the folder or file name (``run1``... for other objects).

    >>> run_label("runs/baseline", 0), run_label("runs/A/report.json", 1), run_label(3, 2)
    ('baseline', 'A', 'run3')
    """
    if isinstance(run, str | os.PathLike):
        path = Path(run)
        return path.parent.name if path.name == "report.json" else path.name
    return f"run{index + 1}"


def unique_labels(labels: Sequence[str]) -> list[str]:
    """Make labels distinct by suffixing repeats with ``#2``, ``#3``...

    >>> unique_labels(["a", "b", "a"])
    ['a', 'b', 'a#2']
    """
    seen: dict[str, int] = {}
    out = []
    for label in labels:
        seen[label] = seen.get(label, 0) + 1
        out.append(label if seen[label] == 1 else f"{label}#{seen[label]}")
    return out
