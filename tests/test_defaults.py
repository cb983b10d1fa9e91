"""reprdiag.defaults: the values the CLI shows in --help, without importing torch."""

from __future__ import annotations

import subprocess
import sys

from reprdiag import defaults
from reprdiag.config import AnalysisConfig
from tests.helpers import run_cli_env


def test_defaults_are_the_config_defaults() -> None:
    config = AnalysisConfig()
    assert config.blocks == defaults.DEFAULT_BLOCKS
    assert config.jackknife == defaults.DELETED_SPECTRA[0] == "auto"


def test_importing_the_defaults_imports_nothing_heavy() -> None:
    code = ("import sys, reprdiag.defaults, reprdiag.config; "
            "print(sorted(m for m in ('torch', 'pandas', 'matplotlib', 'numpy') "
            "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env=run_cli_env(), check=True)
    assert out.stdout.strip() == "[]", out.stdout
