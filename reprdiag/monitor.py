"""Spectral metrics during training: feed embeddings every step, get a metric history.

:class:`SpectralMonitor` folds each batch of embeddings into the streaming statistics of
:mod:`reprdiag.engine` (an :class:`~reprdiag.engine.Accumulator`: float64 moments plus a
row sample) and, every ``every_n_steps`` calls, evaluates the registered metrics on them with
:func:`reprdiag.metrics.compute` — the same code as ``reprdiag analyze``, so a logged value
equals what ``analyze`` reports for the same rows. Each evaluation appends one row to
:attr:`SpectralMonitor.history`, rewrites the CSV file (atomically), and writes the scalars
to TensorBoard when asked.

Window: with ``window="reset"`` (default) the statistics start afresh after each evaluation,
so a logged value describes the embeddings of the last N steps (N·batch rows): it tracks the
current state of a changing model. ``window="cumulative"`` keeps every row since the start.

Overhead per step: two d×d Gram products of the batch (of x − shift and of x/‖x‖), O(B·d²),
summed into float64 totals, plus O(B) to offer rows to the sample; every N steps, the
metrics (three O(d³) eigendecompositions for the spectral ones). Memory: O(d²), plus
O(sample·d) when a sample metric (``er_entropy``, ``partition_isotropy``, ``uniformity``)
is asked for.
``bench/monitor_overhead.py`` measures it.

Every registered metric can be tracked by naming it: the sample metrics (``uniformity``,
``er_entropy``, ``partition_isotropy``) from the row sample, the label metrics (``nc1``,
``lidar``, ``nc2_*``, ``class_*``) when each :meth:`SpectralMonitor.update` also gets the
batch's class ids (``labels=``), the paired-view metrics (``alignment``, ``barlow_*``,
``pair_cka``) when it gets the batch's second view (``pair=``): the same streamed statistics
as ``reprdiag analyze --labels/--pair``, so the values equal analyze's on the same rows.

>>> import torch
>>> mon = SpectralMonitor(every_n_steps=2, metrics=["vne", "rankme"])
>>> for step in range(4):
...     row = mon.update(torch.randn(32, 8), step=step)
>>> [r["step"] for r in mon.history], mon.history[-1]["rows"]
([1, 3], 64)
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

import pandas as pd
import torch
import torch.distributed as dist

from reprdiag.companions import LabelCompanion, PairCompanion
from reprdiag.config import METRIC_OPTIONS, AnalysisConfig
from reprdiag.distributed.context import DistributedContext
from reprdiag.engine import Accumulated, Accumulator, Companion
from reprdiag.errors import InputError, ReprdiagError, UsageError, check_choice, source_label
from reprdiag.metrics import MetricInfo, compute, resolve
from reprdiag.pipeline import statistics
from reprdiag.report.export import atomic_write, make_folder

__all__ = ["BOOKKEEPING", "WINDOWS", "SpectralMonitor", "history_metrics", "read_history"]

#: ``window`` values (first = default).
WINDOWS: tuple[str, ...] = ("reset", "cumulative")
#: Distributed: rank r numbers its rows from r·RANK_ROWS, so the seeded sample's row indices
#: never collide across ranks.
RANK_ROWS = 1 << 40
#: Columns of a history that are not metrics.
BOOKKEEPING: tuple[str, ...] = ("step", "rows", "rows_dropped")


class ScalarWriter(Protocol):
    """What the monitor needs of a TensorBoard ``SummaryWriter``."""

    def add_scalar(self, tag: str, scalar_value: float, global_step: int | None = None) -> Any: ...


def default_metrics() -> list[str]:
    """The metrics that need only the moments (no row sample): cheap enough for every log."""
    return [m.name for m in resolve(None) if not m.uses_sample and not m.needs]


def open_tensorboard(log_dir: str | Path) -> ScalarWriter:
    """A ``torch.utils.tensorboard.SummaryWriter`` on ``log_dir`` (needs ``tensorboard``)."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError as exc:
        raise UsageError("TensorBoard logging needs the tensorboard package",
                         hint="pip install 'reprdiag[tensorboard]'") from exc
    return SummaryWriter(log_dir=str(log_dir))


