"""Labels and paired views: second sources read in step with an input, and what they stream.

``--labels KEY`` (an integer array in the same file) or ``--labels PATH[:KEY]`` (another file)
names one class id per row; ``--pair KEY`` or ``--pair PATH[:KEY]`` a second, row-aligned set of
embeddings. :func:`resolve_companion` turns such a spec into an :class:`ArraySource` for a given
input and checks its rows before anything is read; :class:`LabelCompanion` and
:class:`PairCompanion` are the :class:`~reprdiag.engine.Companion` s the streaming pass feeds.
With ``--uncertainty`` (``blocks`` = K > 0) each keeps K copies of its statistic
(:class:`~reprdiag.stats.blocked.BlockedStatistic`), one per jackknife block of the moments,
so every label and paired-view metric gets its delete-a-block values too.
"""

from __future__ import annotations

from pathlib import Path

import torch

from reprdiag.engine import Companion
from reprdiag.errors import InputError, UsageError, source_label
from reprdiag.loaders import ArraySource, list_arrays, select_arrays
from reprdiag.stats.blocked import BlockedStatistic, memory_budget, moment_bytes
from reprdiag.stats.classes import ClassMoments, check_labels
from reprdiag.stats.cross import PairMoments

#: per-class second moments (for per-class effective rank) are kept up to this many bytes
#: (with K jackknife blocks: per block, while the memory budget holds K of them; see
#: :func:`class_squares_limit`)
CLASS_SQUARES_BYTES = 256 * 2**20


def split_spec(spec: str) -> tuple[Path | None, str | None]:
    """``KEY`` → (None, KEY); ``PATH`` → (PATH, None); ``PATH:KEY`` → (PATH, KEY).

    A spec is a path when it names an existing file (or its part before the last ``:`` does).
    """
    if Path(spec).is_file():
        return Path(spec), None
    path, sep, key = spec.rpartition(":")
    if sep and path and Path(path).is_file():
        return Path(path), key or None
    if "/" in spec and not sep and Path(spec).suffix:
        raise InputError("no such file", source=spec, hint="--labels/--pair take KEY (in the "
                         "same file), PATH or PATH:KEY")
    return None, spec


def resolve_companion(spec: str, source: ArraySource | None, what: str) -> ArraySource:
    """The array ``spec`` names for ``source`` (a key of the same file, or another file).

    Refuses, before any row is read: a key in a tensor input (no file to look in), a missing
    key, and a row count other than the input's. ``source=None``: rows not known before the
    pass (a model run over batches; its pass checks the count), so ``spec`` must name a file.
    """
    path, key = split_spec(spec)
    if path is None:
        if source is None or source.path is None:
            raise UsageError(f"{what} {spec!r} names a key, but the input is not a file",
                             hint=f"pass {what} PATH[:KEY]")
        path = Path(source.path)
    arrays = list_arrays(path)
    if key is None:
        if len(arrays) != 1:
            raise UsageError(f"holds {len(arrays)} arrays; {what} needs one",
                             source=source_label(path), hint=f"pass {what} {path}:KEY")
        chosen = arrays[0]
    else:
        chosen = select_arrays(arrays, [key], path)[0]
    if source is not None and chosen.shape[0] != source.shape[0]:
        raise InputError(f"has {chosen.shape[0]:,} rows for the {source.shape[0]:,} rows of "
                         f"{source.label} ({what})", source=chosen.label,
                         hint="the two must be row-aligned: same rows, same order")
    return chosen


def label_source(spec: str, source: ArraySource | None) -> ArraySource:
    """The labels ``--labels spec`` names for ``source``: one id per row ((N,) or (N, 1))."""
    labels = resolve_companion(spec, source, "--labels")
    if len(labels.shape) > 2 or (len(labels.shape) == 2 and labels.shape[1] != 1):
        raise InputError(f"labels have shape {tuple(labels.shape)}, not one per row",
                         source=labels.label, hint="store labels as an (N,) integer array")
    return labels


def pair_source(spec: str, source: ArraySource | None) -> ArraySource:
    """The second view ``--pair spec`` names for ``source``: a 2-D array of the same rows."""
    pair = resolve_companion(spec, source, "--pair")
    if len(pair.shape) != 2:
        raise InputError(f"is {len(pair.shape)}-D with shape {tuple(pair.shape)}, not rows "
                         "× features", source=pair.label, hint="pair a 2-D array")
    return pair


def pair_block_bytes(d: int, d_pair: int) -> int:
    """Memory of one jackknife block's cross-moments of two views of d and d' columns:
    ((d + d')² + 3(d + d') + 4)·8 bytes (Σyyᵀ, Σy and the debiased-HSIC sums, float64).

    >>> round(pair_block_bytes(384, 384) / 2**20, 2)  # MiB: K = 20 blocks hold 90 MiB
    4.52
    """
    dim = d + d_pair
    return (dim * dim + 3 * dim + 4) * 8


