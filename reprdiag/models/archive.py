"""What a ``.pt2`` archive may hold before torch is asked to load it: tensors, nothing that runs.

``torch.export.load`` reads most of an archive as raw tensor bytes and a JSON graph whose call
targets are restricted to registered torch operators. Five kinds of entry are not like that:

- weights or constants marked ``"use_pickle": true`` (tensor subclasses) are read with
  ``torch.load(weights_only=False)``: a pickle, so arbitrary code;
- ``opaque_obj_*`` constants are read with ``pickle.loads`` and ``custom_obj_*`` constants with the
  TorchBind unpickler;
- ``data/aotinductor/``, ``data/executorch/`` and ``data/mtia`` hold compiled kernels, which torch
  loads as shared libraries;
- sample inputs and legacy weight files are ``torch.save`` archives that torch reads weights-only
  *but retries with* ``weights_only=False`` when that fails.

:func:`check_export_archive` reads the archive's table of contents and its payload configs, and
refuses the first four with a one-line error naming the file and the entry; every pickle-bearing
entry of the last kind must load with ``torch.load(weights_only=True)`` here first (so torch's own
weights-only attempt succeeds and its fallback never runs). :func:`weights_only_loads` is the
second line of defence: inside it every ``torch.load`` is forced to be weights-only.

The archive is checked and loaded through one open file handle, so the bytes checked are the
bytes loaded even if the path is replaced in between.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import zipfile
from collections.abc import Iterator, Mapping
from typing import IO, Any

import torch

from reprdiag.errors import InputError

COMPILED_DIRS = ("data/aotinductor/", "data/executorch/", "data/mtia")
CONFIG_DIRS = ("data/weights/", "data/constants/")
PICKLED_OBJECT_PREFIXES = ("custom_obj_", "opaque_obj_")
# torch.save archives that torch reads weights-only first, then with pickle on failure.
TORCH_SAVE_DIRS = ("data/sample_inputs/", "data/weights/", "data/constants/")
LEGACY_TORCH_SAVE_FILES = ("serialized_state_dict.json", "serialized_constants.json",
                           "serialized_example_inputs.json")
_HINT = ("re-export the model from plain tensors (no tensor subclasses, custom objects or "
         "AOTInductor packages) with torch.export.save - nothing in the file was run")


def _inner(name: str) -> str:
    """The path inside the archive's root folder (``model/data/x`` → ``data/x``)."""
    return name.split("/", 1)[1] if "/" in name else name


def _refuse(label: str, entry: str, problem: str) -> InputError:
    return InputError(f"archive entry {entry!r} {problem}; refused", source=label, hint=_HINT)


def _read_config(archive: zipfile.ZipFile, name: str, label: str) -> Mapping[str, Any]:
    try:
        config = json.loads(archive.read(name)).get("config", {})
    except (ValueError, AttributeError, zipfile.BadZipFile) as exc:
        raise InputError(f"archive entry {_inner(name)!r} is not a readable payload config",
                         source=label, hint="save the program with torch.export.save") from exc
    if not isinstance(config, Mapping):
        raise InputError(f"archive entry {_inner(name)!r} is not a readable payload config",
                         source=label, hint="save the program with torch.export.save")
    return config


def _check_config(archive: zipfile.ZipFile, name: str, label: str) -> None:
    for fqn, meta in _read_config(archive, name, label).items():
        meta = meta if isinstance(meta, Mapping) else {}
        path = str(meta.get("path_name", ""))
        if meta.get("use_pickle"):
            raise _refuse(label, f"{_inner(name)}:{fqn}", "is stored as a pickle "
                          "(torch would unpickle it with weights_only=False)")
        if path.startswith(PICKLED_OBJECT_PREFIXES):
            raise _refuse(label, f"{_inner(name)}:{fqn}", f"is a pickled Python object ({path})")


def _is_torch_save_entry(inner: str) -> bool:
    if inner.rsplit("/", 1)[-1] in LEGACY_TORCH_SAVE_FILES:
        return True
    return inner.startswith(TORCH_SAVE_DIRS) and inner.endswith(".pt")


def _check_weights_only(archive: zipfile.ZipFile, name: str, label: str) -> None:
    try:
        with weights_only_loads():
            torch.load(io.BytesIO(archive.read(name)), map_location="cpu", weights_only=True)
    except Exception as exc:
        raise _refuse(label, _inner(name), "does not load weights-only (it holds pickled "
                      f"Python objects: {type(exc).__name__})") from exc


def check_export_archive(handle: IO[bytes], label: str) -> None:
    """Refuse a ``.pt2`` archive any of whose entries loading could run code.

    ``handle`` is an open binary file (left at an unspecified position); ``label`` names it in
    errors. Cost: one pass over the table of contents, the JSON payload configs and the (small)
    ``torch.save`` entries; tensor payloads are not read.
    """
    try:
        with zipfile.ZipFile(handle) as archive:
            for name in archive.namelist():
                inner = _inner(name)
                if inner.startswith(COMPILED_DIRS):
                    raise _refuse(label, inner, "is compiled code (an AOTInductor/ExecuTorch "
                                  "package is a shared library)")
                if inner.startswith(CONFIG_DIRS) and inner.endswith("_config.json"):
                    _check_config(archive, name, label)
                elif _is_torch_save_entry(inner):
                    _check_weights_only(archive, name, label)
    except zipfile.BadZipFile as exc:
        raise InputError(f"is not a readable torch.export archive ({exc})", source=label,
                         hint="save the program with torch.export.save") from exc


@contextlib.contextmanager
def weights_only_loads() -> Iterator[None]:
    """Force every ``torch.load`` in the block to be weights-only, whatever its caller asked.

    torch reads ``TORCH_FORCE_WEIGHTS_ONLY_LOAD`` at each call (a user's
    ``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD`` is lifted for the block); previous values are restored.
    """
    keys = ("TORCH_FORCE_WEIGHTS_ONLY_LOAD", "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD")
    before = {key: os.environ.get(key) for key in keys}
    os.environ[keys[0]] = "1"
    os.environ.pop(keys[1], None)  # torch refuses both at once
    try:
        yield
    finally:
        for key, value in before.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
