"""The metric registry: each metric's function plus what the CLI and reports need to know."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

import torch

from reprdiag.errors import UsageError, did_you_mean
from reprdiag.statistics import Statistics, TensorLike

Bounds = Callable[[int, int], tuple[float, float]]
#: What a metric function returns: a float, or a 0-d tensor (the spectral metrics, whose
#: graph back to the eigenvalues :attr:`Statistics.traced` statistics keep)
MetricValue = float | torch.Tensor


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
    func: Callable[..., MetricValue]
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
    #: a function of the moment matrices' spectra (eigenvalues or eigenvectors): the
    #: first-order jackknife updates those, so it gives no bias estimate for such a metric
    spectral: bool = False
    #: the metric whose value this one scales (``rankme`` for ``rankme_frac``), see
    #: :func:`register_fractions`
    derived_from: str | None = None


METRICS: dict[str, MetricInfo] = {}

#: The order of docs/design.md §3, used for tables and ``--list-metrics``.
DISPLAY_ORDER = ("vne", "vne_normalized", "effective_rank", "effective_rank_frac", "rankme",
                 "rankme_frac", "participation_ratio", "participation_ratio_frac",
                 "stable_rank", "stable_rank_frac", "numerical_rank", "numerical_rank_frac",
                 "alpha_req", "alpha_req_r2", "isoscore",
                 "partition_isotropy", "avg_cosine", "cov_offdiag", "cov_offdiag_frac",
                 "vicreg_std", "std_normalized", "er_entropy", "uniformity", "nc1",
                 "nc2_equinorm", "nc2_equiangularity", "lidar", "class_balance",
                 "class_erank_min", "class_erank_median", "alignment", "barlow_ondiag",
                 "barlow_offdiag", "pair_cka")


def metric(name: str, *, summary: str, range: str, direction: str, citation: str,
           bounds: Bounds, uses_sample: bool = False, discrete: bool = False,
           deleted: Callable[..., list[float]] | None = None, eigenvectors: bool = False,
           needs: str | None = None, spectral: bool = False
           ) -> Callable[[Callable[..., MetricValue]], Callable[..., MetricValue]]:
    """Register ``func(stats, **options) -> float`` as metric ``name``.

    The registered function also accepts a tensor or numpy array of rows in place of
    :class:`Statistics`, so ``reprdiag.metrics.vne(x)`` works on a tensor directly. It returns
    a float, except on :attr:`Statistics.traced` statistics, where it returns what ``func``
    does (a 0-d tensor keeping its autograd graph, for :mod:`reprdiag.uncertainty.linear`).
    """

    def register(func: Callable[..., MetricValue]) -> Callable[..., MetricValue]:
        params = inspect.signature(func).parameters
        options = tuple(p for p in params if p != "stats")

        @functools.wraps(func)
        def wrapper(x: Statistics | TensorLike, **kwargs: object) -> MetricValue:
            stats = x if isinstance(x, Statistics) else Statistics.from_tensor(x)
            value = func(stats, **kwargs)
            return value if stats.traced else float(value)

        METRICS[name] = MetricInfo(name, wrapper, summary, range, direction, citation, bounds,
                                   uses_sample, discrete, options, deleted,
                                   eigenvectors=eigenvectors, needs=needs, spectral=spectral)
        return wrapper

    return register


def resolve(names: Sequence[str] | None) -> list[MetricInfo]:
    """The registered metrics named (all of them for ``None``), in registry order."""
    if not names:
        rank = {n: i for i, n in enumerate(DISPLAY_ORDER)}
        return sorted(METRICS.values(), key=lambda m: rank.get(m.name, len(rank)))
    unknown = [n for n in names if n not in METRICS]
    if unknown:
        raise UsageError(f"unknown metric {unknown[0]!r}",
                         hint=did_you_mean(unknown[0], METRICS) + "valid: " + ", ".join(METRICS))
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
#: ``needs`` of a metric derived from another one's value (``rankme_frac``): computed when
#: named (``--metrics rankme_frac``), never by default, so a default report is unchanged
DERIVED = "derived"
#: Metrics that count dimensions; each also exists as ``<name>_frac`` = value / min(N, d).
SCALABLE = ("effective_rank", "rankme", "participation_ratio", "stable_rank", "numerical_rank")
FRAC_SUFFIX = "_frac"


def _fraction(base: MetricInfo) -> Callable[..., MetricValue]:
    """``base``'s value divided by min(N, d), as a metric function."""

    def fraction(x: Statistics | TensorLike, **options: object) -> MetricValue:
        stats = x if isinstance(x, Statistics) else Statistics.from_tensor(x)
        return base.func(stats, **options) / min(stats.n, stats.d)

    fraction.__name__ = fraction.__qualname__ = base.name + FRAC_SUFFIX
    fraction.__module__ = __name__
    fraction.__doc__ = f"""{base.name} as a fraction of the dimensions available.

    Formula: {base.name} / min(N, d), so one threshold reads the same at every width and
    sample size (the gate's ``collapse`` preset bounds ``effective_rank_frac`` ≥ 0.1). Range
    {base.range} divided by min(N, d), so about [0, 1]; {base.direction} is healthier as for
    {base.name}. Computed only when named (``--metrics {base.name}{FRAC_SUFFIX}``); a
    saved run without it still gives it to the gate, from {base.name}.
    Complexity: that of {base.name}, plus one division.
    Citation: {base.citation} (the scaling is reprdiag's).

    >>> x = torch.randn(50, 8, dtype=torch.float64)
    >>> M["{base.name}{FRAC_SUFFIX}"].func(x) == M["{base.name}"].func(x) / 8
    True
    """
    return fraction


def register_fractions(names: Sequence[str] = SCALABLE) -> None:
    """Register ``<name>_frac`` = value / min(N, d) for each metric in ``names`` (they must be
    registered already), as metrics computed only when asked for (``needs`` = ``derived``).

    >>> import torch
    >>> from reprdiag.metrics import METRICS as M
    >>> x = torch.eye(6, dtype=torch.float64)[:, :4]  # N = 6 > d = 4
    >>> M["rankme_frac"].func(x) == M["rankme"].func(x) / 4, round(M["rankme_frac"].func(x.T), 6)
    (True, 1.0)
    """
    for name in names:
        base = METRICS[name]
        frac = name + FRAC_SUFFIX

        def bounds(n: int, d: int, _base: MetricInfo = base) -> tuple[float, float]:
            lo, hi = _base.bounds(n, d)
            return lo / min(n, d), hi / min(n, d)

        METRICS[frac] = MetricInfo(
            frac, _fraction(base), f"{name} / min(N, d)", f"{base.range} / min(N, d)",
            base.direction, base.citation, bounds, uses_sample=base.uses_sample,
            options=base.options, needs=DERIVED, eigenvectors=base.eigenvectors,
            spectral=base.spectral, derived_from=name)


def for_input(names: Sequence[str] | None, available: Iterable[str] = ()) -> list[MetricInfo]:
    """The metrics to compute on an input whose extra statistics are ``available``: the named
    ones (a name needing what is not available is a :class:`UsageError`), or by default every
    metric whose needs are met."""
    have = set(available)
    if not names:
        return [i for i in resolve(None) if i.needs is None or i.needs in have]
    have.add(DERIVED)  # a derived metric is computed when named
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
