"""What users do today, for comparison: in-memory numpy float64 and the papers' recipes.

Each baseline loads the whole matrix into memory (that is the point of comparing), then
computes the same quantities as reprdiag; its values are returned so the table can show they
agree. None of this code is used by reprdiag itself.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from _data import load_array


def _entropy(p: np.ndarray) -> float:
    p = p[p > 0]
    return float(-(p * np.log(p)).sum())


def numpy_float64(path: Path) -> dict[str, float]:
    """np.cov + np.linalg.eigvalsh in float64 and the docs/design.md §3 spectral formulas."""
    x = load_array(path).astype(np.float64)
    n, d = x.shape
    lam = np.clip(np.linalg.eigvalsh(np.cov(x, rowvar=False))[::-1], 0, None)
    sig = np.sqrt(np.clip(np.linalg.eigvalsh(x.T @ x)[::-1], 0, None))
    z = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    del x
    eta = np.clip(np.linalg.eigvalsh(z.T @ z / n)[::-1], 0, None)
    s = np.sqrt(lam)
    pr = lam.sum() ** 2 / (lam**2).sum()
    zsum = z.sum(axis=0)
    return {"vne": _entropy(eta / eta.sum()), "effective_rank": math.exp(_entropy(s / s.sum())),
            "rankme": math.exp(_entropy(sig / sig.sum() + 1e-7)), "participation_ratio": pr,
            "stable_rank": lam.sum() / lam[0], "isoscore": (pr - 1) / (d - 1),
            "avg_cosine": float((zsum @ zsum - n) / (n * (n - 1)))}


def vne_svdvals(path: Path) -> dict[str, float]:
    """Kim et al.'s get_vne: singular values of the full row-normalized matrix / √N."""
    h = torch.from_numpy(load_array(path))
    z = torch.nn.functional.normalize(h, dim=1)
    eig = torch.linalg.svdvals(z / math.sqrt(z.shape[0])) ** 2
    return {"vne": float(-(eig * torch.log(eig)).nansum())}


def _isoscore_reimplemented(points: np.ndarray) -> float:
    """IsoScore 2.0.1's published algorithm (Rudman et al. 2022), step by step."""
    pts = torch.tensor(points)
    n = torch.tensor(pts.shape[1])
    pcs = torch.linalg.svdvals(torch.cov(pts.T))
    pcs_norm = pcs * torch.sqrt(n) / torch.linalg.vector_norm(pcs)
    defect = torch.linalg.vector_norm(pcs_norm - 1) / torch.sqrt(2 * (n - torch.sqrt(n)))
    return float(((n - defect**2 * (n - torch.sqrt(n))) ** 2 - n) / (n * (n - 1)))


def isoscore_package(path: Path) -> dict[str, float]:
    """IsoScore via the ``isoscore`` package (pip), else its algorithm reimplemented here."""
    x = load_array(path)
    try:
        from IsoScore.IsoScore import IsoScore
    except ImportError:
        return {"isoscore": _isoscore_reimplemented(x)}
    return {"isoscore": float(IsoScore(x))}


def alpha_full_pca(path: Path) -> dict[str, float]:
    """α-ReQ from a full PCA: singular values of the centred matrix, then the same fit."""
    from reprdiag.metrics.rank import power_law_fit

    x = torch.from_numpy(load_array(path))
    s = torch.linalg.svdvals(x - x.mean(dim=0))
    lam = (s.double() ** 2) / (x.shape[0] - 1)
    return {"alpha_req": power_law_fit(lam, (11, 100))[0]}


def isoscore_available() -> bool:
    try:
        import IsoScore.IsoScore  # noqa: F401
    except ImportError:
        return False
    return True


# name -> (function, bytes of peak memory per matrix element, what it is)
BASELINES: dict[str, tuple[Callable[[Path], dict[str, float]], float, str]] = {
    "numpy-f64": (numpy_float64, 8 * 2.2, "np.cov + eigvalsh, float64, in memory"),
    "vne-svdvals": (vne_svdvals, 4 * 4.5, "torch.linalg.svdvals of full normalized X"),
    "isoscore-pkg": (isoscore_package, 4 * 2.5, "isoscore package (torch.cov + svdvals)"),
    "alpha-pca": (alpha_full_pca, 4 * 4.5, "full PCA: svdvals of centred X"),
}
