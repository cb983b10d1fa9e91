"""Writing extracted rows incrementally: one (N, d) tensor per layer, appended batch by batch.

safetensors needs every tensor's shape in its header, which comes first in the file, so
:class:`SafetensorsSpool` appends each layer's raw bytes to a spool file beside the output and,
at :meth:`~SafetensorsSpool.close`, writes the header followed by the spools copied in 16 MiB
blocks: memory stays O(batch·d) and the disk holds the data twice for a moment. Tensors are
laid out in layer order, and ``reprdiag analyze`` lists them in that order.
:class:`HDF5Writer` appends to resizable datasets instead (bfloat16 is stored as float32, which
HDF5 lacks).
"""

from __future__ import annotations

import json
import shutil
import struct
import tempfile
from pathlib import Path
from typing import Protocol

import h5py
import torch

from reprdiag.errors import UsageError, source_label

_ST_DTYPES = {torch.float64: "F64", torch.float32: "F32", torch.float16: "F16",
              torch.bfloat16: "BF16", torch.int64: "I64", torch.int32: "I32",
              torch.int16: "I16", torch.int8: "I8", torch.uint8: "U8", torch.bool: "BOOL"}
_BLOCK = 16 * 2**20
WRITE_FORMATS = {".safetensors": "safetensors", ".h5": "hdf5", ".hdf5": "hdf5"}


class RowWriter(Protocol):
    """Where extracted rows go: ``add`` appends rows of a layer, ``close`` completes the file."""

    def add(self, name: str, rows: torch.Tensor) -> None: ...

    def close(self) -> None: ...

    def abort(self) -> None: ...


class SafetensorsSpool:
    """Append rows per layer to spool files, then assemble one safetensors file at ``path``.

    >>> import tempfile, pathlib
    >>> from safetensors.torch import load_file
    >>> out = pathlib.Path(tempfile.mkdtemp()) / "e.safetensors"
    >>> w = SafetensorsSpool(out)
    >>> w.add("b", torch.ones(2, 3)); w.add("a", torch.zeros(1, 2)); w.add("b", torch.ones(1, 3))
    >>> w.close()
    >>> sorted((k, tuple(v.shape)) for k, v in load_file(out).items())
    [('a', (1, 2)), ('b', (3, 3))]
    """

    def __init__(self, path: Path, metadata: dict[str, str] | None = None):
        self.path = Path(path)
        self.metadata = dict(metadata or {})
        self._dir = tempfile.TemporaryDirectory(prefix=".reprdiag-spool-", dir=self.path.parent)
        self._files: dict[str, tuple[Path, torch.dtype, int]] = {}
        self._rows: dict[str, int] = {}

    def add(self, name: str, rows: torch.Tensor) -> None:
        rows = rows.detach().to("cpu").contiguous()
        if name not in self._files:
            spool = Path(self._dir.name) / f"{len(self._files)}.bin"
            self._files[name] = (spool, rows.dtype, int(rows.shape[1]))
            self._rows[name] = 0
        spool, dtype, _ = self._files[name]
        with open(spool, "ab") as fh:
            fh.write(rows.to(dtype).reshape(-1).view(torch.uint8).numpy().tobytes())
        self._rows[name] += int(rows.shape[0])

    def _header(self) -> bytes:
        header: dict[str, object] = {"__metadata__": self.metadata} if self.metadata else {}
        offset = 0
        for name, (spool, dtype, width) in self._files.items():
            size = spool.stat().st_size
            header[name] = {"dtype": _ST_DTYPES[dtype], "shape": [self._rows[name], width],
                            "data_offsets": [offset, offset + size]}
            offset += size
        raw = json.dumps(header, separators=(",", ":")).encode()
        return raw + b" " * (-len(raw) % 8)

    def close(self) -> None:
        try:
            header = self._header()
            with open(self.path, "wb") as out:
                out.write(struct.pack("<Q", len(header)))
                out.write(header)
                for spool, _, _ in self._files.values():
                    with open(spool, "rb") as fh:
                        shutil.copyfileobj(fh, out, _BLOCK)
        finally:
            self._dir.cleanup()

    def abort(self) -> None:
        self._dir.cleanup()


class HDF5Writer:
    """Append rows per layer to resizable HDF5 datasets (chunked, one per layer)."""

    def __init__(self, path: Path, metadata: dict[str, str] | None = None):
        self.file = h5py.File(path, "w", track_order=True)
        self.file.attrs.update(metadata or {})

    def add(self, name: str, rows: torch.Tensor) -> None:
        rows = rows.detach().to("cpu")
        if rows.dtype == torch.bfloat16:
            rows = rows.float()
        data = rows.numpy()
        if name not in self.file:
            self.file.create_dataset(name, shape=(0, data.shape[1]), dtype=data.dtype,
                                     maxshape=(None, data.shape[1]),
                                     chunks=(max(1, min(1024, _BLOCK // max(1, data[0].nbytes))),
                                             data.shape[1]))
        ds = self.file[name]
        n = ds.shape[0]
        ds.resize(n + data.shape[0], axis=0)
        ds[n:] = data

    def close(self) -> None:
        self.file.close()

    def abort(self) -> None:
        self.file.close()


def writer_format(path: Path) -> str:
    """``safetensors`` or ``hdf5``, from the output file's extension.

    >>> writer_format(Path("emb.safetensors")), writer_format(Path("emb.h5"))
    ('safetensors', 'hdf5')
    """
    fmt = WRITE_FORMATS.get(Path(path).suffix.lower())
    if fmt is None:
        raise UsageError("cannot tell the output format from the extension",
                         source=source_label(path),
                         hint="name the output *.safetensors or *.h5")
    return fmt


def open_writer(fmt: str, path: Path, metadata: dict[str, str] | None = None) -> RowWriter:
    """A writer of format ``fmt`` (see :func:`writer_format`) that writes ``path``."""
    return {"safetensors": SafetensorsSpool, "hdf5": HDF5Writer}[fmt](path, metadata)
