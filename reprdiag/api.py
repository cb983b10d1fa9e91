"""The library API: ``analyze`` turns files or tensors into a :class:`Report`, ``analyze_model``
a model's layers over a dataset.

The CLI is a thin layer over the same pipeline; a notebook user calls these functions::

    import reprdiag
    report = reprdiag.analyze("emb.safetensors")
    report.metrics["vne"], report.to_frame()

Both only say what to read (the sources) and what to compute (an
:class:`~reprdiag.config.AnalysisConfig`, which checks the options) and hand them to
:func:`reprdiag.pipeline.run`.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from reprdiag.config import AnalysisConfig
from reprdiag.defaults import DEFAULT_BLOCKS
from reprdiag.distributed.context import DistributedContext
from reprdiag.engine import Progress
from reprdiag.models.extract import ModelRun, ModelSources
from reprdiag.pipeline import FileSources, Input
from reprdiag.pipeline import run as run_pipeline
from reprdiag.results import Report

__all__ = ["AnalysisConfig", "Input", "ModelRun", "analyze", "analyze_model"]


def analyze(inputs: Input | Sequence[Input], *, keys: Sequence[str] | None = None,
            metrics: Sequence[str] | None = None, concat: bool = False,
            pool: str | None = None, device: str | torch.device = "auto",
            precision: str = "auto", chunk_rows: int | None = None,
            sample_size: int = 16384, seed: int = 0, kappa: float = 10.0,
            er_estimator: str = "plugin", er_compat: str = "exact", nan: str = "error",
            uncertainty: bool = False, blocks: int = DEFAULT_BLOCKS, jackknife: str = "auto",
            progress: Progress | None = None, backend: str = "auto",
            distributed: bool | DistributedContext | None = None,
            labels: str | None = None, pair: str | None = None) -> Report:
    """Analyze embedding files or tensors and return a :class:`Report`.

    ``inputs`` is a path, a tensor/array, or a list of them; every 2-D array of each file is
    one input unless ``keys`` picks some (``concat`` joins files as row shards). The other
    arguments mirror the CLI options of ``reprdiag analyze`` (:class:`AnalysisConfig` says
    what each may be). Under ``torchrun`` the rows are split over the ranks and merged
    (``distributed``, ``backend``: see :func:`reprdiag.distributed.session`); every rank
    returns the same report.
    ``uncertainty=True`` adds delete-a-block jackknife standard errors, bias and 95% intervals
    (``blocks`` K ≥ 5, default 20; costs K more metric evaluations and K·2·d²·8 bytes of
    moments): see :attr:`Report.uncertainty` and :mod:`reprdiag.uncertainty`. ``jackknife``:
    how the K deleted spectra are computed, ``"first-order"`` updates of the full
    decompositions, ``"exact"`` eigendecompositions, or ``"auto"`` (first order when every
    block holds at least d rows; docs/uncertainty.md).
    ``labels`` (``KEY`` of the same file or ``PATH[:KEY]``: one class id per row) adds the
    label metrics (nc1, lidar, ...), ``pair`` (a second, row-aligned set of embeddings) the
    paired-view metrics (alignment, Barlow Twins terms, CKA); both are streamed in the same
    pass (:mod:`reprdiag.companions`).

    >>> import torch, reprdiag
    >>> rep = reprdiag.analyze(torch.eye(4, dtype=torch.float64), metrics=["vne"], device="cpu")
    >>> round(rep.metrics["vne"], 6)
    1.386294
    """
    config = AnalysisConfig(
        kappa=kappa, er_estimator=er_estimator, er_compat=er_compat, sample_size=sample_size,
        seed=seed, precision=precision, pool=pool, nan=nan, chunk_rows=chunk_rows,
        concat=concat, metrics=metrics, uncertainty=uncertainty, blocks=blocks,
        jackknife=jackknife, labels=labels, pair=pair)
    return run_pipeline(FileSources(inputs, keys), config, device=device, progress=progress,
                        backend=backend, distributed=distributed)


def analyze_model(run: ModelRun, *, metrics: Sequence[str] | None = None,
                  precision: str = "auto", sample_size: int = 16384, seed: int = 0,
                  kappa: float = 10.0, er_estimator: str = "plugin", er_compat: str = "exact",
                  nan: str = "error", uncertainty: bool = False, blocks: int = DEFAULT_BLOCKS,
                  jackknife: str = "auto", progress: Progress | None = None,
                  backend: str = "auto",
                  distributed: bool | DistributedContext | None = None,
                  labels: str | None = None, pair: str | None = None) -> Report:
    """Run ``run.model`` over ``run.data`` and analyze each layer: one report row per layer,
    in the order asked for. The metric options mirror :func:`analyze`.

    ``labels``: ``"batch"`` (the labels the batches carry: a tuple's second item, a dict's
    ``labels``/``label`` entry), ``KEY`` (an array of the tensor file ``run.data``, or an
    entry of dict batches) or ``PATH[:KEY]`` (another file, one row per example of the
    data); ``pair``: ``KEY`` of the data file or ``PATH[:KEY]``, a second view compared with
    every layer. Both are streamed beside each layer (:mod:`reprdiag.models.aligned`); with
    ``run.limit`` their first ``limit`` rows are used.

    Under ``torchrun`` (``distributed``, ``backend``: see :func:`reprdiag.distributed.session`)
    every rank loads the model on its device (``cuda:LOCAL_RANK`` for CUDA) and runs it on its
    share of the data: a contiguous run of whole batches when the data has random access, else
    every ``world_size``-th batch (each rank then loads every batch). Every rank returns the
    same report, equal to one process's up to float64 rounding of the merged moments.

    >>> from reprdiag.api import ModelRun, analyze_model
    >>> run = ModelRun("reprdiag.examples.digits:build", "reprdiag.examples.digits:random_inputs",
    ...                layers=("fc1", "head"), device="cpu")
    >>> [r.name for r in analyze_model(run, metrics=["vne"]).inputs]
    ['fc1', 'head']
    """
    config = AnalysisConfig(
        kappa=kappa, er_estimator=er_estimator, er_compat=er_compat, sample_size=sample_size,
        seed=seed, precision=precision, nan=nan, metrics=metrics, uncertainty=uncertainty,
        blocks=blocks, jackknife=jackknife, labels=labels, pair=pair)
    return run_pipeline(ModelSources(run), config, device=run.device, progress=progress,
                        backend=backend, distributed=distributed)
