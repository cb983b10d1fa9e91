"""Many processes, one analysis (``torchrun``): who reads which rows, the merge, the session.

* :mod:`~reprdiag.distributed.split` — pure functions: each rank's rows of a source or of a
  dataset's batches;
* :mod:`~reprdiag.distributed.context` — :class:`DistributedContext`: the process group,
  agreement on errors, the exact merge (frames exchanged, state tensors all-reduced);
* :mod:`~reprdiag.distributed.session` — joining and leaving the group (:func:`session`;
  :func:`reprdiag.pipeline.joined` keeps one group for several analyses) and which rank
  prints (:func:`is_main_process`).
"""

from reprdiag.distributed.context import (
    BACKENDS,
    DistributedContext,
    alike,
    check_backend,
    on_all_ranks,
    refuse_in_memory,
)
from reprdiag.distributed.session import (
    is_main_process,
    launched,
    printed_by_rank0,
    session,
)
from reprdiag.distributed.split import even_slices, group_shards, split_source, whole_shards

__all__ = ["BACKENDS", "DistributedContext", "alike", "check_backend", "even_slices",
           "group_shards", "is_main_process", "launched", "on_all_ranks",
           "printed_by_rank0", "refuse_in_memory", "session", "split_source", "whole_shards"]
