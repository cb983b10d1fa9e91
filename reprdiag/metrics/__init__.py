"""Metrics: small pure functions of an input's statistics, named in a registry.

Each metric takes a :class:`~reprdiag.statistics.Statistics` (the "compute" half of the
moments → metrics split) or, for convenience, a tensor of rows:

>>> import torch, reprdiag.metrics as M
>>> round(M.vne(torch.eye(8)), 6), sorted(M.METRICS)[:3]
(2.079442, ['alignment', 'alpha_req', 'alpha_req_r2'])
"""

from reprdiag.metrics import labels as _labels  # noqa: F401  (registers the label metrics)
from reprdiag.metrics import paired as _paired  # noqa: F401  (registers paired-view metrics)
from reprdiag.metrics.covariance import cov_offdiag, cov_offdiag_frac, std_normalized, vicreg_std
from reprdiag.metrics.entropy import er_entropy, vne, vne_normalized
from reprdiag.metrics.isotropy import avg_cosine, isoscore, partition_isotropy
from reprdiag.metrics.rank import (
    alpha_req,
    alpha_req_r2,
    effective_rank,
    numerical_rank,
    participation_ratio,
    rankme,
    stable_rank,
)
from reprdiag.metrics.registry import (
    METRICS,
    MetricInfo,
    compute,
    metric,
    prepare,
    register_fractions,
    resolve,
)
from reprdiag.metrics.uniformity import uniformity
from reprdiag.statistics import Statistics

register_fractions()  # rankme_frac, effective_rank_frac, ...: after the ranks are registered

__all__ = ["METRICS", "MetricInfo", "Statistics", "alpha_req", "alpha_req_r2", "avg_cosine",
           "compute", "cov_offdiag", "cov_offdiag_frac", "effective_rank", "er_entropy",
           "isoscore", "metric", "numerical_rank", "participation_ratio", "partition_isotropy",
           "prepare", "rankme", "resolve", "stable_rank", "std_normalized", "uniformity",
           "vicreg_std", "vne", "vne_normalized"]
