"""Loading a model from a SPEC: one small loader per kind behind :data:`LOADERS`.

SPEC kinds: a ``torch.export`` program (``.pt2``), a TorchScript file, ``package.module:factory``
(plus ``--weights``: safetensors or a ``.pt`` state dict read with ``weights_only=True``), or
``hf:PATH`` (a local Hugging Face model folder; needs the optional ``transformers``). A factory
is imported and called only because ``--model`` names it: that trusts the named module.
"""

from __future__ import annotations

import ast
import contextlib
import importlib
import re
import warnings
import zipfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from reprdiag.errors import InputError, ReprdiagWarning, UsageError, first_line, source_label
from reprdiag.loaders import detect_format
from reprdiag.loaders.torch_file import refusal_reason
from reprdiag.models.archive import check_export_archive, weights_only_loads
from reprdiag.models.probes import HookProbe, Probe, ScriptProbe

_OBJECT_SPEC = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$")

#: What a one-line error quotes of an exception whose message is empty.
NO_MESSAGE = "(no message)"


@dataclass(frozen=True)
class ModelSpec:
    """What ``--model``, ``--weights`` and ``--model-arg`` say."""

    spec: str
    weights: str | None = None
    args: Mapping[str, Any] = field(default_factory=dict)


def is_object_spec(text: str) -> bool:
    """``package.module:name`` that is not an existing path.

    >>> is_object_spec("reprdiag.examples.digits:build"), is_object_spec("model.pt2")
    (True, False)
    """
    return bool(_OBJECT_SPEC.match(text)) and not Path(text).exists()


def import_object(spec: str, what: str) -> Any:
    """Import ``package.module`` and return its attribute ``name`` (``spec`` is
    ``package.module:name``). Runs the module's code: the caller trusts it."""
    module_name, _, attr = spec.partition(":")
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:
        raise InputError(f"cannot import module {module_name!r} ({type(exc).__name__}: "
                         f"{first_line(exc, empty=NO_MESSAGE)})", source=spec,
                         hint=f"check the {what}'s module is importable (PYTHONPATH)") from exc
    obj: Any = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise InputError(f"module {module_name!r} has no attribute {attr!r}", source=spec,
                             hint=f"name the {what} as package.module:function")
        obj = getattr(obj, part)
    if not callable(obj):
        raise InputError(f"{attr!r} is not callable", source=spec,
                         hint=f"name a function or class as the {what}")
    return obj


def call_user(spec: str, fn: Callable[..., Any], what: str, **kwargs: Any) -> Any:
    """Call user code, turning any exception into a one-line error that names it."""
    try:
        return fn(**kwargs)
    except Exception as exc:
        raise InputError(f"{what} raised {type(exc).__name__}: "
                         f"{first_line(exc, empty=NO_MESSAGE)}", source=spec,
                         hint=f"fix the {what} or its arguments") from exc


def parse_model_args(items: Sequence[str] | None) -> dict[str, Any]:
    """``["hidden=64", "name=mlp", "bias=false"]`` → ``{"hidden": 64, "name": "mlp",
    "bias": False}``: Python literals where they parse, strings otherwise.

    >>> parse_model_args(["hidden=64", "name=mlp", "bias=false", "sizes=[1, 2]"])
    {'hidden': 64, 'name': 'mlp', 'bias': False, 'sizes': [1, 2]}
    """
    out: dict[str, Any] = {}
    for item in items or []:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip().isidentifier():
            raise UsageError(f"--model-arg {item!r} is not key=value",
                             hint="pass e.g. --model-arg hidden=64")
        text = {"true": "True", "false": "False", "none": "None"}.get(raw.strip().lower(), raw)
        try:
            out[key.strip()] = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            out[key.strip()] = raw
    return out


def spec_kind(spec: str) -> str:
    """Which loader reads ``spec``: ``hf``, ``factory``, ``export`` or ``torchscript``."""
    if spec.startswith("hf:"):
        return "hf"
    if is_object_spec(spec):
        return "factory"
    path = Path(spec)
    if not path.exists():
        raise InputError("no such model file", source=spec,
                         hint="pass a .pt2 program, a TorchScript file, package.module:factory "
                         "or hf:FOLDER")
    if path.is_file() and zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
        if any(n.endswith(("/archive_format", "/models/model.json")) for n in names):
            return "export"
        if any(n.endswith("/constants.pkl") or "/code/" in n for n in names):
            return "torchscript"
    raise InputError("is neither a torch.export program nor a TorchScript file",
                     source=source_label(path),
                     hint="save with torch.export.save or torch.jit.save, or use "
                     "package.module:factory --weights FILE")


