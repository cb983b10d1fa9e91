"""Shared fixtures: the docs/design.md reference input and the sample data paths."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.helpers import SAMPLE

# Piped CLI output is 160 columns wide unless COLUMNS says otherwise (reprdiag/cli/core.py), and
# the CLI tests that run in this process expect that. pytest imports readline at start-up, and
# GNU readline exports COLUMNS=80 and LINES=24 into the C environment (not os.environ): every
# process pytest starts inherits them, pytest-xdist's workers included, whose os.environ then
# holds COLUMNS=80, so the in-process CLI printed 80-column tables under `-n 2` only. This
# module is loaded before the tests (and reprdiag.cli.core) are imported.
for _name in ("COLUMNS", "LINES"):
    os.environ.pop(_name, None)


@pytest.fixture
def reference_x() -> np.ndarray:
    """X = numpy.random.default_rng(0).standard_normal((64, 16)), docs/design.md §3."""
    return np.random.default_rng(0).standard_normal((64, 16))


@pytest.fixture
def sample_dir() -> Path:
    return SAMPLE


# One torch thread per pytest-xdist worker (`-n auto`: a worker per CPU), else at most two.
torch.set_num_threads(1 if os.environ.get("PYTEST_XDIST_WORKER") else
                      max(1, min(2, torch.get_num_threads())))


@pytest.fixture(scope="session")
def minilm_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run folder (``analyze --out``) of the healthy sample, with a few fast metrics."""
    import reprdiag

    out = tmp_path_factory.mktemp("runs") / "minilm"
    reprdiag.analyze(SAMPLE / "minilm.safetensors", device="cpu",
                     metrics=["vne", "rankme", "effective_rank", "std_normalized",
                              "avg_cosine"]).save(out, plots=False)
    return out


@pytest.fixture
def one_thread():
    """Run a test on one torch thread (many small matrices: no thread hand-offs)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
