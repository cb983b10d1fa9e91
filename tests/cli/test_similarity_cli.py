"""``reprdiag similarity`` through the console-script entry point."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
from safetensors.numpy import save_file

from tests.helpers import SAMPLE, run_main


def cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return run_main(["similarity", *args], cwd=cwd)


def test_layers_json_out_and_mismatch(tmp_path: Path) -> None:
    done = cli(str(SAMPLE / "minilm_layers.h5"), "-f", "json", "-o", str(tmp_path / "sim"))
    assert done.returncode == 0, done.stderr
    got = json.loads(done.stdout)
    keys, matrix = got["cka_linear"]["keys"], np.array(got["cka_linear"]["matrix"])
    assert len(keys) == matrix.shape[0] == matrix.shape[1] >= 2 and got["n"] > 0
    np.testing.assert_allclose(np.diag(matrix), 1.0, atol=1e-12)
    np.testing.assert_allclose(matrix, matrix.T, atol=1e-12)
    assert ((matrix > 0) & (matrix <= 1 + 1e-12)).all()
    written = sorted(p.name for p in (tmp_path / "sim").iterdir())
    assert written == ["cka.png", "similarity.csv", "similarity.json"]
    assert json.loads((tmp_path / "sim" / "similarity.json").read_text()) == got

    rng = np.random.default_rng(0)
    save_file({"a": rng.standard_normal((10, 4))}, str(tmp_path / "a.safetensors"))
    save_file({"a": rng.standard_normal((12, 4))}, str(tmp_path / "b.safetensors"))
    done = cli(str(tmp_path / "a.safetensors"), str(tmp_path / "b.safetensors"))
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2 and len(lines) == 1, done.stderr
    assert lines[0].startswith("reprdiag: error: ") and "not row-aligned" in lines[0]
    assert "10" in lines[0] and "12" in lines[0]
