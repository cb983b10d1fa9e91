"""report.json is validated against its JSON Schema before compare or gate trusts it."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from pathlib import Path

import pytest

import reprdiag
from reprdiag.errors import InputError
from reprdiag.report.schema import report_schema


@pytest.fixture(scope="module")
def good(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A real report.json, as analyze --out writes it."""
    import torch

    out = tmp_path_factory.mktemp("run") / "A"
    x = torch.randn(100, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    reprdiag.analyze(x, metrics=["rankme", "vne"], device="cpu", uncertainty=True,
                     blocks=5).save(out, plots=False)
    return json.loads((out / "report.json").read_text())


def _set(path: list, value: object) -> Callable[[dict], None]:
    def edit(data: dict) -> None:
        for part in path[:-1]:
            data = data[part]
        data[path[-1]] = value
    return edit


BAD: dict[str, tuple[Callable[[dict], None], str]] = {
    "no-inputs": (_set(["inputs"], []), "inputs: [] should be non-empty"),
    "schema-99": (_set(["schema"], 99), "schema: 99, but this reprdiag reads schema 1 only"),
    "n-dict": (_set(["inputs", 0, "n"], {"a": 1}), "inputs[0].n: {'a': 1} is not of type "
                                                   "'integer'"),
    "n-0": (_set(["inputs", 0, "n"], 0), "inputs[0].n: 0 is less than the minimum of 2"),
    "n-text": (_set(["inputs", 0, "n"], "500"), "inputs[0].n: '500' is not of type 'integer'"),
    "n-bool": (_set(["inputs", 0, "n"], True), "inputs[0].n: True is not of type 'integer'"),
    "renamed-metric": (_set(["inputs", 0, "metrics"], {"rankmee": 3.0}),
                       "inputs[0].metrics: unknown metric 'rankmee'"),
    "metric-text": (_set(["inputs", 0, "metrics", "vne"], "1.2"),
                    "inputs[0].metrics.vne: '1.2' is not of type 'number', 'null'"),
    "missing-metrics": (lambda d: d["inputs"][0].pop("metrics"),
                        "inputs[0]: missing field 'metrics'"),
    "spectrum-text": (_set(["inputs", 0, "spectra", "covariance"], "big"),
                      "inputs[0].spectra.covariance: 'big' is not of type 'array'"),
    "se-text": (_set(["inputs", 0, "uncertainty", "vne", "se"], "x"),
                "inputs[0].uncertainty.vne.se: 'x' is not of type 'number', 'null'"),
    "not-an-object": (lambda d: (d.clear()), "missing field 'schema'"),
}


@pytest.mark.parametrize("name", list(BAD))
def test_bad_reports_are_refused_naming_the_path(good: dict, name: str, tmp_path: Path
                                                 ) -> None:
    edit, needle = BAD[name]
    data = copy.deepcopy(good)
    edit(data)
    (tmp_path / "report.json").write_text(json.dumps(data))
    with pytest.raises(InputError) as info:
        reprdiag.Report.load(tmp_path)
    text = info.value.one_line()
    assert text == (f"{tmp_path / 'report.json'}: is not a valid reprdiag report ({needle}); "
                    "re-run reprdiag analyze --out to rewrite it")
    assert info.value.exit_code == 2


def test_a_written_report_is_valid_and_round_trips(good: dict, tmp_path: Path) -> None:
    from jsonschema import Draft202012Validator

    Draft202012Validator.check_schema(report_schema(["rankme", "vne"]))
    (tmp_path / "report.json").write_text(json.dumps(good))
    assert reprdiag.Report.load(tmp_path).to_dict()["inputs"] == good["inputs"]


def test_report_json_that_is_a_folder(tmp_path: Path) -> None:
    (tmp_path / "report.json").mkdir()
    with pytest.raises(InputError, match=r"report\.json: is a folder, not a report"):
        reprdiag.Report.load(tmp_path)


def test_report_json_that_is_a_fifo_is_refused_without_blocking(tmp_path: Path) -> None:
    import os
    import signal

    os.mkfifo(tmp_path / "report.json")
    signal.alarm(20)  # a regression fails (the alarm interrupts open) instead of hanging
    try:
        with pytest.raises(InputError, match=r"report\.json: is a named pipe \(FIFO\), not a "
                                             r"regular file; save a report\.json to disk"):
            reprdiag.Report.load(tmp_path)
    finally:
        signal.alarm(0)
