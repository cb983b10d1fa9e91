"""Checkpoint plus dataset: stream the activations of named layers into the statistics.

The model runs in eval mode under ``torch.inference_mode()``, batch by batch; forward hooks (or,
for TorchScript, a rewritten graph) hand each named layer's output to the caller, outputs of
more than two axes are pooled to rows (:func:`reprdiag.loaders.base.pool_rows`), and each
layer's rows go into its own :class:`~reprdiag.engine.Accumulator`. Nothing N×d is held: memory
is O(batch·d + d²) per layer. :func:`extract` writes the rows instead, incrementally.
With ``--labels``/``--pair`` every layer's accumulator streams the file mode's companions
beside its moments, their rows aligned with the batches' (:mod:`reprdiag.models.aligned`).

Under ``torchrun`` every rank loads the model and opens the data, runs the model on its share
of the batches (:func:`reprdiag.models.data.assigned`), and the per-layer accumulators are
merged exactly (:meth:`reprdiag.distributed.DistributedContext.merge`): every rank returns the
report one process would give. :class:`ModelSources` is what the analysis pipeline reads
(:func:`reprdiag.analyze_model`); :func:`extract` and :func:`list_layers` use the model alone.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, TypeVar

import torch

from reprdiag._version import __version__
from reprdiag.config import AnalysisConfig
from reprdiag.device import resolve_device
from reprdiag.distributed import DistributedContext, alike
from reprdiag.distributed import session as ranks_session
from reprdiag.engine import Accumulated, Accumulator, Progress
from reprdiag.errors import InputError
from reprdiag.loaders.base import check_pool, pool_method, pool_rows
from reprdiag.models.aligned import RunCompanions, run_companions
from reprdiag.models.data import Batches, DataSpec, assigned, open_data, to_device
from reprdiag.models.hf import HFProbe
from reprdiag.models.load import ModelSpec, load_model, spec_kind
from reprdiag.models.probes import OUTPUT, Probe, check_layers
from reprdiag.models.writer import open_writer, writer_format
from reprdiag.report.export import atomic_write

Shapes = dict[str, tuple[int, torch.dtype]]  # layer → (width d, dtype of its rows)
D = TypeVar("D")  # how a dtype is named: a torch.dtype, or its name


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


def open_session(run: ModelRun, device: torch.device | None = None) -> Session:
    """Load the model (on ``device``, default ``run.device``) and open the data; unknown
    layer names fail before any batch runs."""
    check_pool(run.pool)
    device = resolve_device(run.device) if device is None else device
    kind = spec_kind(run.model)
    probe = load_model(ModelSpec(run.model, run.weights, run.model_args), device)
    if isinstance(probe, HFProbe):
        probe.set_pool(run.pool)
    layers = list(run.layers) or (probe.layer_names() if kind == "hf" else [OUTPUT])
    check_layers(layers, probe.layer_names(), run.model)
    batches = open_data(DataSpec(run.data, run.data_key, run.batch_size, run.limit),
                        text=kind == "hf")
    return Session(run, probe, batches, layers, device)


def layer_rows(name: str, output: torch.Tensor, pool: str | None, spec: str) -> torch.Tensor:
    """A layer output as (batch, d) rows: 1-D → one column, else by the rule of a file's
    arrays (:func:`reprdiag.loaders.base.pool_method`: 3-D mean-pooled unless ``pool`` says
    otherwise, 4-D and more need an explicit ``pool``)."""
    if output.ndim <= 1:
        return output.reshape(-1, 1)
    method = pool_method(output.shape, pool, f"layer {name!r} outputs shape "
                         f"{tuple(output.shape)}", spec, " (spatial: mean over H, W of a "
                         "conv map)")
    return output if method is None else pool_rows(output, method)


def stream(session: Session, progress: Progress | None = None, rank: int = 0,
           world_size: int = 1, companions: RunCompanions | None = None
           ) -> Iterator[tuple[int, dict[str, torch.Tensor]]]:
    """Yield ``(first_row_index, {layer: rows})`` per batch, rows pooled to 2-D; with
    ``world_size`` > 1, only rank ``rank``'s batches (global row indices kept).
    ``companions`` hold each batch before its rows are yielded (labels the batches carry)."""
    run, probe, widths = session.run, session.probe, {}
    batches, total = assigned(session.batches, rank, world_size)
    if progress:
        progress.start(session.batches.label, total or 0)
    try:
        for first, batch in batches:
            if companions is not None:
                companions.hold(batch)
            with torch.inference_mode():
                outs = probe.run(to_device(batch, session.device, probe.float_dtype),
                                 session.layers)
            rows = {n: layer_rows(n, outs[n], run.pool, run.model) for n in session.layers}
            for name, r in rows.items():
                if widths.setdefault(name, r.shape[1]) != r.shape[1]:
                    raise InputError(f"layer {name!r} changed width from {widths[name]} to "
                                     f"{r.shape[1]} between batches", source=run.model,
                                     hint="use --pool mean, or inputs of one length")
            yield first, rows
            if progress:
                progress.advance(1)
    finally:
        if progress:
            progress.finish()


@dataclass(frozen=True)
class _Pass:
    """What every layer's accumulator is built with."""

    config: AnalysisConfig
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    budget: int | None = None  # bytes for jackknife blocks (None: this device's budget)
    companions: RunCompanions | None = None  # --labels / --pair, fed beside every layer

    def on(self, device: torch.device) -> _Pass:
        """The same pass computing on ``device``."""
        return replace(self, device=device)

    def accumulator(self, model: str, layer: str, d: int, dtype: torch.dtype) -> Accumulator:
        """An empty accumulator for ``layer`` of width ``d`` (with ``uncertainty``, K
        jackknife blocks fitted to the budget: a function of d, the budget and the pair's
        width alone), feeding the companions (per jackknife block with ``uncertainty``)."""
        label = f"{model}[{layer}]"
        extra = self.companions.block_bytes(d) if self.companions is not None else 0
        opts = self.config.stream_for(d, self.device, label, self.budget, extra)
        acc = Accumulator(d, dtype, opts, label)
        if self.companions is not None:
            acc.companions = self.companions.build(d, acc.device, opts.blocks, opts.seed,
                                                   self.budget)
        return acc


