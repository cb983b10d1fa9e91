"""Linear CKA from streamed cross-moments against an independent float64 kernel-space reference
(N×N Gram matrices, the HSIC formulas of Gretton et al. 2005 and Song et al. 2012) and closed
forms."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
import torch
from safetensors.numpy import save_file

from reprdiag.errors import InputError, UsageError
from reprdiag.loaders import TensorSource
from reprdiag.similarity import CrossMoments, accumulate_cross, linear_cka, similarity


def reference_cka(x: np.ndarray, y: np.ndarray, debiased: bool = False) -> float:
    """CKA from N×N Gram matrices of the centred data (no code shared with reprdiag)."""
    x, y = x - x.mean(0), y - y.mean(0)
    n = len(x)

    def hsic(k: np.ndarray, l: np.ndarray) -> float:  # noqa: E741
        if not debiased:
            h = np.eye(n) - 1.0 / n
            return float(np.trace(k @ h @ l @ h))
        k, l = k.copy(), l.copy()  # noqa: E741
        np.fill_diagonal(k, 0)
        np.fill_diagonal(l, 0)
        one = np.ones(n)
        return float(np.trace(k @ l) + (one @ k @ one) * (one @ l @ one) / ((n - 1) * (n - 2))
                     - 2 / (n - 2) * (one @ k @ l @ one)) / (n * (n - 3))

    k, l = x @ x.T, y @ y.T  # noqa: E741
    return hsic(k, l) / np.sqrt(hsic(k, k) * hsic(l, l))


def streamed(arrays: list[np.ndarray], chunk: int, precision: str = "float64") -> CrossMoments:
    m = CrossMoments([a.shape[1] for a in arrays], precision=precision)
    for lo in range(0, len(arrays[0]), chunk):
        m.update([torch.from_numpy(a[lo:lo + chunk]) for a in arrays])
    return m


@pytest.fixture
def related() -> list[np.ndarray]:
    rng = np.random.default_rng(1)
    x = rng.standard_normal((400, 24)) * np.linspace(3, 0.1, 24) + 7.0
    y = np.tanh(x @ rng.standard_normal((24, 9))) - 50.0
    z = rng.standard_normal((400, 5))
    return [x, y, z]


@pytest.mark.parametrize("debiased", [False, True])
def test_against_kernel_space_reference(related: list[np.ndarray], debiased: bool) -> None:
    got = linear_cka(streamed(related, 64), debiased)
    for i in range(3):
        for j in range(3):
            want = reference_cka(related[i], related[j], debiased)
            assert got[i, j] == pytest.approx(want, rel=1e-10, abs=1e-12), (i, j)


def test_real_layers_against_reference(sample_dir) -> None:
    with h5py.File(sample_dir / "minilm_layers.h5") as f:
        keys = [f"hidden_states/layer_{i}" for i in (0, 3, 6)]
        arrays = [f[k][:].astype(np.float64) for k in keys]
    got = similarity([sample_dir / "minilm_layers.h5"], keys=keys)
    for i in range(3):
        for j in range(3):
            assert got.cka_linear[i, j] == pytest.approx(
                reference_cka(arrays[i], arrays[j]), rel=1e-9)
            assert got.cka_debiased[i, j] == pytest.approx(
                reference_cka(arrays[i], arrays[j], True), rel=1e-9)


@pytest.mark.parametrize("chunk", [1, 7, 400])
def test_chunking_does_not_change_results(related: list[np.ndarray], chunk: int) -> None:
    whole = streamed(related, 400)
    for debiased in (False, True):
        np.testing.assert_allclose(linear_cka(streamed(related, chunk), debiased),
                                   linear_cka(whole, debiased), rtol=1e-10, atol=1e-12)


def test_closed_forms() -> None:
    rng = np.random.default_rng(2)
    x = rng.standard_normal((300, 16))
    q, _ = np.linalg.qr(rng.standard_normal((16, 16)))
    m = streamed([x, x @ q, -4.0 * x + 3.0], 50)
    np.testing.assert_allclose(linear_cka(m), 1.0, atol=1e-12)  # orthogonal map, scale, shift
    np.testing.assert_allclose(linear_cka(m, debiased=True), 1.0, atol=1e-12)


def test_independent_inputs_tend_to_zero() -> None:
    rng = np.random.default_rng(3)
    small = [rng.standard_normal((200, 100)), rng.standard_normal((200, 100))]
    large = [rng.standard_normal((20000, 100)), rng.standard_normal((20000, 100))]
    biased_small = linear_cka(streamed(small, 200))[0, 1]
    biased_large = linear_cka(streamed(large, 5000))[0, 1]
    assert biased_small > 0.3 and biased_large < 0.01  # the bias shrinks like d/N
    assert abs(linear_cka(streamed(small, 200), True)[0, 1]) < 0.02


def test_float32_products_stay_close(related: list[np.ndarray]) -> None:
    np.testing.assert_allclose(linear_cka(streamed(related, 64, "float32")),
                               linear_cka(streamed(related, 64)), rtol=1e-5, atol=1e-6)


def test_constant_input_has_no_cka() -> None:
    x = np.random.default_rng(4).standard_normal((50, 3))
    got = linear_cka(streamed([x, np.ones((50, 2))], 50))
    assert got[0, 0] == pytest.approx(1.0) and np.isnan(got[0, 1]) and np.isnan(got[1, 1])


def test_inputs_must_be_row_aligned_and_finite() -> None:
    a, b = TensorSource(torch.randn(10, 3), "a"), TensorSource(torch.randn(11, 3), "b")
    with pytest.raises(InputError, match="not row-aligned"):
        accumulate_cross([a, b])
    bad = torch.randn(10, 3)
    bad[6, 1] = float("nan")
    with pytest.raises(InputError, match=r"^b: row 6 holds NaN"):
        accumulate_cross([a, TensorSource(bad, "b")], chunk_bytes=8 * 6 * 4)
    with pytest.raises(UsageError, match="at least two inputs"):
        accumulate_cross([a])


def test_two_runs_with_the_same_keys_give_cka_per_key(tmp_path) -> None:
    rng = np.random.default_rng(5)
    run_a = {f"layer_{i}": rng.standard_normal((120, 6)) for i in range(3)}
    run_b = {k: v @ np.diag(np.arange(1, 7.0)) + 0.1 * rng.standard_normal((120, 6))
             for k, v in run_a.items()}
    save_file(run_a, str(tmp_path / "a.safetensors"))
    save_file(run_b, str(tmp_path / "b.safetensors"))
    got = similarity([tmp_path / "a.safetensors", tmp_path / "b.safetensors"])
    across = got.across_runs()
    assert list(across) == ["layer_0", "layer_1", "layer_2"]
    for key, (biased, unbiased) in across.items():
        assert biased == pytest.approx(reference_cka(run_a[key], run_b[key]), rel=1e-9)
        assert unbiased == pytest.approx(reference_cka(run_a[key], run_b[key], True), rel=1e-9)
    as_json = got.to_dict()
    assert as_json["cka_linear"]["keys"][0] == f"{tmp_path / 'a.safetensors'}[layer_0]"
    assert len(as_json["cka_linear"]["matrix"]) == 6 and "across_runs" in as_json
