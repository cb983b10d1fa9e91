"""safetensors files, read through ``safe_open(...).get_slice`` (memory-mapped, by row range)."""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open

from reprdiag.errors import InputError, first_line, source_label
from reprdiag.loaders.base import ArraySource, FileArraySource

_DTYPES = {"F64": "float64", "F32": "float32", "F16": "float16", "BF16": "bfloat16",
           "I64": "int64", "I32": "int32", "I16": "int16", "I8": "int8", "U8": "uint8",
           "BOOL": "bool", "U16": "uint16", "U32": "uint32", "U64": "uint64",
           "C64": "complex64", "F8_E4M3": "float8_e4m3fn", "F8_E5M2": "float8_e5m2"}


class SafetensorsSource(FileArraySource):
    def read(self, start: int, stop: int) -> torch.Tensor:
        try:
            with safe_open(str(self.path), framework="pt") as f:
                rows = f.get_slice(self.key)[start:stop]
        except (OSError, SafetensorError) as exc:
            raise InputError(f"cannot read rows {start}:{stop} ({first_line(exc, None)})",
                             source=self.label, hint="the file changed or is corrupt") from exc
        if rows.dtype == torch.bool:
            rows = rows.to(torch.uint8)
        return rows


MAX_HEADER_BYTES = 100 * 2**20  # the safetensors format's own limit


def check_header_length(path: Path) -> None:
    """Refuse a header length that is absurd or runs past the end of the file, before any
    parser sees it."""
    size = path.stat().st_size
    with open(path, "rb") as fh:
        length = int.from_bytes(fh.read(8), "little")
    if length > MAX_HEADER_BYTES:
        raise InputError(f"claims a {length}-byte header (the format allows at most "
                         f"{MAX_HEADER_BYTES})", source=source_label(path),
                         hint="the file is corrupt or not safetensors")
    if 8 + length > size:
        raise InputError(f"claims a {length}-byte header but the file has only {size} bytes",
                         source=source_label(path), hint="the file is probably truncated")


def open_safetensors(path: Path) -> list[ArraySource]:
    """Every tensor in a safetensors file, with its shape and dtype read from the header."""
    check_header_length(path)
    try:
        with safe_open(str(path), framework="pt") as f:
            sources: list[ArraySource] = []
            # file (offset) order, which is layer order in files `reprdiag extract` writes
            keys = f.offset_keys() if hasattr(f, "offset_keys") else f.keys()
            for key in keys:
                piece = f.get_slice(key)
                dtype = _DTYPES.get(piece.get_dtype(), piece.get_dtype().lower())
                sources.append(SafetensorsSource(path, key, tuple(piece.get_shape()), dtype))
    except (OSError, SafetensorError) as exc:
        raise InputError(f"is not a readable safetensors file ({first_line(exc, None)})",
                         source=source_label(path),
                         hint="check that the file was fully written") from exc
    return sources
