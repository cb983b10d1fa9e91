"""SIGINT and SIGTERM at any moment of a real ``reprdiag analyze`` run (a subprocess): one
line on stderr, the documented exit code (130 for SIGINT, 143 for SIGTERM), no traceback, no
partial file, and the previous run of the ``--out`` folder intact."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from tests.helpers import PYTHON, assert_one_line_error, run_cli_env

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"),
                                reason="reads /proc/PID/maps to see where the run is")

CODES = {signal.SIGINT: (130, "interrupted; no report was written"),
         signal.SIGTERM: (143, "terminated by SIGTERM; no report was written")}


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)  # a background job inherits SIGINT ignored


def _mapped(pid: int, needle: str) -> bool:
    try:
        return needle in Path(f"/proc/{pid}/maps").read_text()
    except OSError:
        return False


def run_until(args: list[str], cwd: Path, ready: Callable[[int], bool], signum: int
              ) -> subprocess.CompletedProcess[str]:
    """Start ``reprdiag ARGS``, send ``signum`` once ``ready(pid)`` holds, collect the run."""
    proc = subprocess.Popen([PYTHON, "-m", "reprdiag", *args], cwd=cwd, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=run_cli_env(),
                            preexec_fn=_default_sigint)
    deadline = time.monotonic() + 120
    while not ready(proc.pid):
        assert proc.poll() is None, f"finished before the signal: {proc.communicate()}"
        assert time.monotonic() < deadline, "never reached the moment to signal"
        time.sleep(0.005)
    proc.send_signal(signum)
    stdout, stderr = proc.communicate(timeout=120)
    return subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)


def old_run(tmp: Path) -> dict[str, bytes]:
    """Three inputs and a finished ``--out`` run of them (the previous good run)."""
    rng = np.random.default_rng(0)
    for name in ("a", "b", "c"):
        np.save(tmp / f"{name}.npy", rng.standard_normal((3000, 16)).astype(np.float32))
    done = subprocess.run([PYTHON, "-m", "reprdiag", "analyze", "a.npy", "-m", "rankme",
                           "--out", "run", "--no-plots", "-q", "-f", "csv"], cwd=tmp,
                          capture_output=True, text=True, env=run_cli_env(), timeout=300)
    assert done.returncode == 0, done.stderr
    return snapshot(tmp / "run")


def snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def beside(tmp: Path) -> list[str]:
    return sorted(p.name for p in tmp.iterdir() if p.suffix != ".npy")


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_signal_at_start_up(signum: int, tmp_path: Path) -> None:
    """While torch is being imported (its shared library is mapped, the command not yet
    running): before this fix Ctrl-C printed a long traceback and SIGTERM exited silently."""
    np.save(tmp_path / "a.npy", np.ones((10, 3), np.float32))
    proc = run_until(["analyze", "a.npy", "--out", "run", "-q"], tmp_path,
                     lambda pid: _mapped(pid, "libtorch"), signum)
    code, line = CODES[signum]
    assert_one_line_error(proc, code, line)
    assert proc.stdout == "" and beside(tmp_path) == []


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_signal_while_reading_keeps_the_old_run(signum: int, tmp_path: Path) -> None:
    before = old_run(tmp_path)
    np.save(tmp_path / "big.npy", np.random.default_rng(0).standard_normal(
        (200_000, 32)).astype(np.float32))
    proc = run_until(["analyze", "big.npy", "--chunk-size", "16", "--out", "run", "-q"],
                     tmp_path, lambda pid: _mapped(pid, str(tmp_path / "big.npy")), signum)
    code, line = CODES[signum]
    assert_one_line_error(proc, code, line)
    assert snapshot(tmp_path / "run") == before and beside(tmp_path) == ["run"]


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_signal_while_writing_keeps_the_old_run(signum: int, tmp_path: Path) -> None:
    """Once the new run's staging folder exists (the plots are being drawn into it): the
    folder keeps the previous run byte for byte, and neither the staging folder nor the lock
    file is left beside it."""
    before = old_run(tmp_path)

    def writing(_pid: int) -> bool:
        return any(p.name.startswith(".run.reprdiag-new-") for p in tmp_path.iterdir())

    proc = run_until(["analyze", "a.npy", "b.npy", "c.npy", "-m", "rankme", "--out", "run",
                      "-q"], tmp_path, writing, signum)
    code, line = CODES[signum]
    assert_one_line_error(proc, code, line)
    assert snapshot(tmp_path / "run") == before and beside(tmp_path) == ["run"]


@pytest.mark.parametrize(("exc", "code", "line"), [
    (KeyboardInterrupt(), 130, "interrupted; no report was written"),
    (None, 143, "terminated by SIGTERM; no report was written")], ids=["SIGINT", "SIGTERM"])
def test_signal_while_the_cli_itself_is_imported(exc, code: int, line: str, monkeypatch,
                                                 capsys) -> None:
    """The window before any command runs (typer, rich and the commands being imported)."""
    import reprdiag.cli
    from reprdiag.errors import Terminated

    error = exc if exc is not None else Terminated(signal.SIGTERM)

    def interrupted() -> None:
        raise error

    monkeypatch.setattr(reprdiag.cli, "_load_app", interrupted)
    before = signal.getsignal(signal.SIGTERM)
    try:
        with pytest.raises(SystemExit) as info:
            reprdiag.cli.main(["--help"])
    finally:
        signal.signal(signal.SIGTERM, before)
    assert info.value.code == code
    assert capsys.readouterr().err == f"reprdiag: error: {line}\n"
