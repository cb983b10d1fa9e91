"""bench/run.py --quick runs end to end and prints its table (no timing asserts)."""

from __future__ import annotations

import subprocess

from tests.conftest import PYTHON, ROOT, run_cli_env


def test_bench_quick_prints_a_table() -> None:
    proc = subprocess.run([PYTHON, str(ROOT / "bench" / "run.py"), "--quick",
                           "--baselines", "numpy-f64"], capture_output=True, text=True,
                          env=run_cli_env(), timeout=600)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "| N | d | format | method | time s | CPU s | peak RssAnon MB |" in out
    assert "| 3,000 | 32 | safetensors | reprdiag |" in out
    assert "| 3,000 | 32 | safetensors | numpy-f64 |" in out
    assert "floor" in out and "eigenvalue accuracy" in out
