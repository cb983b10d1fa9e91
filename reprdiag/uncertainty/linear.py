"""Linearized deleted values: a spectral metric's jackknife deletions without their spectra.

The first-order jackknife (:mod:`reprdiag.uncertainty.estimator`) moves each eigenvalue of a
moment matrix A by v_kᵀΔ_b v_k when block b is deleted (Δ_b = A₍b₎ − A; see
:func:`reprdiag.spectrum.first_order`), and a metric θ of that spectrum then moves, to the
same first order, by

    θ₍b₎ − θ ≈ Σ_k (∂θ/∂λ_k)·v_kᵀΔ_b v_k = ⟨Δ_b, V·diag(∂θ/∂λ)·Vᵀ⟩_F

(the infinitesimal jackknife of the metric; the difference from evaluating θ on the updated
spectrum is second order in the block's share, as the update's own error is). The gradient
comes from autograd through the metric's own code (:attr:`~reprdiag.statistics.Statistics.
traced` statistics, whose eigenvalues require grad), so no derivative is written by hand.
The weight matrix G = V·diag(∂θ/∂λ)·Vᵀ costs one d×d×d product per metric and spectrum,
once; each block then costs one O(d²) inner product, against an O(d³) product per block and
spectrum for the updated spectrum itself.

XᵀX is a sum over the rows, not a mean like the covariance and the autocorrelation: a
deletion scales it by (N − m_b)/N, a change of 1/K that is not small (RankMe's SE came out
5 % low at K = 20 linearized in XᵀX itself). Its metrics are linearized in the per-row
matrix XᵀX/N instead, which is exact to first order for a metric invariant to the scale of
the spectrum (RankMe: Σ_k μ_k·∂θ/∂μ_k = 0, checked); one that is not is evaluated per block.

Only metrics of spectra the blocks do not update anyway are linearized: the covariance
spectrum λ is updated per block for the report's spectrum band, so its metrics are evaluated
on the update (O(d) each). A metric is left to the per-block evaluation when it reads the
covariance spectrum, returns no graph (a float: opaque to autograd), or has a non-finite
gradient (√λ at λ = 0 in RankMe on rank-deficient data, where the value is not
differentiable).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch

from reprdiag.metrics import MetricInfo, Statistics
from reprdiag.metrics.registry import option_kwargs

#: The spectra whose metrics are linearized (:mod:`reprdiag.spectrum` names); the covariance
#: spectrum is updated per block anyway (module docstring).
LINEARIZED_SPECTRA = ("autocorrelation", "raw")
_TRACED = ("covariance", *LINEARIZED_SPECTRA)
#: Spectra of sums over the rows (module docstring), linearized in the matrix divided by N.
SUMS = ("raw",)
#: |Σ_k μ_k·∂θ/∂μ_k| / Σ_k |μ_k·∂θ/∂μ_k| below which θ counts as scale-invariant
SCALE_FREE = 1e-9


def per_row_dot(stats: Statistics, name: str, weights: torch.Tensor) -> float:
    """⟨A, W⟩ for A the moment matrix of spectrum ``name``, divided by N when it is a sum
    (:data:`SUMS`): O(d²), without forming A (:meth:`~reprdiag.spectrum.Spectra.dot`)."""
    value = stats.spectra.dot(name, weights)
    return value / stats.n if name in SUMS else value


@dataclass(frozen=True)
class Linear:
    """A metric's value θ and its weight matrices G_s = V_s·diag(∂θ/∂λ_s)·V_sᵀ, by spectrum
    name s (float64 d×d, on the moments' device; λ_s the eigenvalues of the matrices of
    :func:`per_row_dot`)."""

    value: float
    weights: Mapping[str, torch.Tensor]
    #: ⟨A_s, G_s⟩ of the full data, by spectrum name
    base: Mapping[str, float]

    def deleted(self, stats: Statistics) -> float:
        """θ₍b₎ ≈ θ + Σ_s (⟨A_s₍b₎, G_s⟩ − ⟨A_s, G_s⟩) for the deleted statistics ``stats``
        (A_s the :func:`per_row_dot` matrices; the full data's those the weights were made
        from). Complexity O(d²) per spectrum, no d×d matrix formed."""
        return self.value + sum(per_row_dot(stats, s, g) - self.base[s]
                                for s, g in self.weights.items())


def traced(stats: Statistics) -> tuple[Statistics, dict[str, torch.Tensor]]:
    """A view of ``stats`` (moments and spectra; no sample) whose three spectra's eigenvalues
    are functions of fresh leaf tensors that require grad (the eigenvalues of the matrices
    of :func:`per_row_dot`), with :attr:`Statistics.traced` set, and those leaves by spectrum name.

    >>> from reprdiag.metrics import vne
    >>> view, leaves = traced(Statistics.from_tensor(torch.eye(3, dtype=torch.float64)))
    >>> value = vne(view)
    >>> value.requires_grad, round(float(value.detach()), 6)
    (True, 1.098612)
    """
    view = Statistics(stats.moments, None, stats.precision)
    view.traced = True
    scale = {name: stats.n if name in SUMS else 1 for name in _TRACED}
    leaves = {name: (getattr(stats.spectra, name).values.detach() / scale[name])
              .requires_grad_(True) for name in _TRACED}
    view.spectra = stats.spectra.with_values({n: leaves[n] * scale[n] for n in _TRACED})
    return view, leaves


def gradients(value: torch.Tensor | float, leaves: Mapping[str, torch.Tensor]
              ) -> dict[str, torch.Tensor] | None:
    """∂value/∂leaf for the leaves ``value`` depends on, or ``None`` when it cannot be
    linearized: no graph, a non-finite gradient, a dependence on the covariance, or on a
    sum's spectrum (:data:`SUMS`) that is not invariant to its scale."""
    if not isinstance(value, torch.Tensor) or not value.requires_grad:
        return None
    names = list(leaves)
    found = torch.autograd.grad(value, [leaves[n] for n in names], allow_unused=True,
                                retain_graph=True)  # the leaves' scaling is shared
    grads = {n: g for n, g in zip(names, found, strict=True) if g is not None}
    if "covariance" in grads or not grads \
            or not all(bool(torch.isfinite(g).all()) for g in grads.values()):
        return None
    for name in SUMS:
        if name in grads:
            terms = grads[name] * leaves[name].detach()
            if float(terms.sum().abs()) > SCALE_FREE * float(terms.abs().sum()):
                return None
    return grads


def linearize(stats: Statistics, infos: Sequence[MetricInfo],
              options: dict[str, object] | None = None) -> dict[str, Linear]:
    """The metrics of ``infos`` that can be linearized (module docstring), by name, with
    their weight matrices from the full data's statistics ``stats`` (spectra computed with
    vectors). Complexity: one backward pass over O(d) values and one O(d³) product per
    metric and spectrum it reads.
    """
    view, leaves = traced(stats)
    out = {}
    for info in infos:
        value = info.func(view, **option_kwargs(info, options))
        grads = gradients(value, leaves)
        if grads is None or not math.isfinite(float(value.detach())):
            continue
        weights = {}
        for name, g in grads.items():
            v = getattr(stats.spectra, name).vectors.to(torch.float64)
            weights[name] = ((v * g.to(v.device)) @ v.T).to(stats.spectra.matrix(name).device)
        base = {name: per_row_dot(stats, name, g) for name, g in weights.items()}
        out[info.name] = Linear(float(value.detach()), weights, base)
    return out


__all__ = ["LINEARIZED_SPECTRA", "SCALE_FREE", "SUMS", "Linear", "gradients", "linearize",
           "per_row_dot", "traced"]
