"""Each loader reads back a file written by the format's own library, by row ranges."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from safetensors.torch import save_file

import reprdiag
from reprdiag.errors import InputError, UsageError
from reprdiag.loaders import ConcatSource, detect_format, list_arrays, open_sources


def _x(n: int = 50, d: int = 6, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, d)).astype(np.float32)


def _read_all(source) -> np.ndarray:
    return torch.cat([rows for _, rows in source.iter_chunks(7)]).numpy()


def test_safetensors_round_trip(tmp_path: Path) -> None:
    a, b = _x(), _x(30, 4, 1)
    path = tmp_path / "e.safetensors"
    save_file({"a": torch.from_numpy(a), "b": torch.from_numpy(b),
               "bias": torch.zeros(4)}, str(path))
    assert detect_format(path) == "safetensors"
    sources = open_sources(path)
    assert sorted(s.key for s in sources) == ["a", "b"]  # the 1-D tensor is not an input
    by_key = {s.key: s for s in sources}
    np.testing.assert_array_equal(_read_all(by_key["a"]), a)
    np.testing.assert_array_equal(by_key["b"].read(3, 9).numpy(), b[3:9])


def test_safetensors_bf16_and_fp16(tmp_path: Path) -> None:
    x = torch.from_numpy(_x())
    path = tmp_path / "h.safetensors"
    save_file({"bf": x.bfloat16(), "h": x.half()}, str(path))
    by_key = {s.key: s for s in open_sources(path)}
    assert by_key["bf"].dtype == "bfloat16" and by_key["h"].dtype == "float16"
    torch.testing.assert_close(by_key["bf"].read(0, 50), x.bfloat16())


def test_hdf5_nested_groups(tmp_path: Path) -> None:
    path = tmp_path / "layers.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("top", data=_x())
        grp = f.create_group("model/encoder")
        grp.create_dataset("layer_0", data=_x(40, 5, 2))
        grp.create_dataset("layer_1", data=_x(40, 5, 3).astype(np.float16))
        f.create_dataset("labels", data=np.arange(40))
    keys = [s.key for s in open_sources(path)]
    assert keys == ["model/encoder/layer_0", "model/encoder/layer_1", "top"]
    src = open_sources(path, keys=["model/encoder/layer_0"])[0]
    np.testing.assert_array_equal(_read_all(src), _x(40, 5, 2))


def test_npy_is_memory_mapped(tmp_path: Path) -> None:
    path = tmp_path / "e.npy"
    np.save(path, _x())
    (src,) = open_sources(path)
    assert isinstance(src._array, np.memmap)
    assert src.label == str(path)
    np.testing.assert_array_equal(_read_all(src), _x())


@pytest.mark.parametrize("compressed", [False, True])
def test_npz_members(tmp_path: Path, compressed: bool) -> None:
    path = tmp_path / "e.npz"
    (np.savez_compressed if compressed else np.savez)(path, emb=_x(), other=_x(20, 3, 1))
    by_key = {s.key: s for s in open_sources(path)}
    assert isinstance(by_key["emb"]._array, np.memmap) != compressed
    np.testing.assert_array_equal(_read_all(by_key["emb"]), _x())
    np.testing.assert_array_equal(_read_all(by_key["other"]), _x(20, 3, 1))


def test_torch_nested_dict(tmp_path: Path) -> None:
    path = tmp_path / "e.pt"
    torch.save({"emb": torch.from_numpy(_x()), "meta": {"proj": torch.from_numpy(_x(9, 2))},
                "step": 3}, path)
    by_key = {s.key: s for s in open_sources(path)}
    assert set(by_key) == {"emb", "meta.proj"}
    assert by_key["emb"].label == f"{path}[emb]"
    np.testing.assert_array_equal(_read_all(by_key["meta.proj"]), _x(9, 2))


def test_torch_bare_tensor(tmp_path: Path) -> None:
    path = tmp_path / "t.pth"
    torch.save(torch.from_numpy(_x()), path)
    (src,) = open_sources(path)
    np.testing.assert_array_equal(_read_all(src), _x())


def test_integer_and_bool_arrays(tmp_path: Path) -> None:
    path = tmp_path / "i.npz"
    np.savez(path, ints=np.arange(60, dtype=np.int32).reshape(20, 3) % 7,
             flags=(np.arange(60).reshape(20, 3) % 3 == 0), big=np.arange(60, dtype=np.uint32
                                                                          ).reshape(20, 3))
    report = reprdiag.analyze(path, metrics=["participation_ratio"], device="cpu")
    assert {r.key for r in report.inputs} == {"ints", "flags", "big"}
    assert all(np.isfinite(r.metrics["participation_ratio"]) for r in report.inputs)


def test_pooling_of_3d_arrays(tmp_path: Path) -> None:
    x = np.random.default_rng(0).standard_normal((10, 4, 3)).astype(np.float32)
    path = tmp_path / "tok.npy"
    np.save(path, x)
    mean = open_sources(path)[0]
    np.testing.assert_allclose(_read_all(mean), x.mean(axis=1), rtol=1e-6)
    first = open_sources(path, pool="first")[0]
    np.testing.assert_array_equal(_read_all(first), x[:, 0])
    flat = open_sources(path, pool="flatten")[0]
    assert flat.shape == (10, 12)
    np.testing.assert_array_equal(_read_all(flat), x.reshape(10, 12))


def test_4d_needs_pool_and_1d_is_refused(tmp_path: Path) -> None:
    np.save(tmp_path / "four.npy", np.zeros((3, 2, 2, 2), np.float32))
    with pytest.raises(InputError, match="--pool"):
        open_sources(tmp_path / "four.npy")
    np.save(tmp_path / "one.npy", np.zeros(5, np.float32))
    with pytest.raises(InputError, match="no 2-D array"):
        open_sources(tmp_path / "one.npy")


def test_unknown_key_suggests_the_closest(tmp_path: Path) -> None:
    path = tmp_path / "e.safetensors"
    save_file({"layer_10": torch.zeros(3, 2), "layer_11": torch.zeros(3, 2)}, str(path))
    with pytest.raises(UsageError, match="did you mean 'layer_11'"):
        open_sources(path, keys=["layer11"])


def test_magic_bytes_beat_the_extension(tmp_path: Path) -> None:
    path = tmp_path / "mislabelled.h5"
    np.save(tmp_path / "x.npy", _x())
    (tmp_path / "x.npy").rename(path)
    assert detect_format(path) == "npy"
    path2 = tmp_path / "junk.safetensors"
    path2.write_bytes(b"this is not an embedding file at all")
    with pytest.raises(InputError, match="not a recognised"):
        detect_format(path2)


def test_concat_shards(tmp_path: Path) -> None:
    parts = [_x(13, 5, s) for s in range(3)]
    paths = []
    for i, p in enumerate(parts):
        paths.append(tmp_path / f"shard{i}.npy")
        np.save(paths[-1], p)
    whole = np.concatenate(parts)
    np.save(tmp_path / "whole.npy", whole)
    joined = reprdiag.analyze(paths, concat=True, device="cpu", chunk_rows=4, precision="float64")
    single = reprdiag.analyze(tmp_path / "whole.npy", device="cpu", precision="float64")
    assert len(joined.inputs) == 1 and joined.inputs[0].n == 39
    for k, v in single.metrics.items():
        assert joined.metrics[k] == pytest.approx(v, rel=1e-9, abs=1e-12), k
    src = ConcatSource([s for p in paths for s in open_sources(p)])
    np.testing.assert_array_equal(src.read(10, 30).numpy(), whole[10:30])


def test_list_arrays_includes_every_rank(tmp_path: Path) -> None:
    path = tmp_path / "e.npz"
    np.savez(path, a=np.zeros((3, 2)), b=np.zeros(4))
    assert sorted(s.key for s in list_arrays(path)) == ["a", "b"]


# -- dtypes and layouts that used to be analyzed wrongly or crash (issue 14 item 2) ------------
def _complex(tmp: Path, fmt: str) -> Path:
    z = torch.randn(40, 4, dtype=torch.complex64, generator=torch.Generator().manual_seed(0))
    path = tmp / f"c.{fmt}"
    if fmt == "safetensors":
        save_file({"emb": z}, str(path))
    elif fmt == "pt":
        torch.save({"emb": z}, path)
    else:
        np.save(path, z.numpy())
    return path


@pytest.mark.parametrize("fmt", ["safetensors", "pt", "npy"])
def test_complex_data_is_refused_not_cut_to_its_real_part(tmp_path: Path, fmt: str) -> None:
    path = _complex(tmp_path, fmt)
    with pytest.raises(InputError) as info:
        reprdiag.analyze(path, metrics=["rankme"], device="cpu")
    assert info.value.exit_code == 2
    assert "holds complex values (dtype complex64), whose imaginary part would be lost" in \
        info.value.one_line()
    assert "torch.view_as_real(x).flatten(1)" in info.value.one_line()
    with pytest.raises(InputError, match="holds complex values"):  # an in-memory tensor too
        reprdiag.analyze(torch.randn(40, 4, dtype=torch.complex128), device="cpu")


@pytest.mark.parametrize("fmt", ["safetensors", "pt"])
@pytest.mark.parametrize("dtype", [torch.float8_e4m3fn, torch.float8_e5m2])
def test_float8_is_read_as_float32(tmp_path: Path, fmt: str, dtype: torch.dtype) -> None:
    """float8 rows are widened exactly: the metrics equal those of the same values stored as
    float32 (the float8 → float32 conversion is exact)."""
    x8 = torch.randn(300, 6, generator=torch.Generator().manual_seed(1)).to(dtype)
    path = tmp_path / f"f8.{fmt}"
    save_file({"emb": x8}, str(path)) if fmt == "safetensors" else torch.save({"emb": x8}, path)
    got = reprdiag.analyze(path, metrics=["rankme", "vne", "avg_cosine"], device="cpu")
    want = reprdiag.analyze(x8.to(torch.float32), metrics=["rankme", "vne", "avg_cosine"],
                            device="cpu")
    assert got.inputs[0].dtype == str(dtype).removeprefix("torch.")
    for name, value in want.metrics.items():
        assert got.metrics[name] == pytest.approx(value, rel=1e-12, abs=1e-12), name


@pytest.mark.parametrize("layout", ["coo", "csr"])
def test_sparse_tensors_are_refused_with_to_dense_hint(tmp_path: Path, layout: str) -> None:
    x = torch.from_numpy(_x())
    sparse = x.to_sparse() if layout == "coo" else x.to_sparse_csr()
    torch.save({"emb": sparse}, tmp_path / "s.pt")
    with pytest.raises(InputError) as info:
        reprdiag.analyze(tmp_path / "s.pt", device="cpu")
    assert info.value.one_line() == (f"{tmp_path / 's.pt'}[emb]: is a sparse tensor (layout "
                                     f"sparse_{layout}); convert it with .to_dense() before "
                                     "saving or analyzing it")
