"""Spectra: sorted eigenvalues of the moment matrices, and which solver produced them.

Three spectra describe an input (docs/design.md §3): the covariance eigenvalues λ, the
autocorrelation eigenvalues η of the normalized rows, and the singular values σ of raw X.
Each is computed once, in float64, by ``torch.linalg.eigvalsh`` on the d×d moment matrix,
or, when every row is at hand and N ≲ 0.68·d (:func:`gram_is_cheaper`), on the N×N Gram
matrix, which has the same non-zero eigenvalues for O(N²·d + N³) instead of O(d³). Each
spectrum keeps min(N, d) values (the number of singular values of an N×d matrix),
descending. Eigenvalues below the solver's own error bound, size·eps(float64)·λ_max, are set
to 0: they are rounding, and left in they would turn into spurious √λ ~ 1e-8·σ_max
singular values (effective rank, RankMe).

Each spectrum also carries its error floor (:attr:`Spectrum.floor`): the solver's bound plus
the rounding of the streamed products it was built from, u·c(n)·trace (see
:mod:`reprdiag.precision`; u the unit roundoff of the work dtype, n the longest chunk).
Eigenvalues at or below the floor are not resolved by the precision the spectrum was computed
in: ``numerical_rank`` counts the ones above it, and the float32 path reports the metrics
that depend on the others.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, replace
from functools import cached_property

import torch

from reprdiag.device import serial_map, threaded_map, torch_threads
from reprdiag.precision import Precision
from reprdiag.stats import StreamingMoments, normalize_rows

_F64 = torch.float64
#: The moment matrix behind each spectrum: the name of its :class:`StreamingMoments` method.
MOMENT_MATRIX = {"covariance": "covariance", "raw": "second_moment",
                 "autocorrelation": "autocorrelation"}


@dataclass(frozen=True)
class Spectrum:
    """Eigenvalues (descending, float64, CPU) plus the solver path that produced them.

    >>> s = eigen_spectrum(torch.diag(torch.tensor([1.0, 3.0, 2.0], dtype=torch.float64)))
    >>> s.values.tolist(), s.solver
    ([3.0, 2.0, 1.0], 'eigvalsh d×d (3×3, float64, cpu)')
    """

    values: torch.Tensor
    solver: str
    vectors: torch.Tensor | None = None  # columns, matching ``values``; only when asked
    #: Absolute error floor of ``values``: eigenvalues at or below it are not resolved.
    floor: float = 0.0

    @property
    def resolved(self) -> torch.Tensor:
        """Which eigenvalues lie above the floor (boolean, matching ``values``)."""
        return self.values > self.floor


def _sorted(values: torch.Tensor, vectors: torch.Tensor | None, keep: int | None,
            solver: str, accumulated: float = 0.0) -> Spectrum:
    floor = values.abs().max() * values.numel() * torch.finfo(_F64).eps
    values = torch.where(values > floor, values, torch.zeros_like(values))
    order = torch.argsort(values, descending=True)
    if keep is not None:
        order = order[:keep]
    vecs = None if vectors is None else vectors[:, order].cpu()
    return Spectrum(values[order].cpu(), solver, vecs, float(floor) + accumulated)


#: CPU eigensolves of matrices up to this size run on one thread (see :func:`solve_threads`).
SERIAL_SOLVE_MAX = 2048


@contextmanager
def solve_threads(matrix: torch.Tensor) -> Iterator[None]:
    """Run a CPU eigensolve of ``matrix`` on one thread when it is at most
    :data:`SERIAL_SOLVE_MAX` wide, restoring torch's thread count afterwards.

    LAPACK's symmetric eigensolvers (tridiagonalization) open one parallel region per column,
    and each waits at a barrier for every thread: when another process holds a core, each
    barrier costs a scheduler time slice. Measured with torch 2.13 (MKL) on 2 cores at load
    average 6–10: eigvalsh of 384² 0.02–0.05 s on one thread against 1–11 s on two, 2048²
    2.4–3.0 s against 6.6–15 s (eigh 9 s against 41–103 s). Idle, two threads gain little at
    these sizes. Larger matrices keep torch's thread count.
    """
    if matrix.device.type != "cpu" or matrix.shape[-1] > SERIAL_SOLVE_MAX \
            or torch.get_num_threads() == 1:
        yield
        return
    with torch_threads(1):
        yield


def _eig(matrix: torch.Tensor, vectors: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
    with solve_threads(matrix):
        if vectors:
            return torch.linalg.eigh(matrix)
        return torch.linalg.eigvalsh(matrix), None


def eigen_spectrum(matrix: torch.Tensor, keep: int | None = None,
                   vectors: bool = False, accumulated: float = 0.0) -> Spectrum:
    """Eigen-decompose a symmetric matrix in float64: ``eigvalsh`` (or ``eigh`` for vectors).

    ``accumulated`` is the rounding error already in ``matrix`` (an absolute bound on its
    spectral norm), added to the solver's own to give :attr:`Spectrum.floor`.
    """
    m = matrix.to(_F64)
    what = "eigh" if vectors else "eigvalsh"
    solver = f"{what} d×d ({m.shape[0]}×{m.shape[1]}, float64, {m.device.type})"
    return _sorted(*_eig(m, vectors), keep, solver, accumulated)


def first_order(base: Spectrum, matrix: torch.Tensor, base_matrix: torch.Tensor,
                keep: int | None = None, accumulated: float = 0.0) -> Spectrum:
    """Eigenvalues of ``matrix`` to first order in ``matrix − base_matrix``, from ``base``, the
    eigen-decomposition (with vectors) of ``base_matrix``: λ_k + v_kᵀ(matrix − base_matrix)v_k
    (Rayleigh–Schrödinger; the jackknife's deleted spectra, where the difference is one
    block's share of the data). The vectors stay those of ``base`` (zeroth order).

    The error of each value is second order, O(‖Δ‖²/gap); a symmetric function of the whole
    spectrum (every metric here) has second-order error O(‖Δ‖²) without the gap. Complexity:
    one d×d×k product, O(d²k), against O(d³) with a larger constant for a new ``eigvalsh``.

    >>> a = torch.diag(torch.tensor([3.0, 1.0], dtype=torch.float64))
    >>> b = a + 1e-3 * torch.tensor([[1.0, 2.0], [2.0, -1.0]], dtype=torch.float64)
    >>> first_order(eigen_spectrum(a, vectors=True), b, a).values.tolist()
    [3.001, 0.999]
    """
    if base.vectors is None:
        raise ValueError("first_order needs the base spectrum's eigenvectors")
    v = base.vectors.to(device=matrix.device, dtype=_F64)
    moved = (matrix - base_matrix).to(_F64) @ v
    shift = (moved * v).sum(dim=0)
    values = base.values.to(device=matrix.device, dtype=_F64) + shift
    return _sorted(values, v, keep, f"first-order update of {base.solver}", accumulated)


def gram_spectrum(rows: torch.Tensor, scale: float, vectors: bool = False) -> Spectrum:
    """Eigenvalues of ``rowsᵀ·rows·scale`` from the N×N Gram matrix ``rows·rowsᵀ·scale``.

    With ``vectors`` the d-dimensional eigenvectors are recovered as ``rowsᵀu/‖rowsᵀu‖``.
    """
    r = rows.to(_F64)
    gram = (r @ r.T) * scale
    solver = f"gram N×N ({r.shape[0]}×{r.shape[0]}, float64, {r.device.type})"
    if not vectors:
        return _sorted(_eig(gram, False)[0], None, None, solver)
    vals, u = _eig(gram, True)
    v = r.T @ u
    v = v / torch.linalg.vector_norm(v, dim=0).clamp_min(1e-300)
    return _sorted(vals, v, None, solver)


def gram_is_cheaper(n: int, d: int) -> bool:
    """Whether eigenvalues via the N×N Gram matrix cost fewer flops than via the d×d moments.

    The moments are built anyway, so the d×d route costs one symmetric eigensolve,
    about (4/3)·d³ flops; the Gram route forms R·Rᵀ (2·N²·d) and solves N×N ((4/3)·N³).
    The Gram route wins when N ≲ 0.68·d (not merely N < d).

    >>> gram_is_cheaper(500, 1000), gram_is_cheaper(900, 1000), gram_is_cheaper(2000, 1000)
    (True, False, False)
    """
    return 2 * n * n * d + 4 * n**3 / 3 < 4 * d**3 / 3


class Spectra:
    """The three spectra of one input, computed lazily from its moments (and rows if N < d).

    ``rows`` is the full data when it is at hand (all rows fit the sample); with N < d the
    Gram path is then used. ``precision`` says how the moments' products were computed
    (default: all N rows in one product in the moments' dtype); it sets each spectrum's floor.
    """

    def __init__(self, moments: StreamingMoments, rows: torch.Tensor | None = None,
                 precision: Precision | None = None, base: Spectra | None = None):
        self.moments = moments
        self.precision = precision or Precision(moments.dtype, moments.n)
        self.n, self.d = moments.n, moments.d
        self.length = min(self.n, self.d)
        self._rows = rows if rows is not None and rows.shape[0] == self.n else None
        #: set when XᵀX's eigenvectors will be needed: then its one decomposition is ``eigh``
        #: and :attr:`raw_eigenvalues` reuses it (no eigendecomposition is computed twice)
        self.want_vectors = False
        #: set when other spectra will be updated from these (:attr:`base`): then every
        #: d×d decomposition is ``eigh``, so that each spectrum has its eigenvectors
        self.all_vectors = False
        #: the spectra of nearby moments (the full data's, for a jackknife block's deleted
        #: moments): when set, every d×d spectrum here is its :func:`first_order` update
        #: instead of a new eigendecomposition (not on the N×N Gram path)
        self.base = base if base is not None and not base.use_gram and not self.use_gram \
            else None

    @property
    def use_gram(self) -> bool:
        """True when every row is at hand and the N×N route is cheaper (:func:`gram_is_cheaper`)."""
        return self._rows is not None and gram_is_cheaper(self.n, self.d)

    @cached_property
    def covariance(self) -> Spectrum:
        """λ: eigenvalues of the unbiased covariance C."""
        if self.use_gram:
            r = self._rows.to(_F64)
            return gram_spectrum(r - r.mean(dim=0), 1.0 / max(self.n - 1, 1))
        return self._solve("covariance", self._shifted_error() / max(self.n - 1, 1),
                           self.all_vectors)

    def _solve(self, name: str, accumulated: float, vectors: bool) -> Spectrum:
        """Spectrum ``name`` of its d×d moment matrix: the :func:`first_order` update of the
        base's when there is a base, else an eigendecomposition (``eigh`` with ``vectors``)."""
        if self.base is not None:
            return first_order(self.base.with_vectors(name), self.matrix(name),
                               self.base.matrix(name), self.length, accumulated)
        return eigen_spectrum(self.matrix(name), self.length, vectors=vectors,
                              accumulated=accumulated)

    def _shifted_error(self) -> float:
        """u·c(n)·trace(Σyyᵀ): the rounding bound of the shifted second moment."""
        return self.precision.relative * float(torch.trace(self.moments.sum_yy))

    def _raw_error(self) -> float:
        """The rounding bound of M = Σyyᵀ + s(Σy)ᵀ + (Σy)sᵀ + N·ssᵀ: that of Σyyᵀ plus twice
        ‖s‖ times that of Σy (u·c(n)·Σ‖y‖ ≤ u·c(n)·√(N·trace Σyyᵀ))."""
        m = self.moments
        shift = 0.0 if m.shift is None else float(torch.linalg.vector_norm(m.shift))
        trace = float(torch.trace(m.sum_yy))
        return self._shifted_error() + 2 * shift * self.precision.relative * (m.n * trace) ** 0.5

    @cached_property
    def raw(self) -> Spectrum:
        """Eigen-decomposition of M = XᵀX, with eigenvectors (for partition isotropy)."""
        if self.use_gram:
            return gram_spectrum(self._rows, 1.0, vectors=True)
        return self._solve("raw", self._raw_error(), True)

    @cached_property
    def raw_eigenvalues(self) -> Spectrum:
        """Eigenvalues of M = XᵀX only (cheaper than :attr:`raw` when no vectors are needed)."""
        if "raw" in self.__dict__ or self.want_vectors or self.all_vectors \
                or self.base is not None:
            return self.raw
        if self.use_gram:
            return gram_spectrum(self._rows, 1.0)
        return self._solve("raw", self._raw_error(), False)

    @property
    def singular_values(self) -> torch.Tensor:
        """σ_k = √eig_k(XᵀX), the singular values of raw X."""
        return self.raw_eigenvalues.values.sqrt()

    @cached_property
    def autocorrelation(self) -> Spectrum:
        """η: eigenvalues of ρ = ZᵀZ/N."""
        if self.use_gram:
            r = self._rows.to(_F64)
            return gram_spectrum(normalize_rows(r), 1.0 / self.n)
        rounding = self.precision.relative * float(torch.trace(self.moments.sum_zz))
        return self._solve("autocorrelation", rounding / self.n, self.all_vectors)

    def solve_all(self) -> None:
        """Compute the report's three spectra (λ, η, and XᵀX's: ``eigh`` when its vectors are
        wanted) now, side by side on the CPU's threads, one thread each, the largest first.

        LAPACK's tridiagonalization scales poorly over threads (one parallel region per
        column), and up to :data:`SERIAL_SOLVE_MAX` each solve runs on one thread anyway
        (:func:`solve_threads`): side by side they use every core. Larger matrices gain from
        threads (d = 4096 on 2 cores: eigh 18 s on two threads, 34 s on one), so there, on a
        GPU, with one thread, on the Gram path and for first-order updates the spectra are
        computed one after the other as before.
        """
        raw = "raw" if self.want_vectors or self.all_vectors else "raw_eigenvalues"
        pending = [n for n in (raw, "covariance", "autocorrelation") if n not in self.__dict__]
        side_by_side = self.moments.sum_yy.device.type == "cpu" and not self.use_gram \
            and self.base is None and self.d <= SERIAL_SOLVE_MAX
        (threaded_map if side_by_side else serial_map)(
            lambda i: getattr(self, pending[i]), len(pending))

    def matrix(self, name: str) -> torch.Tensor:
        """The moment matrix behind spectrum ``name`` (``"covariance"`` C, ``"autocorrelation"``
        ρ, ``"raw"`` XᵀX; float64 d×d), formed once from the moments and shared by the
        spectrum, the metrics that read the matrix itself (``cov_offdiag``, ``vicreg_std``) and
        the first-order updates of K deletions, which all subtract the base's. Read-only."""
        cache = self.__dict__.setdefault("_matrices", {})
        if name not in cache:
            cache[name] = getattr(self.moments, MOMENT_MATRIX[name])()
        return cache[name]

    def dot(self, name: str, weights: torch.Tensor) -> float:
        """⟨A, W⟩ = Σ_ij A_ij·W_ij of the moment matrix A behind spectrum ``name``
        (``"autocorrelation"`` or ``"raw"``, see :meth:`matrix`) and a symmetric W, in one
        O(d²) pass over the moments, without forming A
        (:meth:`~reprdiag.stats.StreamingMoments.dot`)."""
        return float(self.moments.dot(MOMENT_MATRIX[name], weights))

    def with_values(self, values: Mapping[str, torch.Tensor]) -> Spectra:
        """A copy of these spectra whose spectrum ``name`` (``"covariance"``,
        ``"autocorrelation"``, ``"raw"``) has eigenvalues ``values[name]`` (same order,
        vectors, solver and floor; e.g. tensors that require grad), sharing the moment
        matrices. The named spectra are computed here first if they were not."""
        out = copy.copy(self)  # its own __dict__ (cached spectra), the same matrices dict
        for name, vals in values.items():
            out.__dict__[name] = replace(getattr(self, name), values=vals)
        if "raw" in values:  # the singular values read the same decomposition
            out.__dict__["raw_eigenvalues"] = out.__dict__["raw"]
        return out

    def with_vectors(self, name: str) -> Spectrum:
        """Spectrum ``name`` (``"covariance"``, ``"autocorrelation"``, ``"raw"``) with its
        eigenvectors: decomposed again by ``eigh`` if it was computed without them."""
        spectrum = getattr(self, name)
        if spectrum.vectors is None:
            self.all_vectors = True
            del self.__dict__[name]
            spectrum = getattr(self, name)
        return spectrum

    def solvers(self) -> dict[str, str]:
        """Which solver path produced each spectrum computed so far."""
        names = {**MOMENT_MATRIX, "raw_eigenvalues": MOMENT_MATRIX["raw"]}
        return {names[k]: v.solver for k, v in self.__dict__.items()
                if isinstance(v, Spectrum)}
