"""Checkpoint plus dataset: stream the activations of named layers into the statistics.

The model runs in eval mode under ``torch.inference_mode()``, batch by batch; forward hooks (or,
for TorchScript, a rewritten graph) hand each named layer's output to the caller, outputs of
more than two axes are pooled to rows (:func:`reprdiag.loaders.base.pool_rows`), and each
layer's rows go into its own :class:`~reprdiag.engine.Accumulator`. Nothing N×d is held: memory
is O(batch·d + d²) per layer. :func:`extract` writes the rows instead, incrementally.

>>> import torch
>>> from reprdiag.extract import ModelRun, analyze_model
>>> run = ModelRun("reprdiag.examples.digits:build", "reprdiag.examples.digits:random_inputs",
...                layers=("fc1", "head"), device="cpu")
>>> [r.name for r in analyze_model(run, metrics=["vne"]).inputs]
['fc1', 'head']
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from reprdiag import __version__
from reprdiag.api import (
    MetricOptions,
    blocked_stream,
    check_blocks,
    make_report,
    summarize,
    validate_stream,
)
from reprdiag.checkpoint.data import Batches, DataSpec, examples, open_data, to_device
from reprdiag.checkpoint.hf import HFProbe
from reprdiag.checkpoint.load import ModelSpec, load_model, spec_kind
from reprdiag.checkpoint.probes import OUTPUT, Probe, check_layers
from reprdiag.checkpoint.writer import open_writer, writer_format
from reprdiag.device import resolve_device
from reprdiag.engine import Accumulator, Progress, StreamOptions
from reprdiag.errors import InputError
from reprdiag.jackknife import DEFAULT_BLOCKS
from reprdiag.loaders.base import POOL_METHODS, check_pool, pool_rows
from reprdiag.metrics import resolve
from reprdiag.report.export import atomic_write
from reprdiag.report.model import Report


@dataclass(frozen=True)
class ModelRun:
    """A model, its data and the layers to read: the ``--model ... --data ...`` options."""

    model: str
    data: str
    weights: str | None = None
    model_args: Mapping[str, Any] = field(default_factory=dict)
    data_key: str | None = None
    layers: Sequence[str] = ()
    batch_size: int = 64
    limit: int | None = None
    pool: str | None = None
    device: str | torch.device = "auto"

    def options(self) -> dict[str, Any]:
        """The run's settings as the report records them."""
        return {"model": self.model, "weights": self.weights, "model_args": dict(
            self.model_args), "data": self.data, "data_key": self.data_key,
            "layers": list(self.layers) or None, "batch_size": self.batch_size,
            "limit": self.limit, "pool": self.pool}


@dataclass
class Session:
    """A loaded model with its batches and the checked list of layers to read."""

    run: ModelRun
    probe: Probe
    batches: Batches
    layers: list[str]
    device: torch.device


@dataclass(frozen=True)
class LayerInfo:
    """Provenance of one layer's report row."""

    label: str
    path: str
    key: str
    dtype: str
    file_size: int | None = None


def open_session(run: ModelRun) -> Session:
    """Load the model and open the data; unknown layer names fail before any batch runs."""
    check_pool(run.pool)
    device = resolve_device(run.device)
    kind = spec_kind(run.model)
    probe = load_model(ModelSpec(run.model, run.weights, run.model_args), device)
    if isinstance(probe, HFProbe):
        probe.set_pool(run.pool)
    layers = list(run.layers) or (probe.layer_names() if kind == "hf" else [OUTPUT])
    check_layers(layers, probe.layer_names(), run.model)
    batches = open_data(DataSpec(run.data, run.data_key, run.batch_size, run.limit),
                        text=kind == "hf")
    return Session(run, probe, batches, layers, device)


def as_rows(name: str, output: torch.Tensor, pool: str | None, spec: str) -> torch.Tensor:
    """A layer output as (batch, d) rows: 1-D → one column, 3-D mean-pooled unless ``pool``
    says otherwise, 4-D and more need an explicit ``pool``."""
    if output.ndim <= 1:
        return output.reshape(-1, 1)
    if output.ndim == 2:
        return output
    if pool is None and output.ndim > 3:
        raise InputError(f"layer {name!r} outputs shape {tuple(output.shape)}", source=spec,
                         hint=f"pick a reduction with --pool {'|'.join(POOL_METHODS)} "
                         "(spatial: mean over H, W of a conv map)")
    return pool_rows(output, pool or "mean")


