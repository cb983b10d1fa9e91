"""The catalog that ``list-metrics`` reads without importing torch matches the registry."""

from __future__ import annotations

from typer.testing import CliRunner

from reprdiag.catalog import catalog_text, from_registry, read_catalog
from reprdiag.cli import app
from reprdiag.metrics import METRICS


def test_catalog_json_is_the_registry() -> None:
    assert read_catalog() == from_registry(), (
        "reprdiag/catalog.json is stale: run `python -m reprdiag.catalog` and commit it")
    assert [m["name"] for m in read_catalog()] == [m["name"] for m in from_registry()]
    assert {m["name"] for m in read_catalog()} == set(METRICS)
    assert catalog_text().endswith("]\n")


def test_list_metrics_json_gives_every_field() -> None:
    import json

    result = CliRunner().invoke(app, ["list-metrics", "--format", "json"])
    assert result.exit_code == 0, result.output
    entries = json.loads(result.stdout)
    assert [e["name"] for e in entries] == [m["name"] for m in from_registry()]
    vne = entries[0]
    assert vne["direction"] == METRICS["vne"].direction
    assert vne["citation"] == METRICS["vne"].citation and vne["range"] == METRICS["vne"].range
