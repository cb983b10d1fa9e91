"""Faults inside the library: permission errors, magnitudes that over/underflow, out-of-memory
fallbacks, and writes that must be atomic. (The CLI side is in tests/cli/test_errors.py.)"""

from __future__ import annotations

import errno
import math
from pathlib import Path

import numpy as np
import pytest
import torch

import reprdiag
from reprdiag import engine, pipeline
from reprdiag.config import AnalysisConfig
from reprdiag.errors import InputError, ResourceError, UsageError
from reprdiag.loaders import TensorSource, detect_format
from reprdiag.report.export import atomic_write, save_report
from reprdiag.stats import Reservoir, StreamingMoments
from tests.helpers import assert_one_line_error, run_main


def gaussian(n: int = 400, d: int = 12, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, d))


def reference(x: np.ndarray) -> dict[str, float]:
    """A few metrics straight from docs/design.md §3, in float64 numpy (no reprdiag code)."""
    x = x.astype(np.float64)
    c = np.cov(x, rowvar=False)
    lam = np.clip(np.linalg.eigvalsh(c)[::-1], 0, None)
    z = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    eta = np.clip(np.linalg.eigvalsh(z.T @ z / len(x)), 0, None)
    eta = eta[eta > 0]
    off = (c**2).sum() - (np.diag(c) ** 2).sum()
    return {"vne": float(-(eta * np.log(eta)).sum()),
            "participation_ratio": float(lam.sum() ** 2 / (lam**2).sum()),
            "cov_offdiag": float(off / x.shape[1]),
            "cov_offdiag_frac": float(off / (c**2).sum())}


def analyze_metrics(x: np.ndarray | torch.Tensor, **kw: object) -> dict[str, float]:
    rep = reprdiag.analyze(x, metrics=["vne", "participation_ratio", "cov_offdiag",
                                       "cov_offdiag_frac"], device="cpu", **kw)
    return rep.metrics


def assert_close(got: dict[str, float], want: dict[str, float], rtol: float = 1e-5) -> None:
    for name, value in want.items():
        assert got[name] == pytest.approx(value, rel=rtol), name


