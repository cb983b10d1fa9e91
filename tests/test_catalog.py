"""The catalog that ``list-metrics`` reads without importing torch, and the metrics reference
``docs/metrics.md``, match the registry."""

from __future__ import annotations

from typer.testing import CliRunner

from reprdiag.catalog import (
    catalog_text,
    from_registry,
    metrics_markdown,
    read_catalog,
    reference_path,
)
from reprdiag.cli import app
from reprdiag.metrics import METRICS
from reprdiag.metrics.registry import resolve


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


def test_metrics_reference_is_the_registry() -> None:
    path = reference_path()
    assert path is not None and path.is_file(), "docs/metrics.md is missing"
    assert path.read_text(encoding="utf-8") == metrics_markdown(), (
        "docs/metrics.md is stale: run `python -m reprdiag.catalog` and commit it")


def test_metrics_reference_gives_every_metric_its_facts() -> None:
    text = metrics_markdown()
    sections = text.split("\n### `")[1:]
    assert [s.split("`", 1)[0] for s in sections] == [i.name for i in resolve(None)]
    for section, info in zip(sections, resolve(None), strict=True):
        assert f"- **Range:** `{info.range}`" in section, info.name
        assert f"- **Citation:** {info.citation}" in section, info.name
        assert "**Direction:** " + {"higher": "↑", "lower": "↓", "neutral": "·"}[
            info.direction] in section, info.name
        assert "Complexity" in section, f"{info.name}: its docstring gives no complexity"
        assert ">>>" not in section, f"{info.name}: a doctest leaked into the reference"