def class_squares_limit(d: int, blocks: int, budget: int, extra: int = 0) -> int:
    """Bytes each of K jackknife blocks' per-class second moments may take: what a plain run
    keeps (:data:`CLASS_SQUARES_BYTES`) while K of them fit the memory ``budget`` left beside
    the blocked moments (``extra``: a pair's bytes per block, see
    :func:`~reprdiag.stats.blocked.moment_bytes`), else an equal share of what is left, and
    never less than a K-th of :data:`CLASS_SQUARES_BYTES`.

    >>> class_squares_limit(768, 20, budget=2**40) == CLASS_SQUARES_BYTES  # memory to spare
    True
    >>> class_squares_limit(768, 20, budget=0) == CLASS_SQUARES_BYTES // 20
    True
    """
    left = budget - moment_bytes(d, blocks, extra)
    return min(CLASS_SQUARES_BYTES, max(CLASS_SQUARES_BYTES, left) // blocks)


def streamed(labels: ArraySource | None, pair: ArraySource | None, d: int,
             device: torch.device, blocks: int = 0, seed: int = 0,
             budget: int | None = None) -> list[Companion]:
    """The companions one pass over an input of width ``d`` feeds (fresh for every pass):
    ``labels`` and ``pair`` are whatever reads rows ``[a, b)`` of them (``read``, ``label``);
    ``blocks`` > 0 keeps their statistics per jackknife block (the K and ``seed`` of the
    pass's moments, ``--uncertainty``), each block's per-class second moments as large as
    a plain run's while ``budget`` (bytes, the one K was fitted to; default
    :func:`~reprdiag.stats.blocked.memory_budget` of ``device``) holds K of them beside the
    blocked moments and the pair's (:func:`class_squares_limit`)."""
    out: list[Companion] = []
    if labels is not None:
        limit = None
        if blocks:
            extra = pair_block_bytes(d, int(pair.shape[1])) if pair is not None else 0
            limit = class_squares_limit(
                d, blocks, memory_budget(device) if budget is None else budget, extra)
        out.append(LabelCompanion(labels, d, device, blocks, seed, limit))
    if pair is not None:
        out.append(PairCompanion(pair, d, device, blocks, seed))
    return out


class LabelCompanion:
    """Per-class counts and sums (and, while C·d² fits, per-class second moments); with
    ``blocks`` = K > 0, one set per jackknife block (``seed``: the blocks' seed).

    ``squares_limit``: the bytes of per-class second moments one set may keep (C·d²·8), by
    default :data:`CLASS_SQUARES_BYTES` (shared by the K blocks when there are blocks;
    :func:`streamed` passes :func:`class_squares_limit`)."""

    name = "classes"

    def __init__(self, labels: ArraySource, d: int, device: torch.device, blocks: int = 0,
                 seed: int = 0, squares_limit: int | None = None):
        self.labels, self.d = labels, d
        limit = (CLASS_SQUARES_BYTES // max(blocks, 1) if squares_limit is None
                 else squares_limit)

        def make() -> ClassMoments:
            return ClassMoments(d, second_moments=True, device=device, squares_limit=limit)

        self.classes = make() if not blocks else None
        self.blocked = (BlockedStatistic([make() for _ in range(blocks)], seed,
                                         tidy=ClassMoments.nonempty) if blocks else None)

    def update(self, first: int, rows: torch.Tensor, keep: torch.Tensor | None) -> None:
        ids = check_labels(self.labels.read(first, first + rows.shape[0]), rows.shape[0],
                           self.labels.label)
        if self.blocked is not None:
            for part, (block_rows, block_ids) in self.blocked.split(first, [rows, ids], keep):
                part.update(block_rows, block_ids)
            return
        if keep is not None:
            rows, ids = rows[keep], ids[keep.cpu()]
        self.classes.update(rows, ids)  # past CLASS_SQUARES_BYTES per-class rank is left out

    def result(self) -> ClassMoments | BlockedStatistic[ClassMoments]:
        return self.blocked if self.blocked is not None else self.classes


class PairCompanion:
    """The cross-moments of the input and its paired view; with ``blocks`` = K > 0, one set
    per jackknife block (``seed``: the blocks' seed)."""

    name = "pair"

    def __init__(self, pair: ArraySource, d: int, device: torch.device, blocks: int = 0,
                 seed: int = 0):
        self.pair = pair
        width = int(pair.shape[1])
        self.moments = PairMoments(d, width, device=device) if not blocks else None
        self.blocked = (BlockedStatistic([PairMoments(d, width, device=device)
                                          for _ in range(blocks)], seed) if blocks else None)

    def update(self, first: int, rows: torch.Tensor, keep: torch.Tensor | None) -> None:
        other = self.pair.read(first, first + rows.shape[0])
        bad = ~torch.isfinite(other).all(dim=1) if other.is_floating_point() else None
        if bad is not None and bool(bad.any()):
            row = first + int(bad.nonzero()[0, 0])
            raise InputError(f"row {row} holds NaN or Inf", source=self.pair.label,
                             hint="the paired view must be finite where the input is")
        if self.blocked is not None:
            for part, (block_rows, block_other) in self.blocked.split(first, [rows, other],
                                                                      keep):
                part.update(block_rows, block_other)
            return
        if keep is not None:
            rows, other = rows[keep], other[keep.cpu()]
        self.moments.update(rows, other)

    def result(self) -> PairMoments | BlockedStatistic[PairMoments]:
        return self.blocked if self.blocked is not None else self.moments