def _accumulate(session: Session, how: _Pass, progress: Progress | None, rank: int = 0,
                world_size: int = 1) -> tuple[dict[str, Accumulator], Shapes, int]:
    """Run the model over this rank's batches into one accumulator per layer (created on a
    layer's first batch, so a rank without batches returns none); the last is the end of the
    rows seen (the global index past this rank's last example, 0 without batches)."""
    accs: dict[str, Accumulator] = {}
    shapes: Shapes = {}
    seen = 0
    for first, rows in stream(session, progress, rank, world_size, how.companions):
        for name, r in rows.items():
            if name not in accs:
                shapes[name] = (r.shape[1], r.dtype)
                accs[name] = how.accumulator(session.run.model, name, r.shape[1], r.dtype)
            accs[name].add(first, r)
            seen = max(seen, first + r.shape[0])
    return accs, shapes, seen


def agreed_shapes(per_rank: Sequence[Mapping[str, tuple[int, D]]], layers: Sequence[str],
                  data: str) -> dict[str, tuple[int, D]]:
    """Each layer's (width, dtype), from the ranks that ran batches; they must agree.

    >>> f32 = torch.float32
    >>> agreed_shapes([{}, {"fc1": (8, f32)}, {"fc1": (8, f32)}], ["fc1"], "x")
    {'fc1': (8, torch.float32)}
    >>> agreed_shapes([{"fc1": (8, f32)}, {"fc1": (6, f32)}], ["fc1"], "x")
    Traceback (most recent call last):
    reprdiag.errors.InputError: x: layer 'fc1' gives different rows on the ranks: rank 0: 8 \
wide float32, rank 1: 6 wide float32; every rank must see the same model and data
    """
    out: dict[str, tuple[int, D]] = {}
    for layer in layers:
        seen = {rank: shapes[layer] for rank, shapes in enumerate(per_rank) if layer in shapes}
        if not seen:
            raise InputError("gave no batches", source=data, hint="check --data and --limit")
        if len(set(seen.values())) > 1:
            detail = ", ".join(f"rank {r}: {d} wide {str(t).removeprefix('torch.')}"
                               for r, (d, t) in seen.items())
            raise InputError(f"layer {layer!r} gives different rows on the ranks: {detail}",
                             source=data, hint="every rank must see the same model and data")
        out[layer] = next(iter(seen.values()))
    return out


