"""The same pipeline on a CUDA device (skipped without one; bench/gpu_check.py runs them)."""

from __future__ import annotations

import pytest
import torch

import reprdiag
from reprdiag.engine import Accumulator, StreamOptions
from tests.helpers import scaled_rows as _rows
from tests.helpers import with_tiny_values as _with_tiny_values

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
CUDA = torch.device("cuda")


def test_cuda_float64_matches_cpu_to_1e10() -> None:
    x = _rows(3000, 24).double()
    cpu = reprdiag.analyze(x, device="cpu", precision="float64").metrics
    gpu = reprdiag.analyze(x, device="cuda", precision="float64").metrics
    for name, value in cpu.items():
        assert gpu[name] == pytest.approx(value, rel=1e-10, abs=1e-12), name


def test_cuda_default_precision_and_er_path() -> None:
    x = _with_tiny_values(_rows(5000, 32))
    cpu = reprdiag.analyze(x, device="cpu").inputs[0]
    gpu = reprdiag.analyze(x, device="cuda").inputs[0]
    assert gpu.solver["er_entropy"].startswith("symmetric float32 blocks")
    assert gpu.solver["er_entropy"].endswith("cuda)")
    for name, value in cpu.metrics.items():
        assert gpu.metrics[name] == pytest.approx(value, rel=1e-4, abs=1e-6), name


def test_cuda_chunk_buffers_are_allocated_once() -> None:
    acc = Accumulator(16, torch.float16, StreamOptions(device=CUDA, sample_size=64))
    x = _rows(1000, 16).half().to(CUDA)
    seen = set()
    for first in range(0, 1000, 100):
        acc.add(first, x[first: first + 100])
        work, gram, norms = acc.moments.scratch.bufs
        seen.add((work.data_ptr(), gram.data_ptr(), norms.data_ptr(), acc._convert.data_ptr()))
    assert len(seen) == 1


def test_cuda_uncertainty_matches_cpu() -> None:
    x = _rows(2000, 16).double()
    kw = {"precision": "float64", "uncertainty": True, "blocks": 5,
          "metrics": ["vne", "rankme", "er_entropy", "partition_isotropy"]}
    cpu = reprdiag.analyze(x, device="cpu", **kw).inputs[0].uncertainty
    gpu = reprdiag.analyze(x, device="cuda", **kw).inputs[0].uncertainty
    for name, est in cpu.items():
        assert gpu[name]["se"] == pytest.approx(est["se"], rel=1e-8, abs=1e-12), name


def test_cuda_uncertainty_with_labels_and_pair_matches_cpu(tmp_path) -> None:
    """Blocked class and cross-moments on the GPU (labels read on the CPU, rows on the
    device, --nan drop masks from the device) give the CPU's values and standard errors."""
    from safetensors.torch import save_file

    x = _rows(1500, 12).double()
    y = torch.arange(1500) % 4
    x += torch.randn(4, 12, dtype=torch.float64, generator=torch.Generator().manual_seed(1))[y]
    x[7] = float("nan")
    save_file({"emb": x, "y": y, "view": 2 * x.nan_to_num() + 1}, str(tmp_path / "a.safetensors"))
    kw = {"keys": ["emb"], "labels": "y", "pair": "view", "precision": "float64",
          "uncertainty": True, "blocks": 5, "nan": "drop",
          "metrics": ["nc1", "lidar", "class_erank_min", "alignment", "pair_cka", "vne"]}
    cpu = reprdiag.analyze(tmp_path / "a.safetensors", device="cpu", **kw).inputs[0]
    gpu = reprdiag.analyze(tmp_path / "a.safetensors", device="cuda", **kw).inputs[0]
    assert set(gpu.uncertainty) == set(cpu.uncertainty) == set(kw["metrics"])
    for name, est in cpu.uncertainty.items():
        assert gpu.metrics[name] == pytest.approx(cpu.metrics[name], rel=1e-10), name
        assert gpu.uncertainty[name]["se"] == pytest.approx(est["se"], rel=1e-8,
                                                            abs=1e-12), name