# -- paths ---------------------------------------------------------------------------------------
def test_permission_error_branch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Root reads chmod-000 files, so the PermissionError branch is driven by a fake open."""
    path = tmp_path / "e.npy"
    np.save(path, gaussian())

    def refuse(*args: object, **kwargs: object) -> None:
        raise PermissionError(errno.EACCES, "Permission denied")

    import reprdiag.loaders as loaders

    monkeypatch.setattr(loaders, "open", refuse, raising=False)
    with pytest.raises(InputError, match=r"e\.npy: permission denied; check the file's perm"):
        detect_format(path)


# -- magnitudes ----------------------------------------------------------------------------------
@pytest.mark.parametrize(("dtype", "scale"), [
    (np.float16, 1e4),    # fp16 squares overflow fp16 (max 65504): summed in float32/64
    (np.float32, 1e30),   # float32 squares overflow float32: multiplied in float64
    (np.float32, 1e-25),  # float32 squares underflow float32
    (np.float64, 1e50),   # float64 near the edges of its safe range
    (np.float64, 1e-50),
])
def test_extreme_magnitudes_match_float64_reference(dtype: type, scale: float) -> None:
    x = np.clip(gaussian() * scale, -6e4 if dtype is np.float16 else None,
                6e4 if dtype is np.float16 else None).astype(dtype)
    want = reference(x)
    if scale < 1e-12:  # every row is a "zero row" (‖x‖ ≤ 1e-12): vne is not defined for them
        del want["vne"]
    assert np.isfinite(x).all() and all(math.isfinite(v) for v in want.values())
    assert_close(analyze_metrics(x), want, rtol=1e-4)


def test_bfloat16_large_values_match_reference() -> None:
    x = torch.from_numpy(gaussian() * 1e25).to(torch.bfloat16)
    assert_close(analyze_metrics(x), reference(x.double().numpy()), rtol=1e-4)


@pytest.mark.parametrize(("scale", "message"), [(1e70, "too large for float64"),
                                                (1e-70, "too small for float64")])
def test_float64_beyond_safe_range_is_refused(scale: float, message: str) -> None:
    with pytest.raises(InputError, match=message):
        analyze_metrics(gaussian() * scale)


@pytest.mark.parametrize("dtype", [np.int8, np.int32, np.int64, np.uint8, np.uint32, np.bool_])
def test_integer_and_bool_dtypes_match_reference(dtype: type) -> None:
    raw = np.random.default_rng(1).integers(0, 100, (300, 10))
    x = (raw % 2).astype(dtype) if dtype is np.bool_ else raw.astype(dtype)
    assert_close(analyze_metrics(x), reference(x.astype(np.float64)), rtol=1e-9)


def test_reservoir_never_narrows_rows() -> None:
    r = Reservoir(capacity=10)
    r.update(0, torch.ones(3, 2, dtype=torch.float32))
    r.update(3, torch.full((2, 2), 1e300, dtype=torch.float64))
    assert r.rows.dtype == torch.float64 and torch.isfinite(r.rows).all()


def test_zero_rows_are_counted_and_warned() -> None:
    x = gaussian(50, 6)
    x[[0, 7, 8]] = 0
    result = reprdiag.analyze(x, metrics=["vne"], device="cpu").inputs[0]
    assert result.zero_rows == 3
    assert any("3 of 50 rows are all zeros" in w for w in result.warnings)


def test_nan_drop_counts_rows_and_matches_clean_data() -> None:
    x = gaussian(60, 5)
    x[[4, 11], 2] = np.nan
    x[20, 0] = -np.inf
    result = reprdiag.analyze(x, metrics=["vne"], nan="drop", device="cpu").inputs[0]
    clean = np.delete(x, [4, 11, 20], axis=0)
    assert (result.n, result.rows_dropped) == (57, 3)
    assert result.metrics["vne"] == pytest.approx(reference(clean)["vne"], rel=1e-9)
    assert result.warnings == ["dropped 3 of 60 rows holding NaN or Inf (--nan drop); the "
                               "metrics describe the other rows"]


# -- out of memory ------------------------------------------------------------------------------
def fake_oom(message: str = "CUDA out of memory. Tried to allocate 2.00 GiB") -> Exception:
    return torch.OutOfMemoryError(message)


def test_oom_halves_the_chunk_and_restarts_cleanly(monkeypatch: pytest.MonkeyPatch) -> None:
    """A chunk over 300 rows 'does not fit': the pass restarts at 512, then 256 rows per chunk.
    The failure comes after a first chunk was already added, so a restart that kept any state
    would double-count rows."""
    x = gaussian(2000, 8)
    want = reference(x)
    real_update = StreamingMoments.update

    def limited(self: StreamingMoments, rows: torch.Tensor, dtype: object = None) -> None:
        if rows.shape[0] > 300 and self.n > 0:
            raise fake_oom()
        real_update(self, rows, dtype)

    monkeypatch.setattr(StreamingMoments, "update", limited)
    opts, progress = engine.StreamOptions(chunk_rows=1024), CountingProgress()
    acc = engine.accumulate(TensorSource(torch.from_numpy(x)), opts, progress)
    assert acc.moments.n == 2000 and acc.rows_read == 2000
    assert progress.starts == 3 and progress.rows == 2000  # the bar restarts with the pass
    assert acc.notes == ["out of memory on cpu with 1024 rows per chunk; retried with 512",
                         "out of memory on cpu with 512 rows per chunk; retried with 256"]
    got = reprdiag.analyze(x, metrics=list(want), chunk_rows=1024, device="cpu")
    assert_close(got.metrics, want, rtol=1e-9)
    assert got.inputs[0].warnings[:2] == acc.notes


class CountingProgress:
    def __init__(self) -> None:
        self.starts, self.rows = 0, 0

    def start(self, label: str, total: int) -> None:
        self.starts, self.rows = self.starts + 1, 0

    def advance(self, rows: int) -> None:
        self.rows += rows

    def finish(self) -> None:
        pass


def gpu_that_is_always_full(monkeypatch: pytest.MonkeyPatch) -> list[torch.device]:
    """Make every pass on a non-CPU device fail with an out-of-memory (no GPU here)."""
    real_pass, devices = engine._one_pass, []

    def one_pass(source: object, opts: engine.StreamOptions, rows: int,
                 progress: object, *companions: object) -> engine.Accumulated:
        devices.append(opts.device)
        if opts.device.type != "cpu":
            raise fake_oom()
        return real_pass(source, opts, rows, progress, *companions)

    monkeypatch.setattr(engine, "_one_pass", one_pass)
    return devices


def test_oom_falls_back_to_the_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    devices = gpu_that_is_always_full(monkeypatch)
    x = gaussian(1000, 6)
    progress = CountingProgress()
    opts = engine.StreamOptions(device=torch.device("cuda"), chunk_rows=1024)
    acc = engine.accumulate(TensorSource(torch.from_numpy(x)), opts, progress)
    assert [d.type for d in devices] == ["cuda"] * 3 + ["cpu"]  # 1024, 512, 256, then cpu
    assert acc.notes[-1] == ("out of memory on cuda even with 256 rows per chunk; fell back "
                             "to the CPU (slower)")
    assert acc.moments.n == 1000 and progress.rows == 1000
    assert acc.moments.covariance().numpy() == pytest.approx(np.cov(x, rowvar=False),
                                                             rel=1e-9)


def test_oom_on_the_cpu_is_a_resource_error(monkeypatch: pytest.MonkeyPatch) -> None:
    def always(*args: object) -> None:
        raise RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to "
                           "allocate 99999999999 bytes")

    monkeypatch.setattr(engine, "_one_pass", always)
    with pytest.raises(ResourceError, match="out of memory on the CPU"):
        engine.accumulate(TensorSource(torch.randn(600, 4)), engine.StreamOptions())


def test_other_runtime_errors_are_not_taken_for_oom(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*args: object) -> None:
        raise RuntimeError("mat1 and mat2 shapes cannot be multiplied")

    monkeypatch.setattr(engine, "_one_pass", broken)
    with pytest.raises(RuntimeError, match="shapes cannot"):
        engine.accumulate(TensorSource(torch.randn(600, 4)), engine.StreamOptions())


def test_oom_in_the_eigen_solves_moves_to_the_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    x = gaussian(300, 6)
    acc = engine.accumulate(TensorSource(torch.from_numpy(x)), engine.StreamOptions())
    acc.moments.device = torch.device("cuda")  # pretend the totals live on a (full) GPU
    real_measure, calls = pipeline._measure, []

    def measure(acc_: engine.Accumulated, *args: object) -> tuple:
        calls.append(acc_.moments.device.type)
        if acc_.moments.device.type != "cpu":
            raise fake_oom()
        return real_measure(acc_, *args)

    monkeypatch.setattr(pipeline, "_measure", measure)
    _, _, values, _, _ = pipeline.measure(acc, AnalysisConfig(metrics=["vne"]), "x")
    assert calls == ["cuda", "cpu"]
    assert acc.notes == ["out of memory on cuda in the spectra; computed them on the CPU"]
    assert values["vne"] == pytest.approx(reference(x)["vne"], rel=1e-9)


def test_oom_in_the_eigen_solves_on_the_cpu_is_a_resource_error(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The spectra's fallback is the pass's (engine.with_oom_fallback): on the CPU it ends in
    a ResourceError (exit 3), also after moving there from a full device."""
    x = gaussian(300, 6)
    acc = engine.accumulate(TensorSource(torch.from_numpy(x)), engine.StreamOptions())
    monkeypatch.setattr(pipeline, "_measure", lambda *args: (_ for _ in ()).throw(fake_oom()))
    with pytest.raises(ResourceError, match="x: out of memory on the CPU while computing the "
                       "spectra; use a smaller --sample-size"):
        pipeline.measure(acc, AnalysisConfig(metrics=["vne"]), "x")
    acc.moments.device = torch.device("cuda")  # pretend the totals live on a (full) GPU
    with pytest.raises(ResourceError, match="while computing the spectra"):
        pipeline.measure(acc, AnalysisConfig(metrics=["vne"]), "x")
    assert acc.notes == ["out of memory on cuda in the spectra; computed them on the CPU"]


