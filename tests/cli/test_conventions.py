"""CLI conventions a user of typer/click tools expects (issue 18 item 4): --version, shell
completion, metavars instead of Python types, the main commands first, escaped help text."""

from __future__ import annotations

import os
import re
import subprocess

import pytest
from typer.testing import CliRunner

import reprdiag
from reprdiag.cli import app
from tests.helpers import PYTHON, run_cli_env, run_main

runner = CliRunner()
COMMANDS = ["analyze", "compare", "gate", "extract", "list-metrics", "plot-history",
            "similarity"]


def _help(*args: str) -> str:
    result = runner.invoke(app, [*args, "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    return result.output


@pytest.mark.parametrize("flag", ["--version", "-V"])
def test_version(flag: str) -> None:
    proc = run_main([flag])
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == f"reprdiag {reprdiag.__version__}\n"


def test_commands_are_listed_analyze_compare_gate_first() -> None:
    text = _help()
    listed = [c for c in re.findall(r"^│ ([a-z-]+) ", text, re.M) if c in COMMANDS]
    assert listed[:3] == ["analyze", "compare", "gate"]
    assert sorted(listed) == sorted(COMMANDS)


@pytest.mark.parametrize("command", [[], *[[c] for c in COMMANDS]])
def test_help_shows_metavars_not_python_types(command: list[str]) -> None:
    text = _help(*command)
    assert not re.findall(r"<[\w\[\]|., ]+>", text)  # <bool>, <list[Path]>, <int>, <path>
    if command == ["analyze"]:
        assert re.search(r"--out\s+-o\s+DIR\s", text)
        assert re.search(r"--sample-size\s+ROWS\s", text)
        assert re.search(r"--format\s+-f\s+table\|json\|csv\|markdown\s", text)
        assert re.search(r"--uncertainty\s+Jackknife", text)  # a flag takes no value


def test_gate_help_keeps_the_toml_table_names() -> None:
    text = " ".join(_help("gate").replace("│", " ").split())
    assert "TOML file with a [gate] (or [tool.reprdiag.gate]) table" in text
    assert "else [tool.reprdiag.gate] in ./pyproject.toml" in text


def test_shell_completion_is_enabled() -> None:
    assert "--install-completion" in _help() and "--show-completion" in _help()
    env = {**run_cli_env(), "_REPRDIAG_COMPLETE": "complete_bash",
           "COMP_WORDS": "reprdiag comp", "COMP_CWORD": "1"}
    proc = subprocess.run([PYTHON, "-m", "reprdiag"], capture_output=True, text=True, env=env,
                          timeout=60)
    if not proc.stdout:  # python -m has no console-script name to key completion on
        script = os.path.join(os.path.dirname(PYTHON), "reprdiag")
        if not os.path.exists(script):
            pytest.skip("no reprdiag console script in this environment")
        proc = subprocess.run([script], capture_output=True, text=True, env=env, timeout=60)
    assert proc.stdout.split() == ["compare"], proc.stderr
