"""reprdiag.spectrum: the three spectra of an input (λ of the covariance, η of the normalized
rows' autocorrelation, σ of raw X) against numpy float64 references (docs/design.md §3), by
both solver paths (d×d moments and the N×N Gram matrix), and their floors."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import torch

from reprdiag.spectrum import Spectra, eigen_spectrum, gram_is_cheaper, gram_spectrum
from reprdiag.stats import StreamingMoments


def rows(n: int, d: int, seed: int = 0) -> np.ndarray:
    """Anisotropic, non-centred float64 rows."""
    g = np.random.default_rng(seed)
    return g.standard_normal((n, d)) * np.geomspace(3.0, 0.1, d) + g.standard_normal(d)


def reference(x: np.ndarray) -> dict[str, np.ndarray]:
    """The three spectra by numpy, descending, min(N, d) values each."""
    k = min(x.shape)
    z = x / np.linalg.norm(x, axis=1, keepdims=True)
    desc = [np.sort(np.linalg.eigvalsh(m))[::-1][:k] for m in (
        np.cov(x, rowvar=False).reshape(x.shape[1], x.shape[1]), z.T @ z / len(x))]
    return {"covariance": desc[0], "autocorrelation": desc[1],
            "singular_values": np.linalg.svd(x, compute_uv=False)[:k]}


def spectra(x: np.ndarray, with_rows: bool) -> Spectra:
    t = torch.from_numpy(x)
    moments = StreamingMoments(x.shape[1], torch.float64)
    for part in torch.split(t, 7):  # streamed in chunks
        moments.update(part)
    return Spectra(moments, t if with_rows else None)


@pytest.mark.parametrize(("n", "d", "with_rows", "gram"), [
    (300, 12, False, False), (300, 12, True, False),  # N > d: the d×d route either way
    (10, 40, False, False), (10, 40, True, True)])    # N < d: Gram once the rows are at hand
def test_spectra_match_numpy(n: int, d: int, with_rows: bool, gram: bool) -> None:
    x = rows(n, d)
    s, ref = spectra(x, with_rows), reference(x)
    assert s.use_gram is gram
    for name, want in ref.items():
        got = getattr(s, name)
        got = (got if isinstance(got, torch.Tensor) else got.values).numpy()
        assert got.shape == (min(n, d),), name
        assert np.all(np.diff(got) <= 0), name  # descending
        big = want > 1e-9 * want[0]
        np.testing.assert_allclose(got[big], want[big], rtol=1e-9, err_msg=name)
        assert np.all(np.abs(got[~big]) <= 1e-9 * want[0]), name
    route = "gram N×N" if gram else "eigvalsh d×d"
    assert s.solvers()["covariance"].startswith(route)


def test_raw_vectors_are_eigenvectors_of_xtx_on_both_routes() -> None:
    for n, d in ((200, 6), (5, 30)):
        x = rows(n, d, seed=1)
        s = spectra(x, with_rows=True)
        raw = s.raw
        m = x.T @ x
        for k in range(min(n, d)):
            v, lam = raw.vectors[:, k].numpy(), float(raw.values[k])
            np.testing.assert_allclose(m @ v, lam * v, rtol=1e-8, atol=1e-8 * lam)
        assert s.raw_eigenvalues is raw  # one decomposition serves both


def test_rounding_eigenvalues_are_zero_and_the_floor_bounds_them() -> None:
    """A rank-3 matrix: the d - 3 eigenvalues that are rounding become exactly 0, below the
    floor; the three real ones are above it and resolved."""
    g = np.random.default_rng(2)
    b = g.standard_normal((10, 3))
    s = eigen_spectrum(torch.from_numpy(b @ b.T))
    want = np.sort(np.linalg.eigvalsh(b.T @ b))[::-1]
    np.testing.assert_allclose(s.values[:3].numpy(), want, rtol=1e-12)
    assert s.values[3:].tolist() == [0.0] * 7
    assert s.resolved.tolist() == [True] * 3 + [False] * 7
    assert 0 < s.floor < 1e-12 * float(s.values[0])


def test_keep_and_accumulated_error() -> None:
    s = eigen_spectrum(torch.diag(torch.tensor([1.0, 4.0, 2.0, 3.0], dtype=torch.float64)),
                       keep=2, accumulated=0.5)
    assert s.values.tolist() == [4.0, 3.0]
    assert s.floor == pytest.approx(0.5 + 4 * 4 * np.finfo(np.float64).eps)


def test_gram_spectrum_scales_like_the_moment_matrix() -> None:
    x = rows(6, 20, seed=3)
    s = gram_spectrum(torch.from_numpy(x), 0.25)
    want = np.sort(np.linalg.eigvalsh(x.T @ x * 0.25))[::-1][:6]
    np.testing.assert_allclose(s.values.numpy(), want, rtol=1e-10)


@pytest.mark.parametrize("d", [64, 1000, 4096])
def test_gram_is_cheaper_exactly_when_its_flops_are_fewer(d: int) -> None:
    """Brute force over N: the Gram route (2N²d + 4N³/3 flops) against the d×d eigensolve
    (4d³/3); the crossover sits near N = 0.68·d."""
    cheaper = [n for n in range(1, 2 * d) if gram_is_cheaper(n, d)]
    assert cheaper == list(range(1, len(cheaper) + 1))  # every N below the crossover
    crossover = len(cheaper) + 1
    assert 0.66 * d <= crossover <= 0.70 * d


def test_solve_all_runs_the_three_solves_side_by_side_with_the_same_values(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Up to d = 2048 each eigensolve is single-threaded: solve_all runs them on separate
    threads (one torch thread each, restored after) and gets what one-by-one solves get."""
    import threading

    x = rows(400, 16)
    one_by_one = spectra(x, False)
    want = {n: getattr(one_by_one, n).values for n in ("covariance", "autocorrelation", "raw")}
    seen: set[int] = set()
    eigh, eigvalsh = torch.linalg.eigh, torch.linalg.eigvalsh
    together = threading.Barrier(2, timeout=20)  # one after the other would break it
    calls = itertools.count()

    def record(solve: Callable[..., Any]) -> Callable[..., Any]:
        def run(m: torch.Tensor, *a: Any, **k: Any) -> Any:
            seen.add(threading.get_ident())
            if next(calls) < 2:
                together.wait()  # the first two solves run at the same time
            return solve(m, *a, **k)
        return run

    monkeypatch.setattr(torch.linalg, "eigh", record(eigh))
    monkeypatch.setattr(torch.linalg, "eigvalsh", record(eigvalsh))
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        side = spectra(x, False)
        side.want_vectors = True
        side.solve_all()
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
    assert len(seen) == 2 and threading.get_ident() not in seen
    for name, values in want.items():
        torch.testing.assert_close(getattr(side, name).values, values, rtol=1e-12, atol=0)


def test_with_values_replaces_eigenvalues_in_a_copy() -> None:
    """The copy's spectra carry the given values (XᵀX's singular values too) and the same
    vectors and matrices; the original keeps its own."""
    x = torch.randn(200, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    m = StreamingMoments(5, torch.float64)
    m.update(x)
    spectra = Spectra(m)
    for name in ("covariance", "raw"):
        spectra.with_vectors(name)
    before = spectra.raw.values.clone()
    new = {"raw": before * 4, "covariance": spectra.covariance.values + 1}
    copy = spectra.with_values(new)
    assert torch.equal(copy.raw.values, before * 4)
    assert torch.equal(copy.singular_values, (before * 4).sqrt())
    assert torch.equal(copy.covariance.values, new["covariance"])
    assert copy.raw.vectors is spectra.raw.vectors
    assert copy.matrix("raw") is spectra.matrix("raw")
    assert torch.equal(spectra.raw.values, before) and torch.equal(spectra.singular_values,
                                                                    before.sqrt())
