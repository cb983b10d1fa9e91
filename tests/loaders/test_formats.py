"""Each loader reads back a file written by the format's own library, by row ranges."""

from __future__ import annotations

import io
import os
import subprocess
import zipfile
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from safetensors.torch import save_file

import reprdiag
from reprdiag.errors import InputError, ResourceError, UsageError
from reprdiag.loaders import ConcatSource, detect_format, list_arrays, open_sources
from tests.helpers import PYTHON, run_cli_env


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


# -- inputs that hang or mislead (issue 14 item 7) ---------------------------------------------
@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs mkfifo")
def test_fifo_is_refused_before_it_is_opened(tmp_path: Path) -> None:
    """``open()`` on a FIFO blocks until a writer appears: refused from its stat alone (a
    subprocess with a timeout, so a regression fails instead of hanging the suite)."""
    os.mkfifo(tmp_path / "pipe.npy")
    proc = subprocess.run([PYTHON, "-m", "reprdiag", "analyze", "pipe.npy", "-q"], cwd=tmp_path,
                          capture_output=True, text=True, env=run_cli_env(), timeout=120)
    assert proc.returncode == 2 and proc.stderr == (
        "reprdiag: error: pipe.npy: is a named pipe (FIFO), not a regular file; save an "
        "embedding file to disk and pass its path\n")


def test_character_device_is_refused(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="/dev/zero: is a character device, not a regular file"):
        detect_format("/dev/zero")


def test_symlink_loop_and_dangling_link_are_named(tmp_path: Path) -> None:
    (tmp_path / "a").symlink_to(tmp_path / "b")
    (tmp_path / "b").symlink_to(tmp_path / "a")
    (tmp_path / "dangling").symlink_to(tmp_path / "gone.npy")
    with pytest.raises(InputError) as info:
        detect_format(tmp_path / "a")
    assert info.value.one_line() == (f"{tmp_path / 'a'}: is a symbolic link loop (a link that "
                                     "points back to itself); fix the links along the path")
    with pytest.raises(InputError, match=r"is a symbolic link to .*gone\.npy, which does not "
                                         r"exist; fix or remove the link"):
        detect_format(tmp_path / "dangling")


def _npz_claiming(path: Path, shape: tuple[int, ...], compression: int) -> Path:
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "<f4", "fortran_order": False,
                                                  "shape": shape})
    with zipfile.ZipFile(path, "w", compression) as archive:
        archive.writestr("emb.npy", header.getvalue() + b"\0" * 4096)
    return path


@pytest.mark.parametrize("compression", [zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED],
                         ids=["stored", "compressed"])
def test_npz_member_claiming_30_gb_names_the_file(tmp_path: Path, compression: int) -> None:
    """Was "out of memory; try a smaller --chunk-size" with no file name (compressed) and the
    advice to avoid object dtypes (stored)."""
    path = _npz_claiming(tmp_path / "huge.npz", (100_000, 80_000), compression)
    with pytest.raises(InputError) as info:
        reprdiag.analyze(path, device="cpu")
    assert info.value.one_line() == (
        f"{path}[emb]: member 'emb' claims shape (100000, 80000) of float32 (32.0 GB) but holds "
        "only 4.1 kB of data; the file is truncated or corrupt; rewrite it")


def test_compressed_npz_member_larger_than_memory_says_how_to_store_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from reprdiag.loaders import numpy_file

    np.savez_compressed(tmp_path / "z.npz", emb=_x(1000, 8))
    monkeypatch.setattr(numpy_file, "available_memory", lambda: 10_000)
    with pytest.raises(ResourceError) as info:
        reprdiag.analyze(tmp_path / "z.npz", device="cpu")
    assert info.value.exit_code == 3
    assert info.value.one_line() == (
        f"{tmp_path / 'z.npz'}[emb]: member 'emb' is compressed, so it must be unpacked into "
        "memory whole: 32.0 kB, more than the 10.0 kB available; save it uncompressed "
        "(np.savez, not np.savez_compressed), as .npy or as safetensors, so that it is read row "
        "by row")
    monkeypatch.undo()  # with the memory there, the same file reads back exactly
    np.testing.assert_array_equal(_read_all(open_sources(tmp_path / "z.npz")[0]), _x(1000, 8))


def test_refused_pickle_gets_our_message_not_torchs(tmp_path: Path) -> None:
    """An opcode the weights-only unpickler lacks made torch say "Please file an issue"; an
    unknown class made it suggest allowlisting the class. Both now name only what was
    refused."""
    torch.save({"emb": torch.from_numpy(_x())}, tmp_path / "ok.pth")
    with zipfile.ZipFile(tmp_path / "ok.pth") as archive:
        members = [(info, archive.read(info.filename)) for info in archive.infolist()]
    with zipfile.ZipFile(tmp_path / "ext.pth", "w") as archive:
        for info, data in members:
            archive.writestr(info, b"\x80\x02\x82\x01." if info.filename.endswith("data.pkl")
                             else data)
    torch.save({"emb": torch.from_numpy(_x()), "counts": np.ones(3)}, tmp_path / "np.pth")
    for name, reason in (("ext.pth", "Unsupported operand 130"),
                         ("np.pth", "unsupported global numpy.")):
        with pytest.raises(InputError) as info:
            reprdiag.analyze(tmp_path / name, device="cpu")
        text = info.value.one_line()
        assert f"refuses to load ({reason}" in text and "nothing in it was run" in text
        assert "file an issue" not in text.lower() and "add_safe_globals" not in text
