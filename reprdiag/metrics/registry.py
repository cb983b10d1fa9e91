"""The metric registry: each metric's function plus what the CLI and reports need to know."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from reprdiag.errors import UsageError
from reprdiag.statistics import Statistics, TensorLike

Bounds = Callable[[int, int], tuple[float, float]]


@dataclass(frozen=True)
class MetricInfo:
    """A registered metric.

    ``direction`` is ``"higher"`` when larger values are healthier, ``"lower"`` when smaller
    are, and ``"neutral"`` when neither. ``bounds(N, d)`` gives the documented range for an
    input of that size (used by tests and by ``--list-metrics``). ``deleted``, when set,
    computes the metric on the sample without each jackknife block at once,
    ``deleted(stats, labels, blocks, **options) -> [value without block b, …]``, faster than
    K separate evaluations.
    """

    name: str
    func: Callable[..., float]
    summary: str
    range: str
    direction: str
    citation: str
    bounds: Bounds
    uses_sample: bool = False
    discrete: bool = False
    options: tuple[str, ...] = field(default=())
    deleted: Callable[..., list[float]] | None = None
    #: the extra statistics it needs beyond moments and sample: ``"classes"`` (``--labels``)
    #: or ``"pair"`` (``--pair``); such a metric is computed only when they were streamed
    needs: str | None = None
    eigenvectors: bool = False  # needs the eigenvectors of XᵀX (see :func:`prepare`)


METRICS: dict[str, MetricInfo] = {}

#: The order of docs/design.md §3, used for tables and ``--list-metrics``.
DISPLAY_ORDER = ("vne", "vne_normalized", "effective_rank", "rankme", "participation_ratio",
                 "stable_rank", "numerical_rank", "alpha_req", "alpha_req_r2", "isoscore",
                 "partition_isotropy", "avg_cosine", "cov_offdiag", "cov_offdiag_frac",
                 "vicreg_std", "std_normalized", "er_entropy", "uniformity", "nc1",
                 "nc2_equinorm", "nc2_equiangularity", "lidar", "class_balance",
                 "class_erank_min", "class_erank_median", "alignment", "barlow_ondiag",
                 "barlow_offdiag", "pair_cka")


def metric(name: str, *, summary: str, range: str, direction: str, citation: str,
           bounds: Bounds, uses_sample: bool = False, discrete: bool = False,
           deleted: Callable[..., list[float]] | None = None, eigenvectors: bool = False,
           needs: str | None = None) -> Callable[[Callable[..., float]], Callable[..., float]]:
    """Register ``func(stats, **options) -> float`` as metric ``name``.

    The registered function also accepts a tensor or numpy array of rows in place of
    :class:`Statistics`, so ``reprdiag.metrics.vne(x)`` works on a tensor directly.
    """

    def register(func: Callable[..., float]) -> Callable[..., float]:
        params = inspect.signature(func).parameters
        options = tuple(p for p in params if p != "stats")

        @functools.wraps(func)
        def wrapper(x: Statistics | TensorLike, **kwargs: object) -> float:
            stats = x if isinstance(x, Statistics) else Statistics.from_tensor(x)
            return float(func(stats, **kwargs))

        METRICS[name] = MetricInfo(name, wrapper, summary, range, direction, citation, bounds,
                                   uses_sample, discrete, options, deleted,
                                   eigenvectors=eigenvectors, needs=needs)
        return wrapper

    return register


def resolve(names: Sequence[str] | None) -> list[MetricInfo]:
    """The registered metrics named (all of them for ``None``), in registry order."""
    if not names:
        rank = {n: i for i, n in enumerate(DISPLAY_ORDER)}
        return sorted(METRICS.values(), key=lambda m: rank.get(m.name, len(rank)))
    unknown = [n for n in names if n not in METRICS]
    if unknown:
        import difflib

        close = difflib.get_close_matches(unknown[0], list(METRICS), n=1)
        hint = (f"did you mean {close[0]!r}? " if close else "") + "valid: " + ", ".join(METRICS)
        raise UsageError(f"unknown metric {unknown[0]!r}", hint=hint)
    return [METRICS[n] for n in dict.fromkeys(names)]


def prepare(stats: Statistics, infos: Sequence[MetricInfo]) -> None:
    """Tell ``stats`` what the metrics ``infos`` will need before any spectrum is computed:
    when one needs the eigenvectors of XᵀX (partition isotropy), XᵀX is decomposed once, by
    ``eigh``, and its eigenvalues serve the singular values (RankMe, the report's σ) too,
    instead of a second ``eigvalsh`` of the same matrix."""
    if any(info.eigenvectors for info in infos):
        stats.spectra.want_vectors = True


#: the option that streams each kind of extra statistics (for messages)
NEEDS_OPTION = {"classes": "--labels", "pair": "--pair"}


def for_input(names: Sequence[str] | None, available: Iterable[str] = ()) -> list[MetricInfo]:
    """The metrics to compute on an input whose extra statistics are ``available``: the named
    ones (a name needing what is not available is a :class:`UsageError`), or by default every
    metric whose needs are met."""
    have = set(available)
    if not names:
        return [i for i in resolve(None) if i.needs is None or i.needs in have]
    infos = resolve(names)
    for info in infos:
        if info.needs is not None and info.needs not in have:
            raise UsageError(f"metric {info.name!r} needs {NEEDS_OPTION[info.needs]}",
                             hint=f"pass {NEEDS_OPTION[info.needs]}, or drop {info.name} "
                             "from --metrics")
    return infos


def compute(stats: Statistics, infos: Sequence[MetricInfo],
            options: dict[str, object] | None = None) -> dict[str, float]:
    """Evaluate metrics on one input, passing each only the options it accepts (after
    :func:`prepare`)."""
    prepare(stats, infos)
    return {info.name: info.func(stats, **option_kwargs(info, options)) for info in infos}


def option_kwargs(info: MetricInfo, options: dict[str, object] | None) -> dict[str, object]:
    """The subset of ``options`` that metric ``info`` accepts."""
    options = options or {}
    return {k: options[k] for k in info.options if k in options}
