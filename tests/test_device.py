"""reprdiag.device: ``auto`` prefers cuda, then mps, then cpu; a device asked for must exist
(a one-line usage error, never a silent CPU run). GPUs are faked by monkeypatching torch."""

from __future__ import annotations

import pytest
import torch

from reprdiag.device import describe, resolve_device
from reprdiag.errors import UsageError


@pytest.fixture
def gpus(monkeypatch: pytest.MonkeyPatch):
    """Set how many CUDA GPUs and whether MPS torch sees."""
    def set_(cuda: int, mps: bool) -> None:
        monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda > 0)
        monkeypatch.setattr(torch.cuda, "device_count", lambda: cuda)
        monkeypatch.setattr(torch.backends.mps, "is_available", lambda: mps)
    return set_


@pytest.mark.parametrize(("cuda", "mps", "want"), [(2, True, "cuda"), (0, True, "mps"),
                                                   (0, False, "cpu")])
def test_auto_prefers_cuda_then_mps_then_cpu(gpus, cuda: int, mps: bool, want: str) -> None:
    gpus(cuda, mps)
    assert resolve_device("auto").type == want
    assert resolve_device(" AUTO ").type == want  # case and spaces do not matter


def test_explicit_devices_must_exist(gpus) -> None:
    gpus(2, False)
    assert resolve_device("cuda:1") == torch.device("cuda", 1)
    assert resolve_device(torch.device("cpu")) == torch.device("cpu")
    cases = [("cuda:2", "device 'cuda:2' does not exist (2 GPU(s) visible)"),
             ("mps", "device 'mps' was asked for but is not available"),
             ("tpu", "unknown device 'tpu'"),
             ("meta", "unsupported device 'meta'")]
    for spec, message in cases:
        with pytest.raises(UsageError, match=message.replace("(", r"\(").replace(")", r"\)")):
            resolve_device(spec)
    gpus(0, False)
    with pytest.raises(UsageError, match="no CUDA GPU is available") as info:
        resolve_device("cuda")
    assert "--device cpu" in info.value.one_line() and info.value.exit_code == 2


def test_describe_names_the_gpu_model(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device: "Fake H100")
    assert describe(torch.device("cuda", 0)) == "cuda:0 (Fake H100)"
    assert describe(torch.device("cpu")) == "cpu"
