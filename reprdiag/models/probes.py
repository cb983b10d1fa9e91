"""Probes: run a model on a batch and return the outputs of named layers.

:class:`HookProbe` registers forward hooks on ``named_modules()`` of an ``nn.Module`` (a factory's
model, or a ``torch.export`` program unflattened back into its module tree). A loaded TorchScript
module runs its submodules inside the TorchScript interpreter, where Python hooks never fire, so
:class:`ScriptProbe` inlines the forward graph and adds, as extra outputs, the value each named
submodule hands back to its caller (found from the module hierarchy the graph records per node).
The pseudo-layer :data:`OUTPUT` is the model's own output.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from functools import partial
from typing import Any, Protocol

import torch
from torch import nn

from reprdiag.errors import InputError, UsageError, did_you_mean

OUTPUT = "output"
Batch = Any  # a tensor, a (inputs, labels...) tuple/list, a dict of keyword inputs, or texts


class Probe(Protocol):
    """A loaded model that reports the outputs of named layers on a batch."""

    spec: str
    module: Any  # the torch module run (eval mode, frozen, on the device)
    float_dtype: torch.dtype | None

    def layer_names(self) -> list[str]:
        """Every layer ``run`` accepts, in model order (without :data:`OUTPUT`)."""
        ...

    def run(self, batch: Batch, layers: Sequence[str],
            strict: bool = True) -> dict[str, torch.Tensor]:
        """Outputs of ``layers`` on ``batch`` (raw, before pooling); with ``strict=False``
        layers that did not produce one tensor are left out instead of raising."""
        ...


def first_tensor(value: object) -> torch.Tensor | None:
    """The tensor a layer output stands for: itself, or the first tensor of a tuple/list/dict.

    >>> first_tensor((torch.ones(2), torch.zeros(3))).shape
    torch.Size([2])
    """
    if isinstance(value, torch.Tensor):
        return value
    if isinstance(value, Mapping):
        value = list(value.values())
    if not isinstance(value, list | tuple):
        return None
    return next((t for t in map(first_tensor, value) if t is not None), None)


def call_model(model: Callable[..., Any], batch: Batch) -> Any:
    """``model(x)`` for a tensor, ``model(batch[0])`` for a tuple/list (the rest are labels),
    ``model(**batch)`` for a dict."""
    if isinstance(batch, Mapping):
        return model(**batch)
    if isinstance(batch, list | tuple):
        return model(batch[0])
    return model(batch)


def check_layers(requested: Sequence[str], valid: Sequence[str], spec: str) -> None:
    """Refuse layer names the model does not have, naming the closest valid ones."""
    known = set(valid) | {OUTPUT}
    for name in requested:
        if name not in known:
            raise UsageError(f"has no layer {name!r}", source=spec,
                             hint=did_you_mean(name, valid, n=3, cutoff=0.5)
                             + "list the layers with --list-layers")


def _result(spec: str, name: str, values: list[torch.Tensor | None],
            strict: bool) -> torch.Tensor | None:
    tensors = [v for v in values if v is not None]
    if len(tensors) == 1 and len(values) == 1:
        return tensors[0]
    if not strict:
        return None
    if not values:
        raise InputError(f"layer {name!r} did not run in the forward pass", source=spec,
                         hint="pick a module that the model's forward calls (--list-layers)")
    if len(values) > 1:
        raise InputError(f"layer {name!r} ran {len(values)} times in one forward pass",
                         source=spec, hint="pick a module that runs once per batch")
    raise InputError(f"layer {name!r} returned no tensor", source=spec,
                     hint="pick a module whose output is a tensor (--list-layers)")


def parameter_dtype(module: Any) -> torch.dtype | None:
    """The dtype of the model's first floating-point parameter (inputs are cast to it)."""
    for p in module.parameters():
        if p.is_floating_point():
            return p.dtype
    return None


