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
from reprdiag.loaders import check_regular_file
from reprdiag.report.schema import validate_report
from reprdiag.results import Report

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

        return metrics_frame(load_report(file))
    raise InputError("is not a reprdiag report, comparison or gate result",
                     source=source_label(file),
                     hint="pass report.json, compare.json or the output of gate --format json")


def load_report(path: str | os.PathLike[str]) -> Report:
    """Read a ``report.json`` (or the one inside a run folder), validated against its JSON
    Schema (:mod:`reprdiag.report.schema`): exit 2 naming the first bad field."""
    path = Path(path)
    if path.is_dir():
        path = path / "report.json"
    if os.path.lexists(path) and not path.is_dir():  # a FIFO would block in open()
        check_regular_file(path, what="a report.json")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise InputError("no report.json here", source=source_label(path.parent),
                         hint="pass a run folder written by analyze --out, or a file"
                         ) from exc
    except IsADirectoryError as exc:
        raise InputError("is a folder, not a report", source=source_label(path),
                         hint="re-run reprdiag analyze --out to rewrite it") from exc
    except (json.JSONDecodeError, UnicodeDecodeError, ValueError) as exc:
        raise InputError(f"is not a valid reprdiag report ({exc})",
                         source=source_label(path),
                         hint="re-run reprdiag analyze --out to rewrite it") from exc
    validate_report(data, path)
    return Report.from_dict(data)


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
