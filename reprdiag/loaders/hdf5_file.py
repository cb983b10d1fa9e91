"""HDF5 files: every numeric dataset, nested groups walked, read by h5py slicing."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import torch

from reprdiag.errors import InputError, source_label
from reprdiag.loaders.base import ArraySource, FileArraySource, numpy_to_tensor, untrusted


class HDF5Source(FileArraySource):
    def read(self, start: int, stop: int) -> torch.Tensor:
        with untrusted(self.label, f"cannot read rows {start}:{stop}",
                       hint="the file may be truncated or corrupt"), \
                h5py.File(self.path, "r") as f:
            rows = f[self.key][start:stop]
        return numpy_to_tensor(np.asarray(rows), self.label)


def open_hdf5(path: Path) -> list[ArraySource]:
    """Every numeric dataset in the file, in the order h5py visits them (groups walked)."""
    found: list[ArraySource] = []

    def visit(name: str, obj: object) -> None:
        if isinstance(obj, h5py.Dataset) and obj.dtype.kind in "biuf" and obj.ndim >= 1:
            found.append(HDF5Source(path, name, tuple(obj.shape), str(obj.dtype)))

    try:
        with h5py.File(path, "r") as f:
            f.visititems(visit)
    except OSError as exc:
        raise InputError(f"is not a readable HDF5 file ({exc})", source=source_label(path),
                         hint="check that the file was fully written") from exc
    return found
