"""Where an analysis runs: one process, or the process group ``torchrun`` describes.

:func:`session` joins (and leaves) the group for one analysis
(:func:`reprdiag.pipeline.joined` keeps one group for several). :func:`launched`,
:func:`is_main_process` and :func:`printed_by_rank0` let the CLI entry point decide which
rank prints. Only the pipeline and the CLI entry point open sessions; everything below them is
handed a :class:`~reprdiag.distributed.context.DistributedContext` (or ``None``).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.distributed as dist

from reprdiag.distributed.context import DistributedContext, check_backend, local_device
from reprdiag.errors import UsageError


def printed_by_rank0(exc: BaseException) -> bool:
    """True on a rank > 0 for an error rank 0 raises (and prints) as well."""
    return bool(getattr(exc, "all_ranks", False)) and not is_main_process()


def is_main_process() -> bool:
    """True unless this is a ``torchrun`` worker of rank > 0 (which stays quiet)."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank() == 0
    return not launched() or os.environ.get("RANK", "0") == "0"


def launched() -> bool:
    """True in a process started by ``torchrun`` (``torch.distributed.run``)."""
    return dist.is_available() and dist.is_torchelastic_launched()


@contextmanager
def session(device: torch.device, backend: str = "auto",
            distributed: bool | DistributedContext | None = None
            ) -> Iterator[DistributedContext | None]:
    """The context an analysis runs in, or ``None`` for a single process.

    ``distributed=None`` (default) joins the group ``torchrun`` describes when this process
    was launched by it and no process group exists yet (the CLI's case); ``True`` requires a
    group (an existing one is used as is); ``False`` never distributes; a
    :class:`DistributedContext` is used as given. ``backend`` is checked in every case.
    """
    check_backend(backend)
    if isinstance(distributed, DistributedContext):
        yield distributed
        return
    if distributed is False or not dist.is_available():
        yield None
        return
    if dist.is_initialized():
        yield DistributedContext(local_device(device)) if distributed else None
        return
    if not launched():
        if distributed:
            raise UsageError("distributed=True but this process was not started by torchrun",
                             hint="launch with torchrun, or pass distributed=False")
        yield None
        return
    ctx = DistributedContext.from_env(device, backend)
    try:
        yield ctx
    finally:
        ctx.close()
