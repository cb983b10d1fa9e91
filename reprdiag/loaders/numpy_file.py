"""``.npy`` (memory-mapped) and ``.npz`` (members memory-mapped when stored uncompressed)."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import torch

from reprdiag.errors import InputError, source_label
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


def _member_memmap(path: Path, archive: zipfile.ZipFile, info: zipfile.ZipInfo) -> np.ndarray:
    """Map an uncompressed ``.npy`` member in place; read a compressed one into memory."""
    if info.compress_type != zipfile.ZIP_STORED:
        with archive.open(info) as fh:
            return np.lib.format.read_array(fh, allow_pickle=False)
    with open(path, "rb") as fh:
        fh.seek(info.header_offset)
        local = fh.read(30)
        name_len = int.from_bytes(local[26:28], "little")
        extra_len = int.from_bytes(local[28:30], "little")
        data_start = info.header_offset + 30 + name_len + extra_len
        fh.seek(data_start)
        version = np.lib.format.read_magic(fh)
        reader = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                  else np.lib.format.read_array_header_2_0)
        shape, fortran, dtype = reader(fh)
        if dtype.hasobject:
            raise ValueError("object arrays cannot be read without pickle")
        offset = fh.tell()
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
                    array = _member_memmap(path, archive, info)
                except ValueError as exc:
                    raise InputError(f"member {key!r} cannot be read ({exc})",
                                     source=source_label(path, key),
                                     hint="save numeric arrays only (no object dtype)") from exc
                sources.append(NumpySource(path, key, array))
    except (zipfile.BadZipFile, OSError, EOFError) as exc:
        raise InputError(f"is not a readable .npz file ({exc})", source=source_label(path),
                         hint="check that the file was fully written") from exc
    return sources
