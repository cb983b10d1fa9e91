"""What each metric is, without importing the metrics (and torch): ``reprdiag list-metrics``.

``catalog.json`` is generated from the registry (``python -m reprdiag.catalog``);
``tests/test_catalog.py`` fails when they disagree, so the registry stays the one source.

>>> [m["name"] for m in read_catalog()][:3]
['vne', 'vne_normalized', 'effective_rank']
"""

from __future__ import annotations

import json
from importlib import resources
from typing import Any

#: The fields of each entry, as ``list-metrics --format json`` gives them.
FIELDS = ("name", "summary", "range", "direction", "citation", "uses_sample", "discrete",
          "options")
CATALOG = "catalog.json"


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


if __name__ == "__main__":  # regenerate catalog.json beside this file
    from pathlib import Path

    Path(__file__).with_name(CATALOG).write_text(catalog_text(), encoding="utf-8")
