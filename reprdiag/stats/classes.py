"""Per-class streaming statistics: what label-aware metrics need beside the total moments.

:class:`ClassMoments` keeps, for every class seen so far, its row count and the sum of its rows
(shifted by the first chunk's mean, float64): O(C·d) memory, so N stays unbounded. With
``second_moments=True`` it also keeps each class's Σyyᵀ (O(C·d²)), which per-class spectra need.
Class ids are arbitrary integers, mapped to dense indices as they first appear (sorted within
a chunk). Two of them merge exactly (:mod:`reprdiag.stats.state`): their frame is the shift and
the class ids, in which the counts, sums and second moments add.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from reprdiag.errors import InputError
from reprdiag.stats.state import Frame, cpu_shift, first_shift

_F64 = torch.float64
#: the most classes a run may hold (counts and sums are C×d float64)
MAX_CLASSES = 1_000_000


def check_labels(labels: torch.Tensor, rows: int, label: str) -> torch.Tensor:
    """``labels`` as an int64 vector of length ``rows``, or a one-line :class:`InputError`.

    Accepts integer arrays, and float arrays holding whole numbers; (N, 1) is flattened.
    """
    if labels.ndim == 2 and labels.shape[1] == 1:
        labels = labels[:, 0]
    if labels.ndim != 1:
        raise InputError(f"labels have shape {tuple(labels.shape)}, not one label per row",
                         source=label, hint="store labels as an (N,) integer array")
    if labels.shape[0] != rows:
        raise InputError(f"has {labels.shape[0]:,} labels for {rows:,} rows", source=label,
                         hint="labels must be row-aligned with the embeddings")
    if labels.is_complex() or labels.dtype == torch.bool:
        raise InputError(f"labels have dtype {labels.dtype}, not integers", source=label,
                         hint="store class ids as integers")
    if labels.is_floating_point() and (not bool(torch.isfinite(labels).all())
                                       or bool((labels != labels.round()).any())):
        raise InputError("labels are not whole numbers", source=label,
                             hint="store class ids as integers")
    return labels.to(torch.int64)


@dataclass
class ClassMoments:
    """Counts, shifted sums (and optionally second moments) of the rows of each class.

    >>> c = ClassMoments(2)
    >>> c.update(torch.tensor([[1., 0.], [3., 0.], [0., 5.]]), torch.tensor([7, 7, 2]))
    >>> c.ids, c.counts.tolist(), c.means().tolist()
    ([2, 7], [1.0, 2.0], [[0.0, 5.0], [2.0, 0.0]])
    """

    d: int
    second_moments: bool = False
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    #: per-class second moments are dropped when they would take more bytes than this
    #: (``None``: no limit); the per-class metrics that need them are then left out
    squares_limit: int | None = None
    shift: torch.Tensor | None = None
    ids: list[int] = field(default_factory=list)
    counts: torch.Tensor = field(init=False)
    sums: torch.Tensor = field(init=False)
    squares: torch.Tensor | None = field(init=False, default=None)
    _index: dict[int, int] = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self) -> None:
        self.counts = torch.zeros(0, dtype=_F64, device=self.device)
        self.sums = torch.zeros(0, self.d, dtype=_F64, device=self.device)
        if self.second_moments:
            self.squares = torch.zeros(0, self.d, self.d, dtype=_F64, device=self.device)

    @property
    def classes(self) -> int:
        return len(self.ids)

    def _dense(self, labels: torch.Tensor) -> torch.Tensor:
        """Dense class indices of ``labels``, registering new ids (grows the tables)."""
        values, inverse = torch.unique(labels.cpu(), return_inverse=True)
        new = [int(v) for v in values.tolist() if int(v) not in self._index]
        if new:
            if len(self.ids) + len(new) > MAX_CLASSES:
                raise InputError(f"labels name more than {MAX_CLASSES:,} classes",
                                 hint="pass class ids, not row ids")
            for v in new:
                self._index[v] = len(self.ids)
                self.ids.append(v)
            grow = len(new)
            self.counts = torch.cat([self.counts, self.counts.new_zeros(grow)])
            self.sums = torch.cat([self.sums, self.sums.new_zeros(grow, self.d)])
            if self.squares is not None and not self._squares_fit(len(self.ids)):
                self.squares = None  # too many classes: per-class rank is left out
            if self.squares is not None:
                self.squares = torch.cat([self.squares,
                                          self.squares.new_zeros(grow, self.d, self.d)])
        lookup = torch.tensor([self._index[int(v)] for v in values.tolist()], dtype=torch.int64)
        return lookup[inverse].to(self.device)

    def update(self, rows: torch.Tensor, labels: torch.Tensor) -> None:
        """Add a chunk of rows (n × d) with their class ids (n,). Cost O(n·d) (+ O(n·d²) with
        second moments)."""
        if rows.shape[0] == 0:
            return
        y = rows.to(self.device, _F64)
        if self.shift is None:
            self.shift = y.mean(dim=0)
        y = y - self.shift
        index = self._dense(labels)
        self.counts.index_add_(0, index, torch.ones_like(index, dtype=_F64))
        self.sums.index_add_(0, index, y)
        if self.squares is not None:
            for c in torch.unique(index).tolist():
                part = y[index == c]
                self.squares[c] += part.T @ part

    def _squares_fit(self, classes: int) -> bool:
        return self.squares_limit is None or classes * self.d * self.d * 8 <= self.squares_limit

    # -- merging (the protocol of :mod:`reprdiag.stats.state`) ------------------------------
    def frame(self) -> Frame:
        """The shift, the class ids and whether per-class second moments are kept."""
        return {"shift": cpu_shift(self.shift), "ids": list(self.ids),
                "squares": self.squares is not None}

    def common_frame(self, frames: Sequence[Frame]) -> Frame:
        """The first shift, the sorted union of the ids, and second moments only when every
        part kept them and the union's still fit :attr:`squares_limit`."""
        ids = sorted({i for f in frames for i in f["ids"]})
        return {"shift": first_shift(frames), "ids": ids,
                "squares": all(f["squares"] for f in frames) and self._squares_fit(len(ids))}

    def state(self, frame: Frame | None = None) -> dict[str, torch.Tensor]:
        """``counts`` (C), ``sums`` (C×d) and, when the frame keeps them, ``squares``
        (C×d×d), float64, indexed by ``frame``'s ids (zero for a class this part never saw)
        and about its shift (default: the part's own frame)."""
        frame = frame or self.frame()
        ids = frame["ids"]
        where = torch.tensor([self._index.get(i, -1) for i in ids], dtype=torch.int64)
        have = where >= 0
        rows, src = torch.nonzero(have).flatten().to(self.device), where[have].to(self.device)
        counts = torch.zeros(len(ids), dtype=_F64, device=self.device)
        sums = torch.zeros(len(ids), self.d, dtype=_F64, device=self.device)
        counts[rows], sums[rows] = self.counts[src], self.sums[src]
        squares = None
        if frame["squares"]:
            squares = torch.zeros(len(ids), self.d, self.d, dtype=_F64, device=self.device)
            squares[rows] = self.squares[src]
        shift = frame["shift"]
        if shift is not None and self.shift is not None:  # y' = y + δ, δ = old − new shift
            delta = (self.shift - shift.to(self.device, _F64))
            if squares is not None:
                cross = sums.unsqueeze(2) * delta.view(1, 1, -1)  # Σ y δᵀ per class
                squares += cross + cross.transpose(1, 2) \
                    + counts.view(-1, 1, 1) * torch.outer(delta, delta)
            sums = sums + counts.unsqueeze(1) * delta
        out = {"counts": counts, "sums": sums}
        if squares is not None:
            out["squares"] = squares
        return out

    def with_state(self, frame: Frame, state: dict[str, torch.Tensor]) -> ClassMoments:
        """Class moments like these (width, device, limit) holding ``state`` in ``frame``.

        >>> a, b = ClassMoments(1, second_moments=True), ClassMoments(1, second_moments=True)
        >>> a.update(torch.tensor([[1.], [3.]]), torch.tensor([5, 5]))
        >>> b.update(torch.tensor([[2.], [9.]]), torch.tensor([5, 8]))
        >>> from reprdiag.stats.state import merged
        >>> m = merged(a, b)
        >>> m.ids, m.counts.tolist(), m.means().flatten().tolist(), m.class_covariance(0).item()
        ([5, 8], [3.0, 1.0], [2.0, 9.0], 1.0)
        """
        out = ClassMoments(self.d, frame["squares"], self.device, self.squares_limit)
        shift = frame["shift"]
        out.shift = None if shift is None else shift.to(self.device, _F64).clone()
        out.ids = list(frame["ids"])
        out._index = {v: i for i, v in enumerate(out.ids)}
        out.counts = state["counts"].to(self.device, _F64)
        out.sums = state["sums"].to(self.device, _F64)
        out.squares = state["squares"].to(self.device, _F64) if frame["squares"] else None
        return out

    def nonempty(self) -> ClassMoments:
        """These class moments without the classes that hold no row (what is left of a class
        whose rows were all removed, e.g. the jackknife's "all rows but block b"); ``self``
        when every class has rows.

        >>> c = ClassMoments(1)
        >>> c.update(torch.tensor([[1.], [2.]]), torch.tensor([4, 9]))
        >>> c.counts[1] = 0
        >>> c.nonempty().ids
        [4]
        """
        have = self.counts > 0
        if bool(have.all()):
            return self
        rows = torch.nonzero(have).flatten()
        frame = {**self.frame(), "ids": [self.ids[i] for i in rows.tolist()]}
        state = {k: v[rows] for k, v in self.state().items()}
        return self.with_state(frame, state)

    def means(self) -> torch.Tensor:
        """μ_c, one row per class (C × d, float64)."""
        return self.shift + self.sums / self.counts.unsqueeze(1)

    def class_covariance(self, c: int) -> torch.Tensor:
        """The unbiased covariance of class ``c`` (needs ``second_moments=True``)."""
        if self.squares is None:
            raise InputError("per-class second moments were not kept",
                             hint="accumulate with second_moments=True")
        n, s = float(self.counts[c]), self.sums[c]
        centred = self.squares[c] - torch.outer(s, s) / n
        return (centred + centred.T) / (2 * max(n - 1.0, 1.0))

    def proportions(self) -> np.ndarray:
        """n_c / N per class."""
        counts = self.counts.cpu().numpy()
        return counts / counts.sum()
