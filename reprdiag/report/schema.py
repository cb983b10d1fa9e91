"""The JSON Schema of ``report.json`` (schema version 1), and its validation.

``compare`` and ``gate`` read saved runs: a report that does not match the schema (a wrong
schema version, no inputs, ``n`` as text or 0, a metric name this version does not know)
is refused with the JSON path of the first problem, never half-read.
"""

from __future__ import annotations

from typing import Any

from reprdiag.errors import InputError, source_label
from reprdiag.results import SCHEMA_VERSION

_NUMBER_OR_NULL = {"type": ["number", "null"]}
_COUNT = {"type": "integer", "minimum": 0}
_NUMBERS = {"type": "array", "items": _NUMBER_OR_NULL}


def report_schema(metric_names: list[str]) -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of a report whose metrics are among ``metric_names``."""
    result = {
        "type": "object",
        "required": ["name", "n", "d", "dtype", "metrics", "spectra", "solver"],
        "properties": {
            "name": {"type": "string", "minLength": 1},
            "n": {"type": "integer", "minimum": 2},
            "d": {"type": "integer", "minimum": 1},
            "dtype": {"type": "string"},
            "metrics": {"type": "object", "minProperties": 1,
                        "propertyNames": {"enum": metric_names},
                        "additionalProperties": _NUMBER_OR_NULL},
            "spectra": {"type": "object", "additionalProperties": _NUMBERS},
            "solver": {"type": "object", "additionalProperties": {"type": "string"}},
            "path": {"type": ["string", "null"]},
            "key": {"type": ["string", "null"]},
            "file_size": {"type": ["integer", "null"], "minimum": 0},
            "sample_size": _COUNT,
            "rows_dropped": _COUNT,
            "zero_rows": _COUNT,
            "timings": {"type": "object", "additionalProperties": {"type": "number"}},
            "warnings": {"type": "array", "items": {"type": "string"}},
            "uncertainty": {"type": "object", "propertyNames": {"enum": metric_names},
                            "additionalProperties": {"type": "object",
                                                     "additionalProperties": _NUMBER_OR_NULL}},
            "uncertainty_method": {"type": "object"},
            "spectra_se": {"type": "object", "additionalProperties": _NUMBERS},
        },
    }
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "reprdiag report.json",
        "type": "object",
        "required": ["schema", "inputs"],
        "properties": {
            "schema": {"const": SCHEMA_VERSION},
            "tool": {"const": "reprdiag"},
            "version": {"type": "string"},
            "created": {"type": "string"},
            "command": {"type": "array", "items": {"type": "string"}},
            "device": {"type": "string"},
            "options": {"type": "object"},
            "timings": {"type": "object", "additionalProperties": {"type": "number"}},
            "world_size": {"type": "integer", "minimum": 1},
            "inputs": {"type": "array", "minItems": 1, "items": result},
        },
    }


def json_path(parts: Any) -> str:
    """A jsonschema error path as ``inputs[0].metrics.rankme`` (``.`` for the document).

    >>> json_path(["inputs", 0, "n"]), json_path([])
    ('inputs[0].n', '.')
    """
    text = ""
    for part in parts:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "."


def _problem(error: Any) -> str:
    path = json_path(error.absolute_path)
    if error.validator == "const" and list(error.absolute_path) == ["schema"]:
        return f"schema: {error.instance!r}, but this reprdiag reads schema {SCHEMA_VERSION} only"
    if error.validator == "required":
        missing = next(k for k in error.validator_value if k not in error.instance)
        return ("" if path == "." else f"{path}: ") + f"missing field {missing!r}"
    if error.validator == "propertyNames":  # the message names the key, not the enum
        return f"{path}: unknown metric {error.instance!r}"
    if error.validator == "enum" and error.path and "metrics" in list(error.absolute_path):
        return f"{path}: unknown metric {error.instance!r}"
    message = error.message if len(error.message) <= 160 else error.message[:157] + "..."
    return f"{path}: {message}"


def validate_report(data: object, source: object) -> None:
    """Raise :class:`InputError` (exit 2) naming the first place where ``data`` (a parsed
    ``report.json``) breaks :func:`report_schema`."""
    from jsonschema import Draft202012Validator
    from jsonschema.exceptions import best_match

    from reprdiag.metrics import METRICS

    validator = Draft202012Validator(report_schema(list(METRICS)))
    errors = list(validator.iter_errors(data))
    # a report of another schema version fails for that reason first, whatever else differs
    error = next((e for e in errors if list(e.absolute_path) == ["schema"]), None) or \
        best_match(errors)
    if error is not None:
        raise InputError(f"is not a valid reprdiag report ({_problem(error)})",
                         source=source_label(source),
                         hint="re-run reprdiag analyze --out to rewrite it")
