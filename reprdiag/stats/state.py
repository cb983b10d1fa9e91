"""The merge protocol of every streamed statistic: a small frame plus additive tensors.

A statistic built from disjoint rows (another chunk range, file or process) merges exactly
with another of the same configuration. Each one says what two of them must share to be added
(its *frame*: the shift its sums are taken about, the class ids its tables are indexed by),
re-expresses itself in a given frame, and then holds only tensors that add:

* :meth:`Mergeable.frame` — a small picklable dict (CPU tensors, lists);
* :meth:`Mergeable.common_frame` — the frame several of them agree on (the first shift of
  the first statistic that has rows, the union of the class ids);
* :meth:`Mergeable.state` — ``dict[str, Tensor]`` in a frame: for statistics in one frame,
  the state of their union is the element-wise sum of their states;
* :meth:`Mergeable.with_state` — a statistic configured like this one, holding that state.

So a process group merges one by exchanging frames (a few kilobytes) and all-reducing the
state tensors (:class:`reprdiag.distributed.context.DistributedContext`), and nothing outside
a statistic reads its fields. :func:`merged` is the same merge within one process.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol, TypeVar

import torch

#: what statistics must share to be added (picklable, small)
Frame = dict[str, Any]
M = TypeVar("M", bound="Mergeable")


class Mergeable(Protocol):
    """A statistic that merges through a frame and additive state tensors."""

    def frame(self) -> Frame: ...

    def common_frame(self, frames: Sequence[Frame]) -> Frame: ...

    def state(self, frame: Frame | None = None) -> dict[str, torch.Tensor]: ...

    def with_state(self: M, frame: Frame, state: dict[str, torch.Tensor]) -> M: ...


def first_shift(frames: Sequence[Frame]) -> torch.Tensor | None:
    """The shift of the first frame that has one (that of the first process with rows, so a
    merge about it reproduces the single pass's own shift), else ``None``."""
    return next((f["shift"] for f in frames if f.get("shift") is not None), None)


def cpu_shift(shift: torch.Tensor | None) -> torch.Tensor | None:
    """A shift as it travels in a frame: a detached float64 copy on the CPU."""
    return None if shift is None else shift.detach().to("cpu", torch.float64).clone()


def merged(a: M, b: M) -> M:
    """The statistic of ``a``'s and ``b``'s rows together (disjoint rows, one configuration):
    both re-expressed in their common frame, their states summed.

    >>> from reprdiag.stats.moments import StreamingMoments
    >>> x = torch.randn(10, 3, dtype=torch.float64)
    >>> a, b = StreamingMoments(3), StreamingMoments(3)
    >>> a.update(x[:4]); b.update(x[4:])
    >>> bool(torch.allclose(merged(a, b).covariance(), torch.cov(x.T)))
    True
    """
    frame = a.common_frame([a.frame(), b.frame()])
    sa, sb = a.state(frame), b.state(frame)
    return a.with_state(frame, {k: v + sb[k].to(v.device) for k, v in sa.items()})