@contextlib.contextmanager
def quiet_warnings() -> Iterator[None]:
    """Silence torch's deprecation notices while loading (stderr carries only our errors)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        yield


def _no_extras(model: ModelSpec, kind: str) -> None:
    if model.weights is not None or model.args:
        raise UsageError(f"--weights and --model-arg apply to package.module:factory, not to a "
                         f"{kind} file", source=model.spec, hint="drop them")


def load_export(model: ModelSpec) -> Probe:
    """A ``torch.export`` program, unflattened into its module tree so hooks fire.

    The archive is checked first (:func:`check_export_archive`: no pickled weights or objects,
    no compiled kernels) and loaded from the same open file with every ``torch.load`` forced
    weights-only, so no code stored in the file runs.
    """
    _no_extras(model, "torch.export")
    with open(model.spec, "rb") as handle:
        check_export_archive(handle, source_label(Path(model.spec)))
        handle.seek(0)
        try:
            with quiet_warnings(), weights_only_loads():
                program = torch.export.load(handle)
        except Exception as exc:
            raise InputError("cannot load the torch.export program "
                             f"({first_line(exc, empty=NO_MESSAGE)})",
                             source=model.spec, hint="save it with torch.export.save") from exc
    with quiet_warnings():
        return HookProbe(torch.export.unflatten(program), model.spec)


def load_torchscript(model: ModelSpec) -> Probe:
    """A TorchScript file (``torch.jit.save`` of a scripted or traced module).

    TorchScript archives hold TorchScript code and tensors read by TorchScript's own unpickler,
    which builds only tensors and registered TorchScript classes (no Python callables). torch
    has deprecated TorchScript: a warning points to ``.pt2``.
    """
    _no_extras(model, "TorchScript")
    warnings.warn(f"{model.spec}: TorchScript is deprecated in torch; save the model with "
                  "torch.export.save as a .pt2 program instead", ReprdiagWarning, stacklevel=2)
    try:
        with quiet_warnings():
            module = torch.jit.load(model.spec, map_location="cpu")
    except Exception as exc:
        raise InputError(f"cannot load the TorchScript file ({first_line(exc, empty=NO_MESSAGE)})",
                         source=model.spec, hint="save it with torch.jit.save") from exc
    return ScriptProbe(module, model.spec)


def read_state_dict(path: str) -> dict[str, torch.Tensor]:
    """A state dict from safetensors or a ``.pt`` file (``torch.load(weights_only=True)``)."""
    fmt = detect_format(path)
    if fmt == "safetensors":
        from safetensors.torch import load_file

        return load_file(path, device="cpu")
    if fmt != "torch":
        raise InputError(f"is a {fmt} file, not a state dict", source=path,
                         hint="pass --weights as safetensors or a torch.save'd state dict")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch's own text suggests weights_only=False: never repeat it
        raise InputError(f"is not a weights-only state dict ({refusal_reason(exc)}) - nothing "
                         "in it was run", source=path,
                         hint="save model.state_dict() with torch.save or safetensors") from exc
    if isinstance(state, Mapping) and isinstance(state.get("state_dict"), Mapping):
        state = state["state_dict"]
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor)
                                                 for v in state.values()):
        raise InputError("does not hold a mapping of names to tensors", source=path,
                         hint="save model.state_dict()")
    return dict(state)


def _load_weights(module: nn.Module, path: str) -> None:
    state = read_state_dict(path)
    missing, unexpected = module.state_dict().keys() - state.keys(), state.keys() - set(
        module.state_dict())
    if missing or unexpected:
        detail = "; ".join(f"{what}: {', '.join(sorted(keys)[:5])}"
                           for what, keys in (("missing", missing), ("unexpected", unexpected))
                           if keys)
        raise InputError(f"does not match the model's parameters ({detail})", source=path,
                         hint="check --weights and --model-arg against the factory")
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise InputError(f"does not fit the model ({first_line(exc, empty=NO_MESSAGE)})",
                         source=path,
                         hint="check --model-arg against the checkpoint's shapes") from exc


def load_factory(model: ModelSpec) -> Probe:
    """``package.module:factory`` called with ``--model-arg`` values, then ``--weights``."""
    factory = import_object(model.spec, "model factory")
    module = call_user(model.spec, factory, "model factory", **dict(model.args))
    if not isinstance(module, nn.Module):
        raise InputError(f"returned {type(module).__name__}, not a torch.nn.Module",
                         source=model.spec, hint="the factory must return the model")
    if model.weights is not None:
        _load_weights(module, model.weights)
    return HookProbe(module, model.spec)


def load_hf(model: ModelSpec) -> Probe:
    """``hf:FOLDER``: a local Hugging Face model (optional ``transformers``)."""
    from reprdiag.models.hf import HFProbe

    _no_extras(model, "Hugging Face")
    return HFProbe(model.spec.removeprefix("hf:"), model.spec)


LOADERS: dict[str, Callable[[ModelSpec], Probe]] = {
    "export": load_export,
    "torchscript": load_torchscript,
    "factory": load_factory,
    "hf": load_hf,
}


def load_model(model: ModelSpec, device: torch.device) -> Probe:
    """Load ``model`` by kind, in eval mode, parameters frozen, on ``device``."""
    probe = LOADERS[spec_kind(model.spec)](model)
    module = probe.module
    module.eval()
    for p in module.parameters():
        p.requires_grad_(False)
    module.to(device)
    return probe
