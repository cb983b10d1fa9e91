"""The similarity table: the CKA matrix under #i labels, and a legend that never breaks an entry."""

from __future__ import annotations

from pathlib import Path

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


def test_two_runs_name_their_files_below_the_per_key_table(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    rng = np.random.default_rng(1)
    arrays = {f"layer_{i}": rng.standard_normal((40, 3)) for i in range(2)}
    paths = [Path("a_rather_long_run_folder_name") / f"{run}.safetensors" for run in "ab"]
    paths[0].parent.mkdir()
    for path in paths:
        save_file(arrays, str(path))
    console = Console(width=80, record=True, color_system=None)
    for table in similarity_tables(similarity(paths)):
        console.print(table)
    lines = console.export_text().splitlines()
    assert any("CKA per key" in line for line in lines), lines
    for label, path in zip(["run 1", "run 2"], paths, strict=True):
        assert any(line.split() == [*label.split(), str(path)] for line in lines), lines