def stream(session: Session, progress: Progress | None = None
           ) -> Iterator[tuple[int, dict[str, torch.Tensor]]]:
    """Yield ``(first_row_index, {layer: rows})`` per batch, rows pooled to 2-D."""
    run, probe, widths, first = session.run, session.probe, {}, 0
    if progress:
        progress.start(session.batches.label, session.batches.total or 0)
    try:
        for batch in session.batches:
            with torch.inference_mode():
                outs = probe.run(to_device(batch, session.device, probe.float_dtype),
                                 session.layers)
            rows = {n: as_rows(n, outs[n], run.pool, run.model) for n in session.layers}
            for name, r in rows.items():
                if widths.setdefault(name, r.shape[1]) != r.shape[1]:
                    raise InputError(f"layer {name!r} changed width from {widths[name]} to "
                                     f"{r.shape[1]} between batches", source=run.model,
                                     hint="use --pool mean, or inputs of one length")
            yield first, rows
            first += examples(batch)
            if progress:
                progress.advance(1)
    finally:
        if progress:
            progress.finish()


def analyze_model(run: ModelRun, *, metrics: Sequence[str] | None = None,
                  precision: str = "auto", sample_size: int = 16384, seed: int = 0,
                  kappa: float = 10.0, er_estimator: str = "plugin", er_compat: str = "exact",
                  nan: str = "error", uncertainty: bool = False, blocks: int = DEFAULT_BLOCKS,
                  progress: Progress | None = None) -> Report:
    """Run ``run.model`` over ``run.data`` and analyze each layer: one report row per layer,
    in the order asked for. The metric options mirror :func:`reprdiag.analyze`."""
    start = time.perf_counter()
    metric_opts = MetricOptions(kappa, er_estimator, er_compat)
    metric_opts.validate()
    resolve(metrics)
    session = open_session(run)
    opts = StreamOptions(session.device, precision, None, sample_size, seed, nan)
    validate_stream(opts)
    check_blocks(uncertainty, blocks)
    accs: dict[str, Accumulator] = {}
    dtypes: dict[str, str] = {}
    for first, rows in stream(session, progress):
        for name, r in rows.items():
            if name not in accs:
                dtypes[name] = str(r.dtype).removeprefix("torch.")
                label = f"{run.model}[{name}]"
                accs[name] = Accumulator(r.shape[1], r.dtype, blocked_stream(
                    opts, r.shape[1], label, uncertainty, blocks), label)
            accs[name].add(first, r)
    if not accs:
        raise InputError("gave no batches", source=run.data, hint="check --data and --limit")
    results = [summarize(LayerInfo(name, run.model, name, dtypes[name]), accs[name].finish(),
                         metrics, metric_opts, progress) for name in session.layers]
    options = {**asdict(metric_opts), "sample_size": sample_size, "seed": seed,
               "precision": precision, "nan": nan, "metrics": list(metrics) if metrics else None,
               "uncertainty": uncertainty, "blocks": blocks if uncertainty else None,
               **run.options()}
    return make_report(results, options, session.device, start)


def extract(run: ModelRun, out: str | Path,
            progress: Progress | None = None) -> dict[str, tuple[int, int, str]]:
    """Write each layer's rows to ``out`` (``.safetensors`` or ``.h5``), one (N, d) tensor per
    layer named as the layer, written incrementally and renamed into place when complete.
    Returns ``{layer: (N, d, dtype)}``."""
    out = Path(out)
    fmt = writer_format(out)
    session = open_session(run)
    shapes: dict[str, tuple[int, int, str]] = {}
    meta = {"producer": f"reprdiag {__version__} extract", "model": run.model,
            "data": run.data, "layers": json.dumps(session.layers)}

    def write(tmp: Path) -> None:
        writer = open_writer(fmt, tmp, meta)
        try:
            for _, rows in stream(session, progress):
                for name, r in rows.items():
                    writer.add(name, r)
                    n, d, dtype = shapes.get(name, (0, r.shape[1], str(r.dtype)))
                    shapes[name] = (n + r.shape[0], d, dtype.removeprefix("torch."))
            if not shapes:
                raise InputError("gave no batches", source=run.data,
                                 hint="check --data and --limit")
        except BaseException:
            writer.abort()
            raise
        writer.close()

    atomic_write(out, write)
    return shapes


def list_layers(run: ModelRun) -> list[tuple[str, str, tuple[int, ...] | None]]:
    """``(name, module type, output shape on the first batch or None)`` for every layer the
    model has, the model output first."""
    session = open_session(replace(run, layers=()))
    names = session.probe.layer_names()
    batch = next(iter(session.batches), None)
    if batch is None:
        raise InputError("gave no batches", source=run.data, hint="check --data and --limit")
    with torch.inference_mode():
        outs = session.probe.run(to_device(batch, session.device, session.probe.float_dtype),
                                 [OUTPUT, *names], strict=False)
    modules = dict(session.probe.module.named_modules())
    kinds = {n: getattr(modules[n], "original_name", type(modules[n]).__name__)
             if n in modules else "hidden state" for n in names}
    return [(n, kinds.get(n, "model output"), tuple(outs[n].shape) if n in outs else None)
            for n in [OUTPUT, *names]]
