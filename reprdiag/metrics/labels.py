"""Label-aware metrics: neural collapse, LiDAR, class balance and per-class rank.

Each is a pure function of the total moments (:class:`~reprdiag.stats.StreamingMoments`) and the
per-class counts and sums (:class:`~reprdiag.stats.classes.ClassMoments`), all streamed in the same
pass, so N is unbounded. Notation: N rows in C classes, n_c rows in class c, μ_c its mean, μ_G
the mean of all rows, T = Σᵢ(xᵢ−μ_G)(xᵢ−μ_G)ᵀ the total scatter. Then

- Σ_W = (1/N) Σ_c Σ_{i∈c} (xᵢ−μ_c)(xᵢ−μ_c)ᵀ = (T − Σ_c n_c (μ_c−μ_G)(μ_c−μ_G)ᵀ) / N,
- Σ_B = (1/C) Σ_c (μ_c−μ_G)(μ_c−μ_G)ᵀ (classes weighted equally, as in Papyan et al.).
"""

from __future__ import annotations

import math

import numpy as np
import torch

from reprdiag.errors import InputError, UsageError
from reprdiag.metrics.registry import metric
from reprdiag.statistics import Statistics
from reprdiag.stats import StreamingMoments
from reprdiag.stats.classes import ClassMoments, check_labels

_EPS64 = float(torch.finfo(torch.float64).eps)
#: LiDAR's regularisation of Σ_w (δ) and the entropy offset added to p_i (ε); see :func:`lidar`
LIDAR_DELTA = 1e-6
LIDAR_EPS = 1e-7


def _need_classes(classes: ClassMoments, at_least: int = 2) -> None:
    if classes.classes < at_least:
        raise InputError(f"labels name {classes.classes} class(es); this metric needs at "
                         f"least {at_least}", hint="pass labels with several classes")


def _scatter(moments: StreamingMoments) -> torch.Tensor:
    """T, the total scatter about the global mean (d×d, float64)."""
    ybar = moments.sum_y / moments.n
    t = moments.sum_yy - moments.n * torch.outer(ybar, ybar)
    return (t + t.T) / 2


def class_offsets(moments: StreamingMoments, classes: ClassMoments,
                  centre: torch.Tensor | None = None) -> torch.Tensor:
    """μ_c − centre per class (C × d); ``centre`` defaults to μ_G, the mean of all rows."""
    centre = moments.mean if centre is None else centre
    return classes.means() - centre


def within_class(moments: StreamingMoments, classes: ClassMoments) -> torch.Tensor:
    """Σ_W, the pooled within-class covariance (1/N normalisation, d×d)."""
    offsets = class_offsets(moments, classes)
    between = offsets.T @ (offsets * classes.counts.unsqueeze(1))
    return (_scatter(moments) - between) / moments.n


def nc1(moments: StreamingMoments, classes: ClassMoments) -> float:
    """NC1, within-class variability collapse: (1/C) tr(Σ_W Σ_B^†).

    Σ_B^† keeps the eigenvalues of Σ_B above d·eps·λ_max (float64 eps). Range [0, ∞); 0 when
    every row equals its class mean; lower = tighter classes relative to their spread.
    Complexity: O(C·d²) + one O(d³) eigh. Citation: Papyan, Han & Donoho, "Prevalence of neural
    collapse during the terminal phase of deep learning training", PNAS 2020 (NC1, Fig. 6).
    """
    _need_classes(classes)
    offsets = class_offsets(moments, classes)
    sigma_b = offsets.T @ offsets / classes.classes
    lam, vec = torch.linalg.eigh(sigma_b)
    keep = lam > moments.d * _EPS64 * max(float(lam.max()), 0.0)
    if not bool(keep.any()):
        return math.inf
    pinv = (vec[:, keep] / lam[keep]) @ vec[:, keep].T
    return float(torch.trace(within_class(moments, classes) @ pinv)) / classes.classes


