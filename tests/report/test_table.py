"""The tables ``reprdiag analyze`` prints: what their caption says about the run."""

from __future__ import annotations

from dataclasses import replace

import torch
from rich.console import Console

import reprdiag
from reprdiag.report.model import Report
from reprdiag.report.table import metric_tables


def _text(report: Report) -> str:
    console = Console(width=400, record=True)
    for table in metric_tables(report, 400):
        console.print(table)
    return console.export_text()


def test_caption_names_the_processes_of_a_torchrun_report() -> None:
    x = torch.randn(50, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    report = reprdiag.analyze(x, metrics=["vne"], device="cpu")
    assert "device cpu ·" in _text(report) and "processes" not in _text(report)
    assert "device cpu × 3 processes ·" in _text(replace(report, world_size=3))
