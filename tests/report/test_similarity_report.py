"""The similarity table: the CKA matrix under #i labels, and a legend that never breaks an entry."""

from __future__ import annotations

import numpy as np
from rich.console import Console
from safetensors.numpy import save_file

from reprdiag.report.similarity import similarity_tables
from reprdiag.similarity import similarity


def test_legend_keeps_each_entry_on_one_line_at_80_columns(tmp_path) -> None:
    rng = np.random.default_rng(0)
    keys = [f"encoder/blocks/transformer_layer_{i:02d}_output" for i in range(8)]
    save_file({k: rng.standard_normal((50, 4)) for k in keys}, str(tmp_path / "layers.safetensors"))
    result = similarity([tmp_path / "layers.safetensors"])
    console = Console(width=80, record=True, color_system=None)
    for table in similarity_tables(result):
        console.print(table)
    lines = console.export_text().splitlines()
    assert all(len(line) <= 80 for line in lines)
    for i, key in enumerate(keys, start=1):  # "#i  name" whole, on a line of its own
        label = key.rsplit("/", 1)[-1]
        assert any(line.split() == [f"#{i}", label] for line in lines), (i, label, lines)
    header = next(line for line in lines if "#1" in line and "#8" in line)
    assert header.split("#1")[0].strip(" │┃") == ""  # the matrix's header row