def lidar(moments: StreamingMoments, classes: ClassMoments, delta: float = LIDAR_DELTA,
          eps: float = LIDAR_EPS) -> float:
    """LiDAR: the smooth rank of the LDA matrix Σ_w^{-1/2} Σ_b Σ_w^{-1/2}.

    Σ_b = (1/C) Σ_c (μ_c − μ)(μ_c − μ)ᵀ with μ the mean of the class means, Σ_w = Σ_W + δ·I;
    λ the eigenvalues of the LDA matrix (clamped at 0), p_i = λ_i/Σλ + ε, LiDAR = exp(−Σ p ln p).
    δ = 1e-6 and ε = 1e-7 as in reptrix's ``get_lidar``; δ is absolute, so LiDAR changes when
    the data's scale brings Σ_W's eigenvalues near δ. With classes of unequal size Σ_W weights
    rows equally (the paper's E_x E_{x̃|x} weights classes equally: equal for balanced labels).
    reptrix sums instead of averaging (its Σ_b is C·ours and its Σ_w is the number of rows per
    class times ours), which only moves where δ and ε bite: on the digits MLP's relu3 layer
    (sample_data, balanced to 174 rows per class) ours gives 7.1584658 and reptrix's arithmetic
    7.1584672; the same data × 1e-3 gives 6.5385 (δ is then no longer small).
    Range about [1, min(C−1, d)] (ε lifts the floor); higher = more linearly separable
    directions. Complexity: O(C·d²) + two O(d³) eigendecompositions.
    Citation: Thilak et al., "LiDAR: Sensing Linear Probing Performance in Joint Embedding SSL
    Architectures", ICLR 2024.
    """
    _need_classes(classes)
    means = classes.means()
    offsets = means - means.mean(dim=0)
    sigma_b = offsets.T @ offsets / classes.classes
    sigma_w = within_class(moments, classes) + delta * torch.eye(moments.d, dtype=torch.float64,
                                                                  device=sigma_b.device)
    lam_w, vec_w = torch.linalg.eigh(sigma_w)
    whiten = vec_w / lam_w.clamp_min(delta).sqrt()
    lam = torch.linalg.eigvalsh(whiten.T @ sigma_b @ whiten).clamp_min(0)
    if float(lam.sum()) <= 0:
        return 1.0
    p = lam / lam.sum() + eps
    return float(torch.exp(-(p * p.log()).sum()))


def class_balance(classes: ClassMoments) -> float:
    """Normalized entropy of the class proportions, H(n_c/N) / ln C.

    Range [0, 1]; 1 when every class has as many rows. A property of the labels, not of the
    representation. Complexity O(C).
    """
    _need_classes(classes)
    p = classes.proportions()
    p = p[p > 0]
    return float(-(p * np.log(p)).sum() / math.log(classes.classes))


def nc2_equinorm(moments: StreamingMoments, classes: ClassMoments) -> float:
    """NC2 equinorm: coefficient of variation std_c/avg_c of ‖μ_c − μ_G‖.

    Range [0, ∞); 0 when every class mean lies equally far from the global mean. Complexity
    O(C·d). Citation: Papyan, Han & Donoho, PNAS 2020 (Fig. 2).
    """
    _need_classes(classes)
    norms = torch.linalg.vector_norm(class_offsets(moments, classes), dim=1)
    mean = float(norms.mean())
    return float(norms.std(unbiased=True)) / mean if mean > 0 else math.inf


def nc2_equiangularity(moments: StreamingMoments, classes: ClassMoments) -> float:
    """NC2 equiangularity: std over pairs c ≠ c' of cos∠(μ_c − μ_G, μ_c' − μ_G).

    Range [0, 1]; 0 when all pairs of class means meet at one angle (a simplex ETF meets at
    −1/(C−1)). Needs C ≥ 3. Complexity O(C²·d). Citation: Papyan, Han & Donoho, PNAS 2020
    (Fig. 3).
    """
    _need_classes(classes, at_least=3)
    offsets = class_offsets(moments, classes)
    unit = offsets / torch.linalg.vector_norm(offsets, dim=1, keepdim=True).clamp_min(1e-300)
    cos = unit @ unit.T
    upper = torch.triu_indices(cos.shape[0], cos.shape[0], offset=1)
    return float(cos[upper[0], upper[1]].std(unbiased=True))


def class_effective_ranks(classes: ClassMoments) -> np.ndarray:
    """Roy–Vetterli effective rank of each class's covariance (classes with ≥ 2 rows).

    Needs per-class second moments. Complexity O(C·d³).
    """
    ranks = []
    for c in range(classes.classes):
        if classes.counts[c] < 2:
            continue
        s = torch.linalg.eigvalsh(classes.class_covariance(c)).clamp_min(0).sqrt()
        if float(s.sum()) <= 0:
            ranks.append(1.0)
            continue
        p = s / s.sum()
        p = p[p > 0]
        ranks.append(float(torch.exp(-(p * p.log()).sum())))
    if not ranks:
        raise InputError("no class has two rows", hint="per-class rank needs more rows per class")
    return np.asarray(ranks)


# -- registered metrics: computed when ``--labels`` streamed class statistics -----------------

def labelled(x: torch.Tensor, labels: torch.Tensor) -> Statistics:
    """:class:`Statistics` of in-memory rows with their class ids (float64), for calling the
    label metrics from a notebook: ``M.nc1(labelled(x, y))``."""
    x = torch.as_tensor(x).to(torch.float64)
    stats = Statistics.from_tensor(x)
    classes = ClassMoments(x.shape[1], second_moments=True)
    classes.update(x, check_labels(torch.as_tensor(labels), x.shape[0], "labels"))
    stats.extras["classes"] = classes
    return stats


def _example() -> Statistics:
    """Three tight classes on the axes, each spread ±0.1 along every axis (for the doctests)."""
    centres = torch.eye(3, dtype=torch.float64) * 4
    offsets = torch.cat([torch.eye(3), -torch.eye(3)]).double() * 0.1
    x = (centres[:, None, :] + offsets[None]).reshape(-1, 3)
    return labelled(x, torch.arange(3).repeat_interleave(6))