def _alone(run: ModelRun, how: _Pass, device: torch.device, progress: Progress | None
           ) -> tuple[Session, Iterator[tuple[LayerInfo, Accumulated]]]:
    """One process: every batch, then each layer's finished statistics."""
    session = open_session(run, device)
    how = replace(how, companions=run_companions(how.config, session.batches))
    accs, shapes, seen = _accumulate(session, how.on(session.device), progress)
    if not accs:
        raise InputError("gave no batches", source=run.data, hint="check --data and --limit")
    if how.companions is not None:
        how.companions.check_seen(seen, run.limit)
    return session, ((_layer_info(run, name, shapes[name]), accs[name].finish())
                     for name in session.layers)


def _across_ranks(run: ModelRun, how: _Pass, ctx: DistributedContext,
                  progress: Progress | None
                  ) -> tuple[Session, Iterator[tuple[LayerInfo, Accumulated]]]:
    """Each rank runs its batches; the ranks agree on errors and on every layer's width,
    then merge layer by layer (a collective each, in ``session.layers`` order). Jackknife
    blocks are fitted to the smallest rank's memory budget, so every rank holds the same K."""
    if how.config.uncertainty:
        how = replace(how, budget=ctx.memory_budget())
    with ctx.agree():
        session = open_session(run, ctx.device)
        how = replace(how.on(session.device),
                      companions=run_companions(how.config, session.batches))
        accs, shapes, seen = _accumulate(session, how, progress if ctx.rank == 0 else None,
                                         ctx.rank, ctx.world_size)
    per_rank = ctx.all_gather((shapes, seen))
    with alike():
        agreed = agreed_shapes([s for s, _ in per_rank], session.layers, run.data)
        if how.companions is not None:
            how.companions.check_seen(max(n for _, n in per_rank), run.limit)
    for name, (d, dtype) in agreed.items():
        if name not in accs:  # this rank ran no batches
            accs[name] = how.accumulator(run.model, name, d, dtype)
    return session, ((_layer_info(run, name, agreed[name]), ctx.merge(accs[name]))
                     for name in session.layers)


def _layer_info(run: ModelRun, layer: str, shape: tuple[int, torch.dtype]) -> LayerInfo:
    """The provenance of ``layer``'s report row."""
    return LayerInfo(layer, run.model, layer, str(shape[1]).removeprefix("torch."))


@dataclass(frozen=True)
class ModelSources:
    """A model run as the pipeline's sources (:class:`reprdiag.pipeline.Sources`): one input
    per layer, in the order asked for; :func:`reprdiag.analyze_model` hands it to
    :func:`reprdiag.pipeline.run`."""

    run: ModelRun

    def alone(self, config: AnalysisConfig, device: torch.device, progress: Progress | None
              ) -> Iterator[tuple[LayerInfo, Accumulated]]:
        return _alone(self.run, _Pass(config), device, progress)[1]

    def across(self, config: AnalysisConfig, ctx: DistributedContext,
               progress: Progress | None) -> Iterator[tuple[LayerInfo, Accumulated]]:
        return _across_ranks(self.run, _Pass(config), ctx, progress)[1]

    def options(self, config: AnalysisConfig) -> dict[str, Any]:
        """The config's options but the file-reading ones, then the run's settings."""
        return {**config.to_dict(model=True), **self.run.options()}


Written = dict[str, tuple[int, int, str]]  # layer → (rows N, width d, dtype name)


def shard_path(out: str | Path, rank: int, world_size: int) -> Path:
    """The file rank ``rank`` of ``world_size`` writes for ``extract --out OUT`` under
    ``torchrun``.

    >>> shard_path("runs/emb.safetensors", 1, 4).name
    'emb-00001-of-00004.safetensors'
    """
    out = Path(out)
    return out.with_name(f"{out.stem}-{rank:05d}-of-{world_size:05d}{out.suffix}")


