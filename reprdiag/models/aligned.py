"""Labels and paired views of a model run (``--model ... --labels/--pair``): where their rows
come from, and the checks that keep them aligned with the data's examples.

The statistics are the file mode's companions (:func:`reprdiag.companions.streamed`): each
layer's accumulator hands them its rows with the global index of the batch's first example,
and they read the same rows of their source, which is

- ``--labels batch``: the labels the batches carry (a tuple's second item, a dict's
  ``labels``, else ``label``, entry), held batch by batch (:class:`CarriedLabels`);
- ``--labels KEY`` / ``--pair KEY``: with a tensor-file DATA, the array KEY of the same file
  (of each shard for a folder), as in the file mode; with batches from a data function,
  ``--labels KEY`` is that entry of each dict batch;
- ``PATH[:KEY]``: an array in another file, row-aligned with the data's examples
  (:class:`AlignedRows`).

Row counts: when the data's length is known in advance (tensor files and folders, a tensor,
texts, a sized ``Dataset``), a file's rows must equal it before the model runs; otherwise
reading past the file's end fails at that batch, and a file longer than the examples the pass
saw fails at the end of the pass (unless ``--limit`` ended the pass: then its rows past the
limit are left unread, as the data's are). Under ``torchrun`` a rank reads the global rows of
the batches it runs, so the labels and the pair follow the data's split.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from reprdiag.companions import (
    label_source,
    pair_block_bytes,
    pair_source,
    split_spec,
    streamed,
)
from reprdiag.config import AnalysisConfig
from reprdiag.engine import Companion
from reprdiag.errors import InputError, UsageError, source_label
from reprdiag.loaders import ArraySource, ConcatSource
from reprdiag.loaders.base import DerivedSource
from reprdiag.models.data import Batches, batch_labels
from reprdiag.models.probes import Batch

#: ``--labels batch``: the labels the batches carry
BATCH = "batch"
ALIGNED = "the file must hold one row per example of --data, in the same order"


class AlignedRows(DerivedSource):
    """A row-aligned array of a model run's data, read by global example index; reading past
    its end is a one-line :class:`InputError` naming both counts."""

    def __init__(self, inner: ArraySource, data: str):
        super().__init__(inner)
        self.data = data

    def read(self, start: int, stop: int) -> torch.Tensor:
        n = self.shape[0]
        if stop > n:
            raise InputError(f"has {n:,} rows, but {self.data} gives more examples (at least "
                             f"{stop:,})", source=self.label, hint=ALIGNED)
        return self.inner.read(start, stop)

    def check_seen(self, examples: int, limit: int | None) -> None:
        """After the pass over ``examples`` examples: refuse a file with more rows, unless
        ``--limit`` (``limit``) ended the pass."""
        n = self.shape[0]
        if n != examples and examples != limit:
            raise InputError(f"has {n:,} rows for the {examples:,} examples of {self.data}",
                             source=self.label, hint=ALIGNED)


class CarriedLabels:
    """The labels the batches carry (``key=None``: a tuple's second item or a dict's
    ``labels``/``label`` entry, else the dict entry ``key``), held one batch at a time: the
    stream :meth:`hold` s each batch before the layers' rows of it reach the companions,
    whose ``read`` asks for exactly that batch's rows."""

    def __init__(self, key: str | None, data: str):
        self.key, self.data = key, data
        self.label = source_label(data, key or "labels")
        self._held = torch.zeros(0, dtype=torch.int64)

    def hold(self, batch: Batch) -> None:
        self._held = batch_labels(batch, self.key, self.data)

    def read(self, start: int, stop: int) -> torch.Tensor:
        return self._held  # the companion checks it has stop − start labels


@dataclass(frozen=True)
class RunCompanions:
    """A model run's ``--labels`` and ``--pair`` sources, for every layer alike."""

    labels: AlignedRows | CarriedLabels | None = None
    pair: AlignedRows | None = None

    def build(self, d: int, device: torch.device, blocks: int = 0, seed: int = 0,
              budget: int | None = None) -> list[Companion]:
        """Fresh companions for one layer of width ``d`` (``blocks`` > 0: per jackknife
        block, the K and seed of the layer's moments; ``budget``: the bytes K was fitted to,
        which size each block's per-class second moments, see
        :func:`reprdiag.companions.streamed`)."""
        return streamed(self.labels, self.pair, d, device, blocks,  # type: ignore[arg-type]
                        seed, budget)

    def block_bytes(self, d: int) -> int:
        """Memory of one jackknife block's pair cross-moments beside a layer of width ``d``
        (0 without a pair), counted when K is fitted to the memory budget."""
        return 0 if self.pair is None else pair_block_bytes(d, int(self.pair.shape[1]))

    def hold(self, batch: Batch) -> None:
        """Called with each batch this process runs, before its rows are fed."""
        if isinstance(self.labels, CarriedLabels):
            self.labels.hold(batch)

    def check_seen(self, examples: int, limit: int | None) -> None:
        """The end-of-pass row-count check (``examples``: over every rank)."""
        for source in (self.labels, self.pair):
            if isinstance(source, AlignedRows):
                source.check_seen(examples, limit)


def run_companions(config: AnalysisConfig, batches: Batches) -> RunCompanions | None:
    """What ``config.labels``/``config.pair`` name for a model run over ``batches``, checked
    before the model runs (a missing file or key, a row count other than a known data
    length, ``batch`` for data whose batches are plain rows)."""
    if not (config.labels or config.pair):
        return None
    labels = _labels(config.labels, batches) if config.labels else None
    pair = _aligned(config.pair, "--pair", batches) if config.pair else None
    return RunCompanions(labels, pair)


def _labels(spec: str, batches: Batches) -> AlignedRows | CarriedLabels:
    if spec == BATCH:
        if batches.source is not None:
            raise UsageError(f"--labels batch takes the labels the batches carry, but those "
                             f"of {batches.label} are plain rows", hint="pass --labels KEY "
                             "(an array of the same file) or --labels PATH[:KEY]")
        return CarriedLabels(None, batches.label)
    if batches.source is None and split_spec(spec)[0] is None:  # a dict entry of the batches
        return CarriedLabels(spec, batches.label)
    return _aligned(spec, "--labels", batches)


def _aligned(spec: str, what: str, batches: Batches) -> AlignedRows:
    """The file array ``spec`` names, row-aligned with the data (a KEY: of the data file)."""
    check = label_source if what == "--labels" else pair_source
    data, path = batches.source, split_spec(spec)[0]
    if path is None and data is None:
        raise UsageError(f"{what} {spec!r} names a key, but {batches.label} is not a tensor "
                         "file", hint=f"pass {what} PATH[:KEY]")
    if path is None and isinstance(data, ConcatSource) and len(data.parts) > 1:
        chosen: ArraySource = ConcatSource([check(spec, part) for part in data.parts])
    else:
        chosen = check(spec, data)  # with data: its row count is checked too
    if data is None and batches.rows is not None and chosen.shape[0] != batches.rows:
        raise InputError(f"has {chosen.shape[0]:,} rows for the {batches.rows:,} examples "
                         f"of {batches.label} ({what})", source=chosen.label, hint=ALIGNED)
    return AlignedRows(chosen, batches.label)