def _classes(stats: Statistics) -> ClassMoments:
    classes = stats.extras.get("classes")
    if classes is None:
        raise UsageError("label metrics need labels", hint="pass --labels KEY or PATH[:KEY]")
    return classes


def _class_ranks(stats: Statistics) -> np.ndarray:
    """Every class's effective rank, computed once per statistics (``class_erank_min`` and
    ``_median`` both read them: C eigendecompositions, not 2·C)."""
    cached = stats.shared.get("class_ranks")
    if cached is None:
        classes = _classes(stats)
        # NaN: too many classes × d² to keep (a warning says so)
        cached = np.array([math.nan]) if classes.squares is None else \
            class_effective_ranks(classes)
        stats.shared["class_ranks"] = cached
    return cached


_CITE_NC = "Papyan, Han & Donoho, PNAS 2020"


@metric("nc1", summary="(1/C) tr(Σ_W Σ_B^†): within- vs between-class spread", range="[0, ∞)",
        direction="lower", citation=_CITE_NC, bounds=lambda n, d: (0.0, math.inf),
        needs="classes")
def nc1_metric(stats: Statistics) -> float:
    """NC1 of the labelled rows; see :func:`nc1` (formula, range). Complexity O(C·d²) +
    O(d³) from the streamed class sums.

    >>> round(nc1_metric(_example()), 6)  # σ²·tr(Σ_B^†)/C = (0.02/6)(2·3/16)/3
    0.000417
    """
    return nc1(stats.moments, _classes(stats))


@metric("nc2_equinorm", summary="std/mean of ‖μ_c − μ_G‖ over classes", range="[0, ∞)",
        direction="lower", citation=_CITE_NC, bounds=lambda n, d: (0.0, math.inf),
        needs="classes")
def nc2_equinorm_metric(stats: Statistics) -> float:
    """NC2 equinorm; see :func:`nc2_equinorm`. Complexity O(C·d).

    >>> round(nc2_equinorm_metric(_example()), 12)
    0.0
    """
    return nc2_equinorm(stats.moments, _classes(stats))


@metric("nc2_equiangularity", summary="std of cos∠ between centred class means", range="[0, 1]",
        direction="lower", citation=_CITE_NC, bounds=lambda n, d: (0.0, 1.0), needs="classes")
def nc2_equiangularity_metric(stats: Statistics) -> float:
    """NC2 equiangularity; see :func:`nc2_equiangularity`. Complexity O(C²·d).

    >>> round(nc2_equiangularity_metric(_example()), 12)
    0.0
    """
    return nc2_equiangularity(stats.moments, _classes(stats))


@metric("lidar", summary="smooth rank of the LDA matrix Σ_w^{-1/2} Σ_b Σ_w^{-1/2}",
        range="[1, min(C−1, d)]", direction="higher", citation="Thilak et al., ICLR 2024",
        bounds=lambda n, d: (1.0 - 1e-6, d * 1.0001), needs="classes")
def lidar_metric(stats: Statistics) -> float:
    """LiDAR with the labels as classes; see :func:`lidar`. Complexity O(C·d²) + O(d³).

    >>> round(lidar_metric(_example()), 3)  # two between-class directions, equally spread
    2.0
    """
    return lidar(stats.moments, _classes(stats))


@metric("class_balance", summary="H(n_c/N) / ln C, 1 = balanced labels", range="[0, 1]",
        direction="neutral", citation="—", bounds=lambda n, d: (0.0, 1.0), needs="classes")
def class_balance_metric(stats: Statistics) -> float:
    """Class balance of the labels; see :func:`class_balance`. Complexity O(C).

    >>> round(class_balance_metric(_example()), 12)
    1.0
    """
    return class_balance(_classes(stats))


@metric("class_erank_min", summary="smallest per-class effective rank (Roy–Vetterli)",
        range="[1, d]", direction="higher", citation="Roy & Vetterli, EUSIPCO 2007",
        bounds=lambda n, d: (1.0, d * 1.0001), needs="classes")
def class_erank_min(stats: Statistics) -> float:
    """min over classes of the effective rank of the class covariance (classes with ≥ 2 rows).
    Complexity O(C·d³). NaN when C·d² was too large to keep per-class second moments.

    >>> round(class_erank_min(_example()), 6)  # each class spreads along three axes equally
    3.0
    """
    return float(np.min(_class_ranks(stats)))


@metric("class_erank_median", summary="median per-class effective rank (Roy–Vetterli)",
        range="[1, d]", direction="higher", citation="Roy & Vetterli, EUSIPCO 2007",
        bounds=lambda n, d: (1.0, d * 1.0001), needs="classes")
def class_erank_median(stats: Statistics) -> float:
    """Median over classes of the effective rank of the class covariance; see
    :func:`class_erank_min`. Complexity O(C·d³).

    >>> round(class_erank_median(_example()), 6)
    3.0
    """
    return float(np.median(_class_ranks(stats)))
