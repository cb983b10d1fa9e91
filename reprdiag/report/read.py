"""Reading saved results back as pandas frames: ``reprdiag.read_report(path)``.

``pd.read_json("report.json")`` cannot read a report (its inputs hold nested spectra of
different lengths); :func:`read_report` gives the flat table a person wants from each kind of
result, the same one the matching CSV holds:

- ``report.json`` (``analyze --out``): one row per input, as ``metrics.csv``;
- ``compare.json`` (``compare --out``): one row per input, metric and run, as ``compare.csv``;
- a gate result (``gate --format json``): one row per rule and input.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pandas as pd

from reprdiag.errors import InputError, source_label

#: What a run folder is searched for, in this order.
RESULT_FILES = ("report.json", "compare.json")


def read_report(path: str | os.PathLike[str]) -> pd.DataFrame:
    """The table of a saved result: a run folder (``report.json`` or ``compare.json`` in it),
    or one of those files, or a gate result saved from ``gate --format json``.

    Missing values (``null`` in the JSON) are NaN. For every field of a report (spectra,
    timings, options), flatten the JSON yourself: ``pd.json_normalize(data["inputs"])``.
    """
    file = _result_file(Path(path))
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"cannot be read as a reprdiag result ({exc})",
                         source=source_label(file),
                         hint="pass a run folder or the report.json inside it") from exc
    if isinstance(data, dict) and "rows" in data and "runs" in data:
        return _frame(data["rows"])
    if isinstance(data, dict) and "checks" in data and "passed" in data:
        return _frame(data["checks"])
    if isinstance(data, dict) and "inputs" in data:
        from reprdiag.report.export import metrics_frame
        from reprdiag.report.model import Report

        return metrics_frame(Report.load(file))
    raise InputError("is not a reprdiag report, comparison or gate result",
                     source=source_label(file),
                     hint="pass report.json, compare.json or the output of gate --format json")


def _result_file(path: Path) -> Path:
    if not path.is_dir():
        if not path.exists():
            raise InputError("no such file", source=source_label(path), hint="check the path")
        return path
    for name in RESULT_FILES:
        if (path / name).is_file():
            return path / name
    raise InputError(f"holds neither {' nor '.join(RESULT_FILES)}", source=source_label(path),
                     hint="pass a folder written by analyze --out or compare --out")


def _frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    """Rows of a JSON table; pandas reads ``None`` in a numeric column as NaN."""
    return pd.DataFrame(rows)