def test_cli_warns_about_the_fallback_and_oom_exits_3(tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    np.save(tmp_path / "e.npy", gaussian(600, 4).astype(np.float32))
    gpu_that_is_always_full(monkeypatch)
    monkeypatch.setattr(pipeline, "resolve_device", lambda spec: torch.device("cuda"))
    monkeypatch.setattr(pipeline, "describe", lambda dev: "cuda (fake)")
    proc = run_main(["analyze", "e.npy", "-q", "-f", "csv", "-m", "vne",
                     "--chunk-size", "512"], tmp_path)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stderr.splitlines()
    assert lines == ["reprdiag: warning: e.npy: out of memory on cuda with 512 rows per chunk; "
                     "retried with 256",
                     "reprdiag: warning: e.npy: out of memory on cuda even with 256 rows per "
                     "chunk; fell back to the CPU (slower)"]
    monkeypatch.setattr(engine, "_one_pass", lambda *a: (_ for _ in ()).throw(MemoryError()))
    proc = run_main(["analyze", "e.npy", "-q"], tmp_path)
    assert_one_line_error(proc, 3, "e.npy: out of memory on the CPU")


# -- atomic writes ------------------------------------------------------------------------------
def test_atomic_write_leaves_nothing_when_the_writer_fails(tmp_path: Path) -> None:
    def half_then_crash(p: Path) -> None:
        p.write_text("partial")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        atomic_write(tmp_path / "report.json", half_then_crash)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(("code", "error", "exit_code"), [(errno.ENOSPC, ResourceError, 3),
                                                          (errno.EROFS, UsageError, 2)])
def test_atomic_write_os_errors_are_one_line(tmp_path: Path, code: int, error: type,
                                             exit_code: int) -> None:
    def fail(p: Path) -> None:
        raise OSError(code, "simulated")

    with pytest.raises(error, match=r"report\.json: cannot be written: simulated") as info:
        atomic_write(tmp_path / "report.json", fail)
    assert info.value.exit_code == exit_code and list(tmp_path.iterdir()) == []


def test_failed_rewrite_keeps_the_old_run_whole(tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """A rewrite that fails half-way must not leave the old report.json beside new CSVs: the
    folder keeps the old run, byte for byte (the new one is built beside it and swapped in
    only when complete), and no temporary file."""
    x = gaussian(40, 4)
    x[0] = 0
    report = reprdiag.analyze(x, metrics=["vne"], device="cpu")
    out = tmp_path / "run"
    save_report(report, out, plots=False)
    assert (out / "report.json").exists()
    assert "## Warnings" in (out / "summary.md").read_text()
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    import reprdiag.report.plots as plots

    monkeypatch.setattr(plots, "save_plots", lambda *a: (_ for _ in ()).throw(
        KeyboardInterrupt()))
    changed = reprdiag.analyze(x[:20], metrics=["vne"], device="cpu")
    with pytest.raises(KeyboardInterrupt):
        save_report(changed, out, plots=True)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert [p.name for p in tmp_path.iterdir()] == ["run"]  # no staging folder, no .tmp


# -- found by tests/test_properties.py ------------------------------------------------------------
def test_regressions_found_by_hypothesis() -> None:
    """Values just outside their documented ranges (bounds from the registry)."""
    from reprdiag.metrics import METRICS

    same = reprdiag.analyze(np.ones((2, 5), np.float16), device="cpu").inputs[0]
    assert same.metrics["avg_cosine"] == 1.0  # was 1.0000000117 (float32 ‖z‖² ≠ 1)
    one_dim = reprdiag.analyze(np.array([[0.1257], [-0.1321]], np.float16), device="cpu")
    lo, _ = METRICS["rankme"].bounds(2, 1)
    assert lo <= one_dim.metrics["rankme"] < 1  # 1 − 1e-7: the bound was 1 − 1e-9
    zeros = reprdiag.analyze(np.zeros((4, 3)), device="cpu").inputs[0]
    assert math.isnan(zeros.metrics["er_entropy"])  # was 10.0 > ln area(S²) from zero vectors
    mixed = np.vstack([np.zeros((3, 3)), gaussian(20, 3)])
    kept = reprdiag.analyze(mixed, metrics=["er_entropy"], device="cpu").metrics["er_entropy"]
    alone = reprdiag.analyze(mixed[3:], metrics=["er_entropy"], device="cpu")
    assert kept == pytest.approx(alone.metrics["er_entropy"], rel=1e-12)
