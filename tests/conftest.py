"""Shared fixtures: the DESIGN.md reference input and the sample data paths."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "sample_data"


@pytest.fixture
def reference_x() -> np.ndarray:
    """X = numpy.random.default_rng(0).standard_normal((64, 16)), DESIGN.md §3."""
    return np.random.default_rng(0).standard_normal((64, 16))


@pytest.fixture
def sample_dir() -> Path:
    return SAMPLE


def run_cli_env() -> dict[str, str]:
    """Environment for subprocess runs of ``python -m reprdiag`` from this checkout."""
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env.pop("REPRDIAG_DEBUG", None)
    return env


PYTHON = sys.executable
torch.set_num_threads(max(1, min(2, torch.get_num_threads())))
