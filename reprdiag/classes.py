"""Per-class streaming statistics: what label-aware metrics need beside the total moments.

:class:`ClassMoments` keeps, for every class seen so far, its row count and the sum of its rows
(shifted by the first chunk's mean, float64): O(C·d) memory, so N stays unbounded. With
``second_moments=True`` it also keeps each class's Σyyᵀ (O(C·d²)), which per-class spectra need.
Class ids are arbitrary integers, mapped to dense indices as they first appear (sorted within
a chunk).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from reprdiag.errors import InputError

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
