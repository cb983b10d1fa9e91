"""Loaders: one module per file format behind one protocol (:class:`ArraySource`).

:func:`open_sources` sniffs a file's format from its first bytes (the extension is only a
fallback), lists its arrays, applies ``--key`` selection and pooling, and returns the 2-D
sources to analyze.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Callable, Sequence
from pathlib import Path

from reprdiag.errors import InputError, UsageError, did_you_mean, source_label
from reprdiag.loaders.base import (
    POOL_METHODS,
    ArraySource,
    ConcatSource,
    PooledSource,
    TensorSource,
    checked_dtype,
    pool_method,
    pool_rows,
    untrusted,
)
from reprdiag.loaders.hdf5_file import open_hdf5
from reprdiag.loaders.numpy_file import open_npy, open_npz
from reprdiag.loaders.safetensors_file import open_safetensors
from reprdiag.loaders.torch_file import open_torch

__all__ = ["FORMATS", "POOL_METHODS", "ArraySource", "ConcatSource", "PooledSource",
           "TensorSource", "check_regular_file", "detect_format", "list_arrays", "open_sources",
           "pool_rows", "select_arrays"]

Opener = Callable[[Path], list[ArraySource]]

FORMATS: dict[str, Opener] = {
    "safetensors": open_safetensors,
    "hdf5": open_hdf5,
    "npy": open_npy,
    "npz": open_npz,
    "torch": open_torch,
}

_EXTENSIONS = {".safetensors": "safetensors", ".h5": "hdf5", ".hdf5": "hdf5", ".hdf": "hdf5",
               ".npy": "npy", ".npz": "npz", ".pt": "torch", ".pth": "torch", ".bin": "torch"}

_HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"


def _sniff(head: bytes, path: Path) -> str | None:
    if head.startswith(b"\x93NUMPY"):
        return "npy"
    if head.startswith(_HDF5_MAGIC):
        return "hdf5"
    if head.startswith(b"PK\x03\x04"):
        return _sniff_zip(path)
    if len(head) >= 9 and head[8:9] == b"{":  # 8-byte header length, then the JSON header
        return "safetensors"
    if head[:1] == b"\x80" and head[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05"):
        return "torch"  # legacy (non-zip) torch.save: a pickle stream, protocol 2-5
    return None


def _sniff_zip(path: Path) -> str:
    """A zip archive is a ``.pt`` (holds ``data.pkl``) or an ``.npz`` (holds ``.npy`` members)."""
    import zipfile

    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as exc:
        raise InputError(f"is a zip archive (.npz or .pt) that cannot be opened ({exc})",
                         source=source_label(path),
                         hint="the file is probably truncated; rewrite it") from exc
    if any(n.endswith("data.pkl") for n in names):
        return "torch"
    if any(n.endswith(".npy") for n in names):
        return "npz"
    raise InputError("is a zip archive with neither .npy members nor a PyTorch data.pkl",
                     source=source_label(path), hint="supported: .npz and torch.save files")


_KINDS = ((stat.S_ISFIFO, "a named pipe (FIFO)"), (stat.S_ISSOCK, "a socket"),
          (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"))


def check_regular_file(path: Path, label: str | None = None,
                       what: str = "an embedding file") -> None:
    """Refuse, before anything opens it, a path that is not a regular file: missing (or a
    dangling link), a symbolic-link loop, a folder, a FIFO or a device (``open`` on a FIFO
    blocks until a writer appears; a device never ends)."""
    label = label or source_label(path)
    try:
        info = os.stat(path)
    except FileNotFoundError as exc:
        if os.path.islink(path):
            raise InputError(f"is a symbolic link to {os.readlink(path)}, which does not exist",
                             source=label, hint="fix or remove the link") from exc
        raise InputError("no such file", source=label, hint="check the path") from exc
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise InputError("is a symbolic link loop (a link that points back to itself)",
                             source=label, hint="fix the links along the path") from exc
        if exc.errno == errno.EACCES:
            raise InputError("permission denied", source=label,
                             hint="check the file's permissions") from exc
        raise InputError(f"cannot be read ({exc.strerror or exc})", source=label,
                         hint="check the path") from exc
    if stat.S_ISDIR(info.st_mode):
        raise InputError(f"is a directory, not {what}", source=label,
                         hint="pass a file (or a run folder holding report.json to compare/gate)")
    if not stat.S_ISREG(info.st_mode):
        kind = next((name for test, name in _KINDS if test(info.st_mode)), "not a regular file")
        raise InputError(f"is {kind}, not a regular file", source=label,
                         hint=f"save {what} to disk and pass its path")


def detect_format(path: str | os.PathLike[str]) -> str:
    """Name of the format of ``path``, read from its magic bytes.

    Raises :class:`InputError` for a missing, unreadable, empty or unrecognised file.
    """
    path = Path(path)
    label = source_label(path)
    check_regular_file(path, label)
    try:
        with open(path, "rb") as fh:
            head = fh.read(16)
    except PermissionError as exc:
        raise InputError("permission denied", source=label,
                         hint="check the file's permissions") from exc
    except OSError as exc:
        raise InputError(f"cannot be read ({exc.strerror or exc})", source=label,
                         hint="check that it is a regular, readable file") from exc
    if not head:
        raise InputError("is empty (0 bytes)", source=label,
                         hint="the writer may have failed; regenerate the file")
    fmt = _sniff(head, path)
    if fmt is None:
        by_ext = _EXTENSIONS.get(path.suffix.lower())
        expected = f" although its extension says {by_ext}" if by_ext else ""
        raise InputError(f"is not a recognised embedding file{expected}", source=label,
                         hint="supported: safetensors, HDF5, .npy, .npz, .pt/.pth")
    return fmt


def list_arrays(path: str | os.PathLike[str]) -> list[ArraySource]:
    """Every array stored in ``path`` (any rank), unfiltered."""
    path = Path(path)
    fmt = detect_format(path)
    with untrusted(source_label(path), f"cannot be parsed as {fmt}"):
        return FORMATS[fmt](path)


def select_arrays(arrays: list[ArraySource], keys: Sequence[str] | None,
                  path: Path) -> list[ArraySource]:
    """``keys`` of ``arrays`` in that order (an unknown key names the closest valid one);
    without keys every array of two or more axes."""
    if not keys:
        return [a for a in arrays if len(a.shape) >= 2]
    by_key = {(a.key or ""): a for a in arrays}
    chosen = []
    for key in keys:
        if key not in by_key:
            valid = [k for k in by_key if k]
            hint = did_you_mean(key, valid)
            shown = ", ".join(valid[:20]) + (" ..." if len(valid) > 20 else "")
            raise UsageError(f"has no key {key!r}", source=source_label(path),
                             hint=f"{hint}valid keys: {shown or '(none)'}")
        chosen.append(by_key[key])
    return chosen


def as_rows(source: ArraySource, pool: str | None) -> ArraySource:
    """Check a source's dtype and rank (:func:`checked_dtype`) and pool it to 2-D where
    needed."""
    source = checked_dtype(source)
    ndim = len(source.shape)
    if ndim < 2:
        raise InputError(f"is {ndim}-D with shape {tuple(source.shape)}, not rows × features",
                         source=source.label, hint="store embeddings as an (N, d) array")
    method = pool_method(source.shape, pool, f"is {ndim}-D with shape {tuple(source.shape)}",
                         source.label)
    return source if method is None else PooledSource(source, method)


def open_sources(path: str | os.PathLike[str], keys: Sequence[str] | None = None,
                 pool: str | None = None) -> list[ArraySource]:
    """The 2-D sources to analyze in one file.

    Without ``keys`` every array of two or more axes is taken (3-D ones mean-pooled unless
    ``pool`` says otherwise); with ``keys`` exactly those, in that order.
    """
    path = Path(path)
    chosen = select_arrays(list_arrays(path), keys, path)
    if not chosen:
        raise InputError("holds no 2-D array to analyze", source=source_label(path),
                         hint="store embeddings as an (N, d) array")
    return [as_rows(s, pool) for s in chosen]
