"""Shared fixtures: the docs/design.md reference input and the sample data paths."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from tests.helpers import SAMPLE


@pytest.fixture
def reference_x() -> np.ndarray:
    """X = numpy.random.default_rng(0).standard_normal((64, 16)), docs/design.md §3."""
    return np.random.default_rng(0).standard_normal((64, 16))


@pytest.fixture
def sample_dir() -> Path:
    return SAMPLE


torch.set_num_threads(max(1, min(2, torch.get_num_threads())))


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