class SpectralMonitor:
    """Accumulate embeddings during training and log spectral metrics every N steps.

    Args:
        every_n_steps: evaluate (and log) after every N calls of :meth:`update`.
        metrics: metric names (see ``reprdiag list-metrics``); default: every metric computed
            from the moments alone (not the sample metrics ``er_entropy``,
            ``partition_isotropy`` and ``uniformity``, nor the label and pair metrics). A
            label metric (``nc1``, ``lidar``, ...) makes ``labels=`` required in every
            :meth:`update`, a paired-view metric (``alignment``, ``pair_cka``, ...) ``pair=``.
        csv: path of the history CSV, rewritten atomically at each evaluation (columns
            ``step, rows, rows_dropped`` and one per metric); ``None`` keeps it in memory.
        tensorboard: a log folder (a ``SummaryWriter`` is opened there and closed by
            :meth:`close`) or an object with ``add_scalar`` (left open); tags
            ``{prefix}/{metric}``.
        window: ``"reset"`` (metrics over the rows since the last evaluation) or
            ``"cumulative"`` (over every row since the start).
        sample_size: rows kept for pairwise metrics (only when one is asked for).
        seed, precision: as for ``reprdiag analyze``.
        nan: ``"drop"`` (default: rows holding NaN/Inf are skipped and counted in
            ``rows_dropped``) or ``"error"`` (:class:`~reprdiag.errors.InputError` at the next
            evaluation).
        options: metric options, e.g. ``{"kappa": 10.0, "er_estimator": "joe"}``.
        prefix: the TensorBoard tag prefix.
        distributed: ``True`` under DDP/``torchrun`` (a process group is initialised), or a
            :class:`~reprdiag.distributed.DistributedContext`: each evaluation merges every
            rank's statistics exactly (all_reduce of the float64 moments, gather of the row
            sample), so every rank logs the metrics of all ranks' rows (``rows`` counts them
            all); rank 0 alone writes the CSV and TensorBoard. Evaluations are then
            collectives: every rank must call :meth:`update`, :meth:`log` and :meth:`close`
            in step (as DDP training steps are). Default ``False``: each rank its own rows.
    """

    def __init__(self, every_n_steps: int = 100, metrics: Sequence[str] | None = None, *,
                 csv: str | Path | None = None,
                 tensorboard: str | Path | ScalarWriter | None = None,
                 window: str = "reset", sample_size: int = 4096, seed: int = 0,
                 precision: str = "auto", nan: str = "drop",
                 options: dict[str, Any] | None = None, prefix: str = "reprdiag",
                 distributed: bool | DistributedContext = False):
        if int(every_n_steps) < 1:
            raise UsageError(f"every_n_steps must be at least 1, got {every_n_steps}")
        check_choice(window, WINDOWS, "window")
        self.every_n_steps = int(every_n_steps)
        self.window = window
        self.infos: list[MetricInfo] = resolve(list(metrics) if metrics else default_metrics())
        self.options = dict(options or {})
        unknown = [k for k in self.options if k not in METRIC_OPTIONS]
        if unknown:
            raise UsageError(f"unknown metric option {unknown[0]!r}",
                             hint="options takes " + ", ".join(METRIC_OPTIONS))
        uses_sample = any(m.uses_sample for m in self.infos)
        # without a pairwise metric the sample is never read: keep a token one
        needs = {m.needs for m in self.infos}
        self.config = AnalysisConfig(
            metrics=tuple(m.name for m in self.infos), precision=precision,
            sample_size=sample_size if uses_sample else 2, seed=seed, nan=nan,
            labels=UPDATE_ARGS["classes"] if "classes" in needs else None,
            pair=UPDATE_ARGS["pair"] if "pair" in needs else None, **self.options)
        self.csv = Path(csv) if csv is not None else None
        if self.csv is not None:
            make_folder(self.csv.parent)
        self.prefix = prefix
        self._owns_writer = isinstance(tensorboard, str | Path)
        self.writer: ScalarWriter | None = (open_tensorboard(tensorboard) if self._owns_writer
                                            else tensorboard)
        self.history: list[dict[str, float]] = []
        self.steps = 0
        self._acc: Accumulator | None = None
        self._held: dict[str, _Held] = {}  # this update's labels / paired rows, by companion
        self._rows_seen = 0
        self._pending = 0
        self._step = 0
        self._ctx, self._rank = _join(distributed)
        self._distributed = distributed is not False

    # -- feeding ----------------------------------------------------------------------------
    def update(self, embeddings: torch.Tensor, step: int | None = None, *,
               labels: torch.Tensor | None = None, pair: torch.Tensor | None = None
               ) -> dict[str, float] | None:
        """Add one batch of (B, d) embeddings (detached; any device and float dtype).

        ``step`` labels the row logged at this call (default: the number of calls so far).
        ``labels`` (B integer class ids) and ``pair`` (the batch's second view, (B, d'))
        feed the label and paired-view metrics; they are required in every call when such a
        metric is tracked, and ignored when none is. Returns the logged row when this call
        completed a window of N steps, else ``None``.
        """
        rows = embeddings.detach()
        if rows.ndim != 2:
            raise InputError(f"expected (batch, d) embeddings, got shape {tuple(rows.shape)}",
                             hint="pool or flatten to one row per sample first")
        given = self._companion_rows(rows, labels, pair)
        if self._acc is None:
            self._acc = self._new_accumulator(rows, given)
        elif rows.shape[1] != self._acc.d:
            raise InputError(f"embedding width changed from {self._acc.d} to "
                             f"{rows.shape[1]}", hint="use one monitor per layer")
        first = self._rank * RANK_ROWS + self._rows_seen
        for name, held in self._held.items():
            held.hold(first, given[name])
        with torch.no_grad():
            self._acc.add(first, rows)
        self._rows_seen += rows.shape[0]
        self.steps += 1
        self._pending += 1
        self._step = self.steps if step is None else int(step)
        if self.steps % self.every_n_steps == 0:
            return self.log()
        return None

    def _companion_rows(self, rows: torch.Tensor, labels: torch.Tensor | None,
                        pair: torch.Tensor | None) -> dict[str, torch.Tensor]:
        """The labels / paired rows this update must bring, on the CPU, checked: present when
        a tracked metric needs them, one per embedding row."""
        given: dict[str, torch.Tensor] = {}
        for name, value in (("classes", labels), ("pair", pair)):
            if name not in self.config.extras():
                continue
            if value is None:
                metric = next(m.name for m in self.infos if m.needs == name)
                raise UsageError(f"metric {metric!r} needs {UPDATE_ARGS[name]}",
                                 hint=f"pass {UPDATE_ARGS[name]} in every update, or drop "
                                 f"{metric} from metrics")
            value = torch.as_tensor(value).detach().cpu()
            if value.ndim == 0 or value.shape[0] != rows.shape[0]:
                raise InputError(f"{UPDATE_ARGS[name]} has shape {tuple(value.shape)} for "
                                 f"{rows.shape[0]} embedding rows",
                                 hint="give one per row of the batch, in the same order")
            if name == "pair" and value.ndim != 2:
                raise InputError(f"pair= has shape {tuple(value.shape)}, not (batch, d')",
                                 hint="pool or flatten the second view to one row per sample")
            given[name] = value
        return given

    def _new_accumulator(self, rows: torch.Tensor, given: dict[str, torch.Tensor]
                         ) -> Accumulator:
        acc = Accumulator(rows.shape[1], rows.dtype, self.config.stream(rows.device),
                          label="<monitor>")
        self._held = {name: _Held(UPDATE_ARGS[name], value.shape[1] if value.ndim == 2 else 1)
                      for name, value in given.items()}
        companions: list[Companion] = []
        if "classes" in self._held:
            companions.append(LabelCompanion(self._held["classes"], rows.shape[1], acc.device))
        if "pair" in self._held:
            companions.append(PairCompanion(self._held["pair"], rows.shape[1], acc.device))
        acc.companions = companions
        return acc

    # -- evaluating -------------------------------------------------------------------------
    def compute(self) -> dict[str, float]:
        """The metrics over the current window, without logging or resetting it."""
        return self._evaluate()[2]

    def _evaluate(self) -> tuple[int, int, dict[str, float]]:
        """(rows, rows dropped, metrics) of the current window (NaN metrics below 2 rows);
        every rank's rows when distributed."""
        if self._acc is None:
            return 0, 0, {m.name: math.nan for m in self.infos}
        counts = [(self._acc.rows_kept, self._acc.tally.dropped)]
        if self._distributed:
            counts = self._context().all_gather(counts[0])
        rows, dropped = (sum(c) for c in zip(*counts, strict=True))
        if rows < 2 and not (dropped and self.config.nan == "error"):
            return rows, dropped, {m.name: math.nan for m in self.infos}
        acc = self._merged() if self._distributed else self._acc.finish()  # NaN rows raise
        return rows, dropped, compute(statistics(acc), self.infos,
                                      self.config.metric_options())

    def _context(self) -> DistributedContext:
        if self._ctx is None:  # a collective: the first evaluation, on every rank alike
            assert self._acc is not None
            self._ctx = DistributedContext(self._acc.device)
        return self._ctx

    def _merged(self) -> Accumulated:
        """All ranks' statistics of this window, merged; the local ones stay as they are
        (a ``cumulative`` window goes on from them)."""
        assert self._acc is not None
        return self._context().merge(self._acc)

    def log(self) -> dict[str, float] | None:
        """Evaluate now (e.g. at the end of an epoch), record and write the row; ``None``
        when no batch has come since the last evaluation."""
        if self._acc is None or self._pending == 0:
            return None
        rows, dropped, values = self._evaluate()
        row: dict[str, float] = {"step": self._step, "rows": rows, "rows_dropped": dropped,
                                 **values}
        self.history.append(row)
        self._pending = 0
        if self.window == "reset":
            self._acc = None
        self._write(row)
        return row

    def _write(self, row: dict[str, float]) -> None:
        if self._rank != 0:  # distributed: every rank has the same row; rank 0 writes it
            return
        if self.csv is not None:
            path = self.csv
            try:
                atomic_write(path, lambda p: self.to_frame().to_csv(p, index=False))
            except OSError as exc:
                raise ReprdiagError(f"cannot write the metric history ({exc.strerror})",
                                    source=source_label(path), hint="pick a writable csv path"
                                    ) from exc
        if self.writer is not None:
            for name in (m.name for m in self.infos):
                self.writer.add_scalar(f"{self.prefix}/{name}", row[name], int(row["step"]))

    def to_frame(self) -> pd.DataFrame:
        """The history as a DataFrame, one row per evaluation."""
        columns = [*BOOKKEEPING, *(m.name for m in self.infos)]
        return pd.DataFrame(self.history, columns=columns)

    # -- ending -----------------------------------------------------------------------------
    def close(self, flush: bool = True) -> None:
        """Log the unfinished window (``flush``) and close a TensorBoard writer it opened."""
        if flush:
            self.log()
        if self._owns_writer and self.writer is not None:
            self.writer.close()  # type: ignore[attr-defined]
            self.writer = None

    def __enter__(self) -> SpectralMonitor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close(flush=exc[0] is None)


