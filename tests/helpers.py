"""What many test modules share besides fixtures: the checkout's paths, the CLI run in this
process (fast: torch is already imported) or as a real ``python -m reprdiag`` subprocess
(~3 s of CPU each, importing torch; only where a test needs a real process: exit codes of
the console script, signals, start-up imports, several ranks), and the one-line error check.

A plain module, not ``conftest.py``: tests import it as ``tests.helpers``.
"""

from __future__ import annotations

import contextlib
import io
import os
import subprocess
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "sample_data"
PYTHON = sys.executable


def run_cli_env(**extra: str) -> dict[str, str]:
    """Environment for subprocess runs of ``python -m reprdiag`` from this checkout."""
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env.pop("REPRDIAG_DEBUG", None)
    for name in ("COLUMNS", "LINES"):  # piped output is 160 columns wide, whatever the terminal
        env.pop(name, None)
    env.update(extra)
    return env


def run_cli(*args: str, cwd: Path | None = None, env: dict[str, str] | None = None,
            timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """``python -m reprdiag ARGS`` in a fresh interpreter (``env`` adds variables)."""
    return subprocess.run([PYTHON, "-m", "reprdiag", *args], capture_output=True, text=True,
                          env=run_cli_env(**(env or {})), cwd=cwd, timeout=timeout)


def run_main(args: list[str], cwd: Path | None = None, env: dict[str, str] | None = None
             ) -> subprocess.CompletedProcess[str]:
    """``reprdiag ARGS`` in this process, through the console-script entry point
    (:func:`reprdiag.cli.main`): stdout and stderr captured as strings (not terminals), the
    exit code from its ``SystemExit``; ``sys.argv`` (which report.json records), ``cwd``
    and the variables of ``env`` are the command's meanwhile."""
    from reprdiag.cli import main

    out, err = io.StringIO(), io.StringIO()
    old_cwd, old_argv = Path.cwd(), sys.argv
    old_env = {k: os.environ.get(k) for k in env or {}}
    os.environ.update(env or {})
    sys.argv = ["reprdiag", *args]
    if cwd is not None:
        os.chdir(cwd)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                main(args)
                code = 0
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else int(exc.code is not None)
    finally:
        os.chdir(old_cwd)
        sys.argv = old_argv
        for key, value in old_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    return subprocess.CompletedProcess(args, code, out.getvalue(), err.getvalue())


def assert_one_line_error(proc: subprocess.CompletedProcess[str], code: int,
                          *needles: str) -> str:
    """Exit ``code``, stderr one ``reprdiag: error:`` line holding every needle, no traceback."""
    assert "Traceback" not in proc.stderr + proc.stdout
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert proc.returncode == code, (proc.returncode, proc.stderr)
    assert len(lines) == 1 and lines[0].startswith("reprdiag: error: "), proc.stderr
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]


def scaled_rows(n: int, d: int, seed: int = 0) -> torch.Tensor:
    """(n, d) float32 rows with column scales 2 → 0.2 and an offset of 0.3."""
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=g) * torch.linspace(2.0, 0.2, d) + 0.3


def with_tiny_values(x: torch.Tensor) -> torch.Tensor:
    """Real embeddings hold some values far below 2^-40 (minilm.safetensors: 1.3e-37)."""
    x = x.clone()
    x[::97, 3] = 1.3e-37
    x[5, 0] = -2e-30
    return x


def with_spectrum(vals: list[float], seed: int = 0) -> torch.Tensor:
    """Q diag(vals) Qᵀ with a random orthogonal Q (float64)."""
    g = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(len(vals), len(vals), generator=g, dtype=torch.float64))
    return q @ torch.diag(torch.tensor(vals, dtype=torch.float64)) @ q.T
