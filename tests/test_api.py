"""The real pipeline (reprdiag.analyze and the CLI): which paths it takes, and that no
eigendecomposition is computed twice."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from typer.testing import CliRunner

import reprdiag
from reprdiag.cli import app
from reprdiag.metrics.pairwise import er_entropy as er_reference
from tests.helpers import scaled_rows as _rows
from tests.helpers import with_tiny_values as _with_tiny_values


# -- which ER-entropy path the real pipeline takes ----------------------------------------------
def _file(tmp_path: Path, x: torch.Tensor) -> Path:
    path = tmp_path / "emb.safetensors"
    save_file({"emb": x.contiguous()}, str(path))
    return path


def test_analyze_takes_the_float32_er_path_on_float32_files(tmp_path: Path) -> None:
    x = _with_tiny_values(_rows(2100, 12))
    path = _file(tmp_path, x)
    entry = reprdiag.analyze(path, metrics=["er_entropy"], device="cpu").inputs[0]
    assert entry.solver["er_entropy"] == ("symmetric float32 blocks, float64 row sums "
                                          "(2100×12, cpu)")
    e = torch.nn.functional.normalize(x.double(), dim=1)
    assert entry.metrics["er_entropy"] == pytest.approx(er_reference(e), abs=1e-5)
    exact = reprdiag.analyze(path, metrics=["er_entropy"], device="cpu",
                             precision="float64").inputs[0]
    assert exact.solver["er_entropy"].startswith("generic float64")
    assert exact.metrics["er_entropy"] == pytest.approx(er_reference(e), abs=1e-12)


def test_cli_json_records_the_er_path(tmp_path: Path) -> None:
    path = _file(tmp_path, _rows(2100, 6))
    result = CliRunner().invoke(app, ["analyze", str(path), "--format", "json",
                                      "-m", "er_entropy"])
    assert result.exit_code == 0, result.output
    solver = json.loads(result.stdout)["inputs"][0]["solver"]
    assert solver["er_entropy"].startswith("symmetric float32 blocks")


# -- eigendecompositions -------------------------------------------------------------------------
def _count_solves(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, torch.Tensor]]:
    calls: list[tuple[str, torch.Tensor]] = []

    def counting(name: str, solve: Callable[..., object]) -> Callable[..., object]:
        def run(matrix: torch.Tensor, *args: object, **kwargs: object) -> object:
            calls.append((name, matrix.clone()))
            return solve(matrix, *args, **kwargs)
        return run

    for name in ("eigh", "eigvalsh"):
        monkeypatch.setattr(torch.linalg, name, counting(name, getattr(torch.linalg, name)))
    return calls


def _all_distinct(calls: list[tuple[str, torch.Tensor]]) -> bool:
    mats = [m for _, m in calls]
    return not any(torch.equal(a, b) for i, a in enumerate(mats) for b in mats[i + 1:])


def test_one_eigh_of_xtx_serves_rankme_and_partition_isotropy(
        monkeypatch: pytest.MonkeyPatch) -> None:
    calls = _count_solves(monkeypatch)
    rep = reprdiag.analyze(_rows(400, 10).double(), device="cpu")
    assert sorted(name for name, _ in calls) == ["eigh", "eigvalsh", "eigvalsh"]
    assert _all_distinct(calls)  # C, ρ and XᵀX, each decomposed once
    assert rep.inputs[0].solver["second_moment"].startswith("eigh d×d")
    x = _rows(400, 10).double()
    sigma = torch.linalg.svdvals(x)  # independent: an SVD of the rows themselves
    torch.testing.assert_close(torch.tensor(rep.inputs[0].spectra["singular_values"],
                                            dtype=torch.float64), sigma,
                               rtol=1e-10, atol=1e-10)


def test_without_partition_isotropy_xtx_needs_no_vectors(
        monkeypatch: pytest.MonkeyPatch) -> None:
    calls = _count_solves(monkeypatch)
    reprdiag.analyze(_rows(400, 10).double(), device="cpu", metrics=["rankme", "vne"])
    assert sorted(name for name, _ in calls) == ["eigvalsh"] * 3 and _all_distinct(calls)


def test_uncertainty_decomposes_each_matrix_once_per_block(
        monkeypatch: pytest.MonkeyPatch) -> None:
    calls = _count_solves(monkeypatch)
    reprdiag.analyze(_rows(400, 10).double(), device="cpu", uncertainty=True, blocks=5,
                     jackknife="exact",
                     metrics=["rankme", "partition_isotropy", "vne", "effective_rank"])
    names = [name for name, _ in calls]
    assert (names.count("eigh"), names.count("eigvalsh")) == (6, 12)  # (K + 1) × (1, 2)
    assert _all_distinct(calls)


def test_first_order_uncertainty_decomposes_only_the_full_matrices(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """First order (auto at N/K = 80 ≥ d = 10): three eigh of the full data, none per block."""
    calls = _count_solves(monkeypatch)
    rep = reprdiag.analyze(_rows(400, 10).double(), device="cpu", uncertainty=True, blocks=5,
                           metrics=["rankme", "partition_isotropy", "vne", "effective_rank"])
    names = [name for name, _ in calls]
    assert (names.count("eigh"), names.count("eigvalsh")) == (3, 0)
    assert _all_distinct(calls)
    assert rep.inputs[0].uncertainty_method["deleted_spectra"] == "first-order"


def test_small_cpu_eigensolves_run_on_one_thread(monkeypatch: pytest.MonkeyPatch) -> None:
    """LAPACK's eigensolvers stall at their barriers when another process holds a core: the
    spectra of d ≤ 2048 run single-threaded and torch's thread count is restored after."""
    seen: list[int] = []
    eigvalsh = torch.linalg.eigvalsh

    def recording(matrix: torch.Tensor, *args: object, **kwargs: object) -> torch.Tensor:
        seen.append(torch.get_num_threads())
        return eigvalsh(matrix, *args, **kwargs)

    monkeypatch.setattr(torch.linalg, "eigvalsh", recording)
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        reprdiag.analyze(_rows(300, 8), device="cpu", metrics=["vne", "effective_rank"])
        assert seen == [1, 1, 1] and torch.get_num_threads() == 2  # λ, η and σ
    finally:
        torch.set_num_threads(before)


def test_openmp_threads_wait_passively_unless_the_user_says_otherwise() -> None:
    import subprocess

    from tests.helpers import PYTHON, run_cli_env

    code = "import os, reprdiag; print(os.environ['OMP_WAIT_POLICY'])"
    env = {k: v for k, v in run_cli_env().items() if k != "OMP_WAIT_POLICY"}
    out = subprocess.run([PYTHON, "-c", code], capture_output=True, text=True, env=env)
    assert out.stdout.strip() == "PASSIVE"
    mine = subprocess.run([PYTHON, "-c", code], capture_output=True, text=True,
                          env={**env, "OMP_WAIT_POLICY": "ACTIVE"})
    assert mine.stdout.strip() == "ACTIVE"