#: How the monitor gets each kind of extra statistics (for messages and the config).
UPDATE_ARGS = {"classes": "labels=", "pair": "pair="}


class _Held:
    """One update's labels or paired rows, as a companion reads them: rows ``first`` …
    ``first + B − 1`` of a source that holds only the current batch."""

    def __init__(self, label: str, width: int):
        self.label, self.path, self.shape = label, None, (0, width)
        self._first, self._rows = 0, torch.empty(0)

    def hold(self, first: int, rows: torch.Tensor) -> None:
        self._first, self._rows = first, rows

    def read(self, start: int, stop: int) -> torch.Tensor:
        return self._rows[start - self._first: stop - self._first]


def _join(distributed: bool | DistributedContext) -> tuple[DistributedContext | None, int]:
    """(the context if given, this process's rank) for ``SpectralMonitor(distributed=...)``."""
    if isinstance(distributed, DistributedContext):
        return distributed, distributed.rank
    if not distributed:
        return None, 0
    if not (dist.is_available() and dist.is_initialized()):
        raise UsageError("distributed=True needs an initialised process group",
                         hint="DDP and torchrun scripts call "
                              "torch.distributed.init_process_group; or leave "
                              "distributed=False to monitor each rank's own rows")
    return None, dist.get_rank()


# ---------------------------------------------------------------------------------------------
# Reading a history back
# ---------------------------------------------------------------------------------------------


