"""Partition isotropy's first-order deletions: the rotation of its probe directions."""

from __future__ import annotations

import numpy as np
import torch

from reprdiag.metrics import pairwise
from reprdiag.metrics.isotropy import _rotation
from reprdiag.statistics import Statistics


def test_rotation_forms_only_the_graded_columns_of_the_perturbation() -> None:
    """R_jk = A_jk/(λ_k − λ_j), A = Vᵀ(M_b − M)V, for the probes whose gradient was kept;
    against A formed whole in numpy float64 (M_b − M is minus the block's XᵀX)."""
    g = torch.Generator().manual_seed(7)
    x = torch.randn(600, 6, dtype=torch.float64, generator=g) * torch.arange(1, 7) ** -0.5 + 0.2
    labels = torch.randint(0, 3, (600,), generator=g)
    full = Statistics.from_tensor(x)
    full.sample_groups = (labels, 3)
    part = Statistics.from_tensor(x[labels != 1])
    part.base, part.block = full, 1
    raw = full.spectra.raw
    sums = pairwise.partition_sums(x, raw.vectors, raw.vectors, labels, 3, extremes=2)
    got = _rotation(part, sums).numpy()
    v, lam, xb = raw.vectors.numpy(), raw.values.numpy(), x[labels == 1].numpy()
    a = v.T @ -(xb.T @ xb) @ v
    gap = lam[None, :] - lam[:, None]
    want = np.where(np.abs(gap) > 2 * np.abs(a), a / np.where(gap == 0, 1.0, gap), 0.0)
    graded = sums.graded.view(2, 6).any(dim=0).numpy()
    assert 0 < graded.sum() < 6
    np.testing.assert_allclose(got[:, graded], want[:, graded], rtol=1e-9, atol=1e-12)
    assert not got[:, ~graded].any()
