"""Streaming statistics: what one pass over the rows keeps, and how two of them merge exactly.

* :mod:`~reprdiag.stats.moments` — :class:`StreamingMoments` (shifted first and second moments
  of x and of x/‖x‖) and the chunk kernels;
* :mod:`~reprdiag.stats.reservoir` — :class:`Reservoir`, the seeded uniform row sample, and
  :func:`row_hash`, the public row hash it (and the jackknife's blocks) draw from;
* :mod:`~reprdiag.stats.blocked` — :class:`~reprdiag.stats.blocked.BlockedMoments`, moments
  per jackknife block;
* :mod:`~reprdiag.stats.classes` — per-class counts, sums and second moments (``--labels``);
* :mod:`~reprdiag.stats.cross` — cross-moments of row-aligned inputs (CKA, ``--pair``);
* :mod:`~reprdiag.stats.state` — the merge protocol they all follow: a small frame plus
  additive state tensors, so processes merge them by summing tensors.

Below :mod:`reprdiag.spectrum` and the metrics; above the loaders (import-linter layers).
"""

from reprdiag.stats.moments import (
    ZERO_NORM,
    Scratch,
    StreamingMoments,
    gram_product,
    normalize_rows,
    safe_norms,
    work_dtype,
)
from reprdiag.stats.reservoir import Reservoir, row_hash, row_priority, sample_threshold
from reprdiag.stats.state import Frame, Mergeable, merged

__all__ = ["ZERO_NORM", "Frame", "Mergeable", "Reservoir", "Scratch", "StreamingMoments",
           "gram_product", "merged", "normalize_rows", "row_hash", "row_priority",
           "safe_norms", "sample_threshold", "work_dtype"]