def read_history(path: str | Path) -> pd.DataFrame:
    """Read a monitor's CSV: a ``step`` column and one numeric column per metric.

    Raises :class:`~reprdiag.errors.InputError` (one line, exit 2) for a missing or unreadable
    file, one without a ``step`` column, or one with no metric column.
    """
    path = Path(path)
    label = source_label(path)
    if not path.is_file():
        raise InputError("no such file", source=label, hint="give the CSV a SpectralMonitor wrote")
    try:
        frame = pd.read_csv(path)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError,
            OSError) as exc:
        raise InputError(f"cannot be read as CSV ({type(exc).__name__})", source=label,
                         hint="give the CSV a SpectralMonitor wrote") from exc
    if "step" not in frame.columns:
        raise InputError("has no 'step' column", source=label,
                         hint="give the CSV a SpectralMonitor wrote")
    if not pd.api.types.is_numeric_dtype(frame["step"]):
        raise InputError("has a non-numeric 'step' column", source=label,
                         hint="give the CSV a SpectralMonitor wrote")
    if not history_metrics(frame):
        raise InputError("has no numeric metric column", source=label,
                         hint="give the CSV a SpectralMonitor wrote")
    return frame


def history_metrics(frame: pd.DataFrame, names: Sequence[str] | None = None) -> list[str]:
    """The metric columns of a history (numeric, not bookkeeping), or check ``names``.

    >>> history_metrics(pd.DataFrame({"step": [1], "rows": [8], "vne": [1.5], "note": ["x"]}))
    ['vne']
    """
    available = [c for c in frame.columns if c not in BOOKKEEPING
                 and pd.api.types.is_numeric_dtype(frame[c])]
    if not names:
        return available
    missing = [n for n in names if n not in available]
    if missing:
        raise UsageError(f"metric {missing[0]!r} is not in the history",
                         hint="its metric columns are: " + ", ".join(available))
    return list(dict.fromkeys(names))
