"""Benchmark inputs: N×d float32 embeddings written to safetensors or HDF5 slab by slab.

Rows are x = g·s + μ with g standard normal, s a power-law column scale (s_k = k^-0.75, a
decaying spectrum like real embeddings') and μ a common offset (the anisotropy of real
models), so the data is never held whole: memory O(slab·d) however large N is.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Iterator
from pathlib import Path

import h5py
import numpy as np
import torch

KEY = "emb"
SLAB_ROWS = 65536


def slabs(n: int, d: int, seed: int = 0) -> Iterator[np.ndarray]:
    """float32 row slabs of the benchmark matrix, deterministic in ``seed``."""
    gen = torch.Generator().manual_seed(seed)
    scale = torch.arange(1, d + 1, dtype=torch.float32) ** -0.75
    offset = 0.5 * torch.randn(d, generator=gen) * scale.sqrt()
    for lo in range(0, n, SLAB_ROWS):
        rows = min(SLAB_ROWS, n - lo)
        yield (torch.randn(rows, d, generator=gen) * scale + offset).numpy()


def first_rows(n: int, d: int, k: int, seed: int = 0) -> np.ndarray:
    """The first ``k`` rows of the matrix :func:`slabs` writes (for the float64 reference)."""
    parts, have = [], 0
    for slab in slabs(n, d, seed):
        parts.append(slab[: k - have])
        have += parts[-1].shape[0]
        if have >= k:
            break
    return np.concatenate(parts)


def write_safetensors(path: Path, n: int, d: int, seed: int = 0) -> Path:
    """Stream a one-tensor safetensors file (header written by hand, data appended)."""
    header = json.dumps({KEY: {"dtype": "F32", "shape": [n, d],
                               "data_offsets": [0, n * d * 4]}}).encode()
    header += b" " * (-len(header) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(header)) + header)
        for slab in slabs(n, d, seed):
            f.write(slab.tobytes())
    return path


def write_hdf5(path: Path, n: int, d: int, seed: int = 0) -> Path:
    """An HDF5 file with one contiguous (unchunked) float32 dataset."""
    with h5py.File(path, "w") as f:
        ds = f.create_dataset(KEY, shape=(n, d), dtype="float32")
        lo = 0
        for slab in slabs(n, d, seed):
            ds[lo: lo + slab.shape[0]] = slab
            lo += slab.shape[0]
    return path


WRITERS = {"safetensors": write_safetensors, "hdf5": write_hdf5}
SUFFIX = {"safetensors": ".safetensors", "hdf5": ".h5"}


def load_array(path: Path) -> np.ndarray:
    """The whole matrix in memory as float32 (what in-memory baselines start from)."""
    if path.suffix == ".h5":
        with h5py.File(path, "r") as f:
            return f[KEY][...]
    from safetensors.numpy import load_file

    return load_file(str(path))[KEY]
