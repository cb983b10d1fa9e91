"""Uncertainty of every metric: the delete-a-block jackknife (``--uncertainty``).

- :mod:`reprdiag.uncertainty.deleted`: the statistics of every input without one block (the
  blocks are those of :class:`reprdiag.stats.blocked.BlockedMoments`, kept by the one pass);
- :mod:`reprdiag.uncertainty.estimator`: the metrics recomputed on them, and the weighted
  delete-m_b jackknife's SE, bias and t intervals;
- :mod:`reprdiag.uncertainty.linear`: on the first-order path, the metrics of the
  autocorrelation's and XᵀX's spectra linearized (O(d²) per block, not O(d³)).
"""

from reprdiag.uncertainty.deleted import (
    check_rows,
    deleted_statistic,
    deleted_statistics,
    without_block,
)
from reprdiag.uncertainty.estimator import (
    DELETED_SPECTRA,
    LEVEL,
    METHOD,
    BlockMap,
    JackknifeResult,
    deleted_spectra_path,
    estimate,
    jackknife,
    serial_map,
    t_quantile,
    t_two_sided_cdf,
    threaded_map,
)

__all__ = [
    "DELETED_SPECTRA",
    "LEVEL",
    "METHOD",
    "BlockMap",
    "JackknifeResult",
    "check_rows",
    "deleted_spectra_path",
    "deleted_statistic",
    "deleted_statistics",
    "estimate",
    "jackknife",
    "serial_map",
    "t_quantile",
    "t_two_sided_cdf",
    "threaded_map",
    "without_block",
]
