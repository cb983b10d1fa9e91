"""Streaming moments: :class:`StreamingMoments`, the chunk kernels (:func:`gram_product`,
:class:`Scratch`) and row normalization.

The moments are built in one pass over chunks of rows, in any chunking, and merge exactly, so
shards, files and processes combine (:meth:`StreamingMoments.merge`, or through
:meth:`~StreamingMoments.state` tensors summed across processes). Every second-order metric is
a function of the moments; the pairwise ones use the row sample of :mod:`reprdiag.stats.reservoir`.

Cost per chunk of n rows of width d: two Gram products, O(n·d²); memory O(d²), whatever N is.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from reprdiag.precision import choose
from reprdiag.stats.state import Frame, cpu_shift, first_shift

#: A row is zero when its norm is exactly 0 (docs/design.md §3): it normalizes to the zero vector.
#: No absolute threshold, so data at any scale float64 holds (1e-30, 1e+30) normalizes alike.
ZERO_NORM = 0.0


def safe_norms(norms: torch.Tensor) -> torch.Tensor:
    """``norms`` with the zero ones replaced by 1 (in place), so that x/‖x‖ is the zero vector
    for a zero row and x/‖x‖ for every other row, at any scale.

    >>> safe_norms(torch.tensor([0.0, 1e-30, 2.0], dtype=torch.float64)).tolist()
    [1.0, 1e-30, 2.0]
    """
    return norms.masked_fill_(norms <= ZERO_NORM, 1.0)


def normalize_rows(rows: torch.Tensor) -> torch.Tensor:
    """z_i = x_i/‖x_i‖, the zero vector for a zero row (a new tensor, in ``rows``' dtype).
    The norms are taken in float64, so a float32 row of tiny values (whose float32 squares
    underflow) still normalizes to a unit vector.

    >>> z = normalize_rows(torch.tensor([[0.0, 0.0], [3e-30, 4e-30]], dtype=torch.float64))
    >>> [[round(v, 12) for v in row] for row in z.tolist()]
    [[0.0, 0.0], [0.6, 0.8]]
    >>> normalize_rows(torch.tensor([[3e-30, 4e-30]])).tolist() == [[0.6000000238418579,
    ...                                                               0.800000011920929]]
    True
    """
    norms = safe_norms(torch.linalg.vector_norm(rows, dim=1, keepdim=True, dtype=_F64))
    return rows / norms if rows.dtype == _F64 else (rows / norms).to(rows.dtype)


#: A float32 row whose norm is below this (and not exactly 0) is multiplied in float64: the
#: squares of all its entries may underflow float32. Above it, the row's largest entry squared
#: is a normal float32 for any d below 2⁴⁰, and entries too small to square are below
#: float32's rounding of the row's own norm.
TINY_ROW = 2.0**-40


def _has_tiny_rows(x: torch.Tensor, norms: torch.Tensor) -> bool:
    """Whether some row of ``x`` is non-zero with a norm below :data:`TINY_ROW` (``norms``
    its rows' norms in ``x``'s dtype; one reduction over them, the rows looked at only when
    some norm is that small)."""
    if x.shape[0] == 0 or float(norms.amin()) >= TINY_ROW:
        return False
    return bool(x[norms < TINY_ROW].ne(0).any())

_F64 = torch.float64
_SCRATCH_BYTES = 256 * 2**20  # largest per-chunk work buffer kept between updates


def work_dtype(storage_dtype: str | torch.dtype, precision: str = "auto") -> torch.dtype:
    """The dtype chunks are multiplied in before their products are summed in float64.

    For a stream of unknown length: ``auto`` keeps float64 (and integer) data in float64 and
    multiplies narrower floats in float32 after subtracting a per-run shift; ``float32``/
    ``float64`` force one. With N known, :func:`reprdiag.precision.choose` also picks float64
    for small inputs.

    >>> work_dtype("bfloat16"), work_dtype("float64"), work_dtype("int32")
    (torch.float32, torch.float64, torch.float64)
    """
    return choose(storage_dtype, precision)[0]


#: CPU Gram products of at least this width form only the upper block triangle (2×2 blocks):
#: 3/4 of the multiply-adds, measured 0.79–0.83× the time of one full product at d = 384 and
#: 768 (64 MiB fp32 chunks, MKL, 2 cores). CUDA keeps one full product.
SYMMETRIC_MIN_WIDTH = 256


def gram_product(x: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """xᵀx into ``out`` (d×d, x's dtype). On the CPU for d ≥ :data:`SYMMETRIC_MIN_WIDTH` only
    the blocks on and above the diagonal of a 2×2 split are multiplied; the block below is
    their transpose (xᵀx is symmetric).

    >>> x = torch.randn(50, 300)
    >>> bool(torch.allclose(gram_product(x, torch.empty(300, 300)), x.T @ x, atol=1e-4))
    True
    """
    d = x.shape[1]
    if x.device.type != "cpu" or d < SYMMETRIC_MIN_WIDTH:
        return torch.mm(x.T, x, out=out)
    h = d // 2
    a, b = x[:, :h], x[:, h:]
    out[:h, :h] = a.T @ a
    out[:h, h:] = a.T @ b
    out[h:, h:] = b.T @ b
    out[h:, :h] = out[:h, h:].T
    return out


class Scratch:
    """Work buffers for one chunk of rows, reused from chunk to chunk: an n×d one shaped like
    the chunk (kept up to 256 MiB), a d×d one for a Gram product and an n-vector for the row
    norms. A stream of equal chunks therefore allocates them once (pinned by the tests through
    ``data_ptr``)."""

    def __init__(self) -> None:
        self.bufs: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None

    def get(self, x: torch.Tensor, d: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Uninitialized (n×d, d×d, n) buffers in ``x``'s dtype and device, n = len(x)."""
        bufs = self.reserve(x.shape[0], d, x.dtype, x.device)
        n = x.shape[0]
        return bufs[0][:n], bufs[1], bufs[2][:n]

    def reserve(self, n: int, d: int, dtype: torch.dtype, device: torch.device
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Buffers for up to ``n`` rows (allocated only when the kept ones are too small)."""
        bufs = self.bufs
        if bufs is None or bufs[0].shape[0] < n or bufs[0].dtype != dtype \
                or bufs[0].device != device or bufs[1].shape[0] != d:
            bufs = (torch.empty(n, d, dtype=dtype, device=device),
                    torch.empty(d, d, dtype=dtype, device=device),
                    torch.empty(n, dtype=dtype, device=device))
            keep = bufs[0].numel() * bufs[0].element_size() <= _SCRATCH_BYTES
            self.bufs = bufs if keep else None
        return bufs


@dataclass
class StreamingMoments:
    """Shifted first and second moments of rows x and of their normalized form z = x/‖x‖.

    Holds n, s (the shift), Σy and Σyyᵀ with y = x − s, Σz and Σzzᵀ, all float64. Updates
    multiply in ``dtype`` (float32 or float64) and add into the float64 totals; the shift keeps
    float32 products free of the cancellation a large mean would cause.

    >>> m = StreamingMoments(2)
    >>> m.update(torch.tensor([[1.0, 2.0], [3.0, 4.0]], dtype=torch.float64))
    >>> m.n, m.mean.tolist(), m.covariance().tolist()
    (2, [2.0, 3.0], [[2.0, 2.0], [2.0, 2.0]])
    """

    d: int
    dtype: torch.dtype = _F64
    device: torch.device | str = "cpu"
    n: int = 0
    n_zero: int = 0
    shift: torch.Tensor | None = None
    sum_y: torch.Tensor = field(init=False)
    sum_yy: torch.Tensor = field(init=False)
    sum_z: torch.Tensor = field(init=False)
    sum_zz: torch.Tensor = field(init=False)
    #: per-chunk work buffers, kept between updates (several moments may share one)
    scratch: Scratch = field(default_factory=lambda: Scratch(), init=False, repr=False,
                             compare=False)

    def __post_init__(self) -> None:
        dev = torch.device(self.device)
        self.device = dev
        self.sum_y = torch.zeros(self.d, dtype=_F64, device=dev)
        self.sum_yy = torch.zeros(self.d, self.d, dtype=_F64, device=dev)
        self.sum_z = torch.zeros(self.d, dtype=_F64, device=dev)
        self.sum_zz = torch.zeros(self.d, self.d, dtype=_F64, device=dev)

    # -- building -------------------------------------------------------------------------
    def update(self, rows: torch.Tensor, dtype: torch.dtype | None = None) -> None:
        """Add a chunk of rows (n × d, any real dtype, on any device), multiplied in ``dtype``
        (default: the moments' own; float64 for values whose float32 squares would
        over/underflow).

        Cost: two Gram products (2·n·d² multiply-adds each) plus five streaming passes over
        the chunk (shift, column sums, norms, divide, column sums), which write into scratch
        buffers kept between chunks (no fresh n×d, d×d or n allocation per chunk).
        """
        if rows.shape[0] == 0:
            return
        dtype = dtype or self.dtype
        x = rows.to(device=self.device, dtype=dtype)
        work, gram, norms = self._scratch(x)
        torch.linalg.vector_norm(x, dim=1, out=norms)
        if dtype != _F64 and _has_tiny_rows(x, norms):
            self.update(rows, _F64)  # float32 squares of such a row underflow: this chunk in 64
            return
        if self.shift is None:
            self.shift = x.mean(dim=0, dtype=_F64)
        y = torch.sub(x, self.shift.to(dtype), out=work)
        self.sum_y += y.sum(dim=0)
        self.sum_yy += gram_product(y, gram)
        self.n_zero += int((norms <= ZERO_NORM).sum())
        z = torch.div(x, safe_norms(norms).unsqueeze(1), out=work)
        self.sum_z += z.sum(dim=0)
        self.sum_zz += gram_product(z, gram)
        self.n += x.shape[0]

    def to(self, device: torch.device | str) -> StreamingMoments:
        """The same moments with their totals on ``device`` (e.g. the CPU after a GPU OOM)."""
        out = StreamingMoments(self.d, self.dtype, device, self.n, self.n_zero,
                               None if self.shift is None else self.shift.to(device))
        for name in ("sum_y", "sum_yy", "sum_z", "sum_zz"):
            setattr(out, name, getattr(self, name).to(device))
        return out

    def _scratch(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return self.scratch.get(x, self.d)

    def rebased(self, shift: torch.Tensor) -> StreamingMoments:
        """The same moments expressed about another shift (exact up to float64 rounding)."""
        out = copy.copy(self)  # the totals are all replaced: no zero d×d allocated for them
        out.scratch = Scratch()
        out.shift = shift.to(device=self.device, dtype=_F64).clone()
        out.sum_z, out.sum_zz = self.sum_z.clone(), self.sum_zz.clone()
        if self.shift is None:  # no rows yet: zero sums about any shift
            out.sum_y, out.sum_yy = self.sum_y.clone(), self.sum_yy.clone()
            return out
        delta = self.shift - out.shift
        out.sum_y = self.sum_y + self.n * delta
        out.sum_yy = (self.sum_yy + torch.outer(self.sum_y, delta)
                      + torch.outer(delta, self.sum_y) + self.n * torch.outer(delta, delta))
        return out

    def merge(self, other: StreamingMoments) -> None:
        """Add ``other``'s rows to these moments (Chan et al.'s exact pairwise merge)."""
        if other.n == 0:
            return
        if self.shift is None:
            self.shift = other.shift.to(self.device).clone()
        o = other.rebased(self.shift)
        self.sum_y += o.sum_y.to(self.device)
        self.sum_yy += o.sum_yy.to(self.device)
        self.sum_z += o.sum_z.to(self.device)
        self.sum_zz += o.sum_zz.to(self.device)
        self.n += o.n
        self.n_zero += o.n_zero

    # -- merging (the protocol of :mod:`reprdiag.stats.state`) ------------------------------
    _SUMS = ("sum_y", "sum_yy", "sum_z", "sum_zz")

    def frame(self) -> Frame:
        """What moments must share to be added: the shift (``None`` before any row)."""
        return {"shift": cpu_shift(self.shift)}

    def common_frame(self, frames: Sequence[Frame]) -> Frame:
        """The shift of the first moments with rows (see :func:`~reprdiag.stats.state.
        first_shift`)."""
        return {"shift": first_shift(frames)}

    def state(self, frame: Frame | None = None) -> dict[str, torch.Tensor]:
        """``n``, ``n_zero`` (0-d int64) and the four float64 sums, about ``frame``'s shift
        (default: the moments' own). Moments in one frame add state by state."""
        shift = None if frame is None else frame["shift"]
        m = self if shift is None else self.rebased(shift)
        counts = {k: torch.tensor(v, dtype=torch.int64, device=self.device)
                  for k, v in (("n", m.n), ("n_zero", m.n_zero))}
        return {**counts, **{name: getattr(m, name) for name in self._SUMS}}

    def with_state(self, frame: Frame, state: dict[str, torch.Tensor]) -> StreamingMoments:
        """Moments configured like these (width, dtype, device) holding ``state`` about
        ``frame``'s shift.

        >>> m = StreamingMoments(2)
        >>> m.update(torch.tensor([[1.0, 2.0], [3.0, 5.0]], dtype=torch.float64))
        >>> back = m.with_state(m.frame(), m.state())
        >>> back.n, torch.equal(back.covariance(), m.covariance())
        (2, True)
        """
        shift = frame["shift"]
        out = copy.copy(self)  # no zero d×d totals allocated only to be replaced
        out.n, out.n_zero = int(state["n"]), int(state["n_zero"])
        out.shift = None if shift is None else shift.to(self.device, _F64).clone()
        out.scratch = Scratch()
        for name in self._SUMS:
            setattr(out, name, state[name].to(device=self.device, dtype=_F64))
        return out

    # -- reading --------------------------------------------------------------------------
    @property
    def mean(self) -> torch.Tensor:
        """μ, the mean row (float64)."""
        return self.shift + self.sum_y / self.n

    def covariance(self) -> torch.Tensor:
        """C = (X−μ)ᵀ(X−μ)/(N−1), unbiased (float64, d×d)."""
        ybar = self.sum_y / self.n
        centred = self.sum_yy - self.n * torch.outer(ybar, ybar)
        return (centred + centred.T) / (2 * max(self.n - 1, 1))

    def second_moment(self) -> torch.Tensor:
        """M = XᵀX, the raw uncentred second moment (float64, d×d)."""
        s, sy = self.shift, self.sum_y
        raw = self.sum_yy + torch.outer(s, sy) + torch.outer(sy, s) + self.n * torch.outer(s, s)
        return (raw + raw.T) / 2

    def autocorrelation(self) -> torch.Tensor:
        """ρ = ZᵀZ/N of the normalized rows (trace 1 when no row is zero)."""
        return (self.sum_zz + self.sum_zz.T) / (2 * self.n)

    def second_moment_times(self, v: torch.Tensor) -> torch.Tensor:
        """M·V for M = XᵀX (:meth:`second_moment`) without forming M: O(d²·k) for V (d, k).

        >>> m = StreamingMoments(3, torch.float64)
        >>> m.update(torch.arange(12.0, dtype=torch.float64).reshape(4, 3))
        >>> v = torch.eye(3, dtype=torch.float64)[:, :2]
        >>> torch.allclose(m.second_moment_times(v), m.second_moment() @ v)
        True
        """
        s, sy = self.shift, self.sum_y
        v = v.to(self.sum_yy)
        sv = s @ v
        return self.sum_yy @ v + torch.outer(s, sy @ v) + torch.outer(sy + self.n * s, sv)

    def dot(self, form: str, weights: torch.Tensor) -> torch.Tensor:
        """⟨A, W⟩ = Σ_ij A_ij·W_ij for the moment matrix A = ``form`` (``"second_moment"`` or
        ``"autocorrelation"``) and a symmetric W, without forming A: one pass over a d×d sum,
        O(d²) (A's symmetrization does not change the sum when W is symmetric).

        >>> m = StreamingMoments(3, torch.float64)
        >>> m.update(torch.arange(12.0, dtype=torch.float64).reshape(4, 3))
        >>> w = torch.ones(3, 3, dtype=torch.float64)
        >>> float(m.dot("second_moment", w)) == float(m.second_moment().sum())
        True
        """
        w = weights.to(self.sum_yy)
        if form == "autocorrelation":
            return torch.dot(self.sum_zz.reshape(-1), w.reshape(-1)) / self.n
        if form != "second_moment":
            raise ValueError(f"no inner product for moment matrix {form!r}")
        s, sy = self.shift, self.sum_y
        ws = w @ s
        return torch.dot(self.sum_yy.reshape(-1), w.reshape(-1)) + 2 * (sy @ ws) \
            + self.n * (s @ ws)

    def z_variance(self) -> torch.Tensor:
        """Unbiased per-coordinate variance of z (float64, d)."""
        zbar = self.sum_z / self.n
        return (torch.diagonal(self.sum_zz) - self.n * zbar**2).clamp_min(0) / max(self.n - 1, 1)