def extract(run: ModelRun, out: str | Path, progress: Progress | None = None, *,
            backend: str = "auto", distributed: bool | DistributedContext | None = None
            ) -> Written:
    """Write each layer's rows to ``out`` (``.safetensors`` or ``.h5``), one (N, d) tensor per
    layer named as the layer, written incrementally and renamed into place when complete.
    Returns ``{layer: (N, d, dtype)}`` of the whole dataset.

    Under ``torchrun`` (``distributed``, ``backend``: see :func:`reprdiag.distributed.session`)
    each rank runs the model on its share of the batches, as :func:`analyze_model` does, and
    writes its rows to its own shard :func:`shard_path` beside ``out`` (a rank without rows
    writes none, and removes a stale shard of that name). The shards are renamed into place
    only when every rank has written its own. In rank order they hold the dataset's rows in
    order (for an iterable of ready batches: batch by batch, round-robin), so ``reprdiag
    analyze --concat OUT_STEM-*-of-0000W.SUFFIX`` reads them as one dataset.
    """
    out = Path(out)
    fmt = writer_format(out)
    with ranks_session(resolve_device(run.device), backend, distributed) as ctx:
        if ctx is None:
            return _extract_file(run, out, fmt, progress)
        return _extract_shards(run, out, fmt, progress, ctx)


def _metadata(run: ModelRun, session: Session, **extra: str) -> dict[str, str]:
    return {"producer": f"reprdiag {__version__} extract", "model": run.model,
            "data": run.data, "layers": json.dumps(session.layers), **extra}


def _write_rows(session: Session, fmt: str, path: Path, meta: dict[str, str],
                progress: Progress | None, rank: int = 0, world_size: int = 1) -> Written:
    """Stream this rank's batches into a new file at ``path``; what was written (``{}``: no
    rows came, and the file is left unfinished for the caller to drop)."""
    written: Written = {}
    writer = open_writer(fmt, path, meta)
    try:
        for _, rows in stream(session, progress, rank, world_size):
            for name, r in rows.items():
                writer.add(name, r)
                n, d, dtype = written.get(name, (0, r.shape[1], str(r.dtype)))
                written[name] = (n + r.shape[0], d, dtype.removeprefix("torch."))
    except BaseException:
        writer.abort()
        raise
    if written:
        writer.close()
    else:
        writer.abort()
    return written


def _extract_file(run: ModelRun, out: Path, fmt: str, progress: Progress | None) -> Written:
    session = open_session(run)
    written: Written = {}

    def write(tmp: Path) -> None:
        written.update(_write_rows(session, fmt, tmp, _metadata(run, session), progress))
        if not written:
            raise InputError("gave no batches", source=run.data,
                             hint="check --data and --limit")

    atomic_write(out, write)
    return written


def _extract_shards(run: ModelRun, out: Path, fmt: str, progress: Progress | None,
                    ctx: DistributedContext) -> Written:
    """Every rank writes its shard; each is renamed into place once all ranks succeeded."""
    with ctx.agree():
        session = open_session(run, ctx.device)
    path = shard_path(out, ctx.rank, ctx.world_size)
    meta = _metadata(run, session, shard=f"{ctx.rank} of {ctx.world_size}")
    mine: Written = {}

    def write(tmp: Path) -> bool:
        with ctx.agree():  # a rank's failure fails every rank before any shard is renamed
            mine.update(_write_rows(session, fmt, tmp, meta, progress if ctx.rank == 0
                                    else None, ctx.rank, ctx.world_size))
            if not mine:
                path.unlink(missing_ok=True)  # a stale shard from an earlier run
        return bool(mine)

    atomic_write(path, write)
    per_rank = ctx.all_gather(mine)  # after every rank's rename
    with alike():
        agreed = agreed_shapes([{k: (d, t) for k, (_, d, t) in w.items()} for w in per_rank],
                               session.layers, run.data)
    return {name: (sum(w[name][0] for w in per_rank if name in w), d, t)
            for name, (d, t) in agreed.items()}


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