class HookProbe:
    """Forward hooks on an ``nn.Module``'s named submodules."""

    def __init__(self, module: nn.Module, spec: str):
        self.module, self.spec = module, spec
        self.float_dtype = parameter_dtype(module)
        self._modules = {n: m for n, m in module.named_modules() if n}

    def layer_names(self) -> list[str]:
        return list(self._modules)

    @staticmethod
    def _keep(store: dict[str, list[torch.Tensor | None]], name: str, module: nn.Module,
              args: object, output: object) -> None:
        store.setdefault(name, []).append(first_tensor(output))

    def run(self, batch: Batch, layers: Sequence[str],
            strict: bool = True) -> dict[str, torch.Tensor]:
        store: dict[str, list[torch.Tensor | None]] = {}
        handles = [self._modules[n].register_forward_hook(partial(self._keep, store, n))
                   for n in layers if n != OUTPUT]
        try:
            out = call_model(self.module, batch)
        finally:
            for handle in handles:
                handle.remove()
        store[OUTPUT] = [first_tensor(out)]
        found = {n: _result(self.spec, n, store.get(n, []), strict) for n in layers}
        return {n: v for n, v in found.items() if v is not None}


_LEVEL = re.compile(r"([^.()]+)\([^()]*\)")


def hierarchy_path(hierarchy: str) -> str:
    """``net(Sequential).0(Linear)`` → ``net.0`` (a TorchScript node's module hierarchy).

    >>> hierarchy_path("net(Sequential).1(ReLU).UNKNOWN_INSTANCE(UNKNOWN_TYPE)")
    'net.1'
    """
    return ".".join(m.group(1) for m in _LEVEL.finditer(hierarchy)
                    if m.group(1) != "UNKNOWN_INSTANCE")


def _escaping_values(graph: torch._C.Graph, name: str) -> list[torch._C.Value]:
    """Values computed inside module ``name`` and used outside it: what it returns."""

    def inside(node: torch._C.Node) -> bool:
        path = hierarchy_path(node.getModuleHierarchy())
        return path == name or path.startswith(name + ".")

    found = []
    for node in graph.nodes():
        if inside(node):
            found += [v for v in node.outputs()
                      if v.type().kind() != "ClassType" and any(
                          not inside(use.user) for use in v.uses())]
    return found


class ScriptProbe:
    """Named-layer outputs of a TorchScript module, by rewriting its inlined forward graph."""

    def __init__(self, module: torch.jit.ScriptModule, spec: str):
        self.module, self.spec = module, spec
        self.float_dtype = parameter_dtype(module)
        self._cache: dict[tuple[str, ...], tuple[Any, list[int]]] = {}

    def layer_names(self) -> list[str]:
        return [n for n, _ in self.module.named_modules() if n]

    def _function(self, layers: tuple[str, ...]) -> tuple[Any, list[int]]:
        """A graph function returning (output, every escaping value of each layer) and how
        many values each layer contributed."""
        if layers not in self._cache:
            graph = self.module.forward.graph.copy()
            torch._C._jit_pass_inline(graph)
            values, counts = [next(iter(graph.outputs()))], []
            for name in layers:
                extra = [] if name == OUTPUT else _escaping_values(graph, name)
                counts.append(len(extra))
                values += extra
            graph.eraseOutput(0)
            node = graph.create("prim::TupleConstruct", values)
            node.output().setType(torch._C.TupleType([v.type() for v in values]))
            graph.appendNode(node)
            graph.registerOutput(node.output())
            fn = torch._C._create_function_from_graph(f"reprdiag_probe_{len(self._cache)}",
                                                       graph)
            self._cache[layers] = (fn, counts)
        return self._cache[layers]

    def run(self, batch: Batch, layers: Sequence[str],
            strict: bool = True) -> dict[str, torch.Tensor]:
        fn, counts = self._function(tuple(layers))
        outs = call_model(partial(fn, self.module._c), batch)
        found: dict[str, torch.Tensor | None] = {}
        pos = 1
        for name, count in zip(layers, counts, strict=True):
            vals = [outs[0]] if name == OUTPUT else list(outs[pos:pos + count])
            pos += count
            found[name] = _result(self.spec, name, [first_tensor(v) for v in vals], strict)
        return {n: v for n, v in found.items() if v is not None}
