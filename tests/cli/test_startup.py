"""``reprdiag --help``, ``list-metrics`` and argument errors answer without importing torch,
pandas or matplotlib (issue 15): those load inside the commands that compute."""

from __future__ import annotations

import json
import subprocess

import pytest

from tests.helpers import PYTHON, run_cli_env

#: Run the CLI in a fresh interpreter, then print which heavy modules it imported.
PROBE = """
import json, sys
from reprdiag.cli import main
try:
    main(sys.argv[1:])
except SystemExit as exc:
    code = exc.code
heavy = [m for m in ("torch", "pandas", "matplotlib", "numpy") if m in sys.modules]
sys.stderr.write("\\nPROBE " + json.dumps({"code": code, "heavy": heavy}) + "\\n")
"""


def probe(*args: str) -> tuple[dict[str, object], str]:
    proc = subprocess.run([PYTHON, "-c", PROBE, *args], capture_output=True, text=True,
                          env=run_cli_env(), timeout=120)
    line = [x for x in proc.stderr.splitlines() if x.startswith("PROBE ")][-1]
    return json.loads(line.removeprefix("PROBE ")), proc.stdout + proc.stderr


@pytest.mark.parametrize("args", [
    ["--help"], ["list-metrics"], ["list-metrics", "--format", "json"], ["analyze", "--help"],
    ["compare", "--help"], ["gate", "--help"], ["extract", "--help"], ["similarity", "--help"],
    ["plot-history", "--help"], ["analyze", "--bogus"], ["compare", "--noise-z", "x"],
    ["gate", "a", "--format", "yaml"], ["no-such-command"]])
def test_answers_without_torch_pandas_or_matplotlib(args: list[str]) -> None:
    result, output = probe(*args)
    assert result["heavy"] == [], output
    assert result["code"] == (0 if "--help" in args or args[0] == "list-metrics" else 2)


def test_a_command_that_computes_does_import_torch(tmp_path) -> None:  # the probe can fail
    result, output = probe("analyze", str(tmp_path / "missing.npy"))
    assert result["code"] == 2 and "torch" in result["heavy"], output


def test_python_m_importtime_names_no_heavy_module() -> None:
    proc = subprocess.run([PYTHON, "-X", "importtime", "-m", "reprdiag", "--help"],
                          capture_output=True, text=True, env=run_cli_env(), timeout=120)
    assert proc.returncode == 0, proc.stderr
    imported = {line.rsplit("|", 1)[-1].strip() for line in proc.stderr.splitlines()
                if line.startswith("import time:")}
    assert "typer" in imported  # the probe reads the import log
    assert not imported & {"torch", "pandas", "matplotlib"}
