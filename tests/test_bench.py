"""bench/run.py --quick and bench/distributed.py run end to end and print their tables (no
timing asserts)."""

from __future__ import annotations

import subprocess

from tests.helpers import PYTHON, ROOT, run_cli_env


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


def test_distributed_bench_prints_one_process_and_ranks_side_by_side() -> None:
    proc = subprocess.run([PYTHON, str(ROOT / "bench" / "distributed.py"), "--rows", "3000",
                           "--dim", "8", "--shards", "2", "--precision", "float64"],
                          capture_output=True, text=True, env=run_cli_env(), timeout=300)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    names = [line[:34].strip() for line in lines[2:5]]
    assert names == ["1 process × 1 thread(s)", "1 process × 2 thread(s)",
                     "2 ranks × 1 thread(s) (gloo)"]
    assert all(float(line.split()[-1]) < 1e-10 for line in lines[3:5])  # float64: equal


def test_gpu_check_dry_run_runs_every_step_on_the_cpu() -> None:
    """Its last step is ``bench/floor.py --quick`` (every quick case), printed through: the
    floor bench's table is checked here too (one run of it, not two)."""
    proc = subprocess.run([PYTHON, str(ROOT / "bench" / "gpu_check.py"), "--dry-run"],
                          capture_output=True, text=True, env=run_cli_env(), timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    out = proc.stdout
    assert "## CUDA and path tests" in out and "skipped" in out  # the CUDA tests skip here
    assert "## bench on cpu" in out and "| 30k4096 | 2,000 × 128 |" in out
    assert out.rstrip().endswith("all steps passed")
    assert "| case | N × d | reprdiag s (`total_s`) | command s | baseline |" in out
    assert "| 20k384 | 3,000 × 32 |" in out and "floor: read" in out and "ER lse" in out
    assert "| unc384 | 3,000 × 32 |" in out and "plain analyze" in out
    assert "load average above 0.5" in out


def test_cka_bench_prints_reprdiag_beside_the_load(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """bench/cka.py writes the row-aligned pair and prints its table (ckatorch is not a
    dependency: the smoke run leaves its row out)."""
    proc = subprocess.run([PYTHON, str(ROOT / "bench" / "cka.py"), "--n", "3000", "--d", "16",
                           "--dir", str(tmp_path), "--methods", "reprdiag"],
                          capture_output=True, text=True, env=run_cli_env(), timeout=300)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "| method | linear CKA | wall s | peak RssAnon MB | load before/after | note |" in out
    rows = [line for line in out.splitlines() if line.startswith("| reprdiag similarity")]
    assert len(rows) == 1
    assert 0.5 < float(rows[0].split("|")[2]) < 1.0  # B = 0.8·XQ + noise: related, not equal
