"""``.npy`` (memory-mapped) and ``.npz`` (members memory-mapped when stored uncompressed)."""

from __future__ import annotations

import os
import zipfile
from pathlib import Path
from typing import BinaryIO

import numpy as np
import torch

from reprdiag.errors import InputError, ResourceError, source_label
from reprdiag.loaders.base import ArraySource, numpy_to_tensor


class NumpySource(ArraySource):
    """A numpy array, usually a memmap; ``key`` is ``None`` for a bare ``.npy``."""

    def __init__(self, path: Path, key: str | None, array: np.ndarray):
        self.path, self.key, self._array = path, key, array

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self._array.shape)

    @property
    def dtype(self) -> str:
        return str(self._array.dtype)

    def read(self, start: int, stop: int) -> torch.Tensor:
        return numpy_to_tensor(np.asarray(self._array[start:stop]), self.label)


def open_npy(path: Path) -> list[ArraySource]:
    try:
        array = np.load(path, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise InputError(f"is not a readable .npy file ({exc})", source=source_label(path),
                         hint="check that the file was fully written and holds no objects"
                         ) from exc
    return [NumpySource(path, None, array)]


def human_bytes(n: float) -> str:
    """``3.2 GB``-style sizes for messages.

    >>> human_bytes(32e9), human_bytes(4196)
    ('32.0 GB', '4.2 kB')
    """
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if n < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    raise AssertionError


def available_memory() -> int | None:
    """Bytes of memory available to a new allocation (MemAvailable on Linux), if known."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def _read_header(fh: BinaryIO) -> tuple[tuple[int, ...], bool, np.dtype]:
    version = np.lib.format.read_magic(fh)
    reader = (np.lib.format.read_array_header_1_0 if version == (1, 0)
              else np.lib.format.read_array_header_2_0)
    shape, fortran, dtype = reader(fh)
    if dtype.hasobject:
        raise ValueError("object arrays cannot be read without pickle")
    return shape, fortran, dtype


def _check_claim(label: str, key: str, shape: tuple[int, ...], dtype: np.dtype, have: int
                 ) -> int:
    """The bytes a member's header claims; refuse a claim beyond the ``have`` bytes it holds."""
    need = int(np.prod(shape, dtype=object)) * dtype.itemsize
    if need > have:
        raise InputError(f"member {key!r} claims shape {tuple(shape)} of {dtype} "
                         f"({human_bytes(need)}) but holds only {human_bytes(have)} of data",
                         source=label, hint="the file is truncated or corrupt; rewrite it")
    return need


def _member_memmap(path: Path, archive: zipfile.ZipFile, info: zipfile.ZipInfo,
                   key: str) -> np.ndarray:
    """Map an uncompressed ``.npy`` member in place; read a compressed one into memory (after
    checking that its claimed size is what it holds and fits in memory)."""
    label = source_label(path, key)
    if info.compress_type != zipfile.ZIP_STORED:
        with archive.open(info) as fh:
            shape, fortran, dtype = _read_header(fh)
            need = _check_claim(label, key, shape, dtype, info.file_size - fh.tell())
            free = available_memory()
            advice = ("save it uncompressed (np.savez, not np.savez_compressed), as .npy or as "
                      "safetensors, so that it is read row by row")
            if free is not None and need > free:
                raise ResourceError(f"member {key!r} is compressed, so it must be unpacked into "
                                    f"memory whole: {human_bytes(need)}, more than the "
                                    f"{human_bytes(free)} available", source=label, hint=advice)
            try:
                data = np.frombuffer(fh.read(need), dtype=dtype)
            except MemoryError as exc:
                raise ResourceError(f"member {key!r} is compressed, so it must be unpacked into "
                                    f"memory whole ({human_bytes(need)}), which failed",
                                    source=label, hint=advice) from exc
        return data.reshape(shape, order="F" if fortran else "C")
    with open(path, "rb") as fh:
        fh.seek(info.header_offset)
        local = fh.read(30)
        name_len = int.from_bytes(local[26:28], "little")
        extra_len = int.from_bytes(local[28:30], "little")
        data_start = info.header_offset + 30 + name_len + extra_len
        fh.seek(data_start)
        shape, fortran, dtype = _read_header(fh)
        offset = fh.tell()
        _check_claim(label, key, shape, dtype, min(info.file_size - (offset - data_start),
                                                   path.stat().st_size - offset))
    return np.memmap(path, dtype=dtype, mode="r", offset=offset, shape=shape,
                     order="F" if fortran else "C")


def open_npz(path: Path) -> list[ArraySource]:
    sources: list[ArraySource] = []
    try:
        with zipfile.ZipFile(path) as archive:
            for info in archive.infolist():
                if not info.filename.endswith(".npy"):
                    continue
                key = info.filename[: -len(".npy")]
                try:
                    array = _member_memmap(path, archive, info, key)
                except ValueError as exc:
                    raise InputError(f"member {key!r} cannot be read ({exc})",
                                     source=source_label(path, key),
                                     hint="save numeric arrays only (no object dtype)"
                                     if "object" in str(exc) else
                                     "the file is truncated or corrupt; rewrite it") from exc
                sources.append(NumpySource(path, key, array))
    except (zipfile.BadZipFile, OSError, EOFError) as exc:
        raise InputError(f"is not a readable .npz file ({exc})", source=source_label(path),
                         hint="check that the file was fully written") from exc
    return sources
