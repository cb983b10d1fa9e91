"""Precision policy: what float64 costs on small inputs, and how wrong float32 is on collapsed data.

Two tables, both through the public API (``reprdiag.analyze`` on safetensors files written under
``--tmp``), each row with ``os.getloadavg()`` beside it:

1. ``cost``: the streaming pass (``read_and_moments_s``) and the whole analysis of float32 files
   with ``--precision float32`` (the baseline, the old default) and ``float64`` (what ``auto``
   now picks while N·d² ≤ 2e9), best of ``--repeats``; the difference is the price of the
   float64 default.
2. ``error``: a collapsed N-row float32 file (4 directions plus noise 1e-3 of their scale, the
   recipe of ``sample_data/collapsed.safetensors``) with float32 products against float64: each
   metric's relative error, whether the float32 report flagged it (``precision.sensitive``) and
   whether its interval holds the float64 value; and the largest covariance eigenvalue error
   against the float32 path's estimated floor.

    python bench/precision.py cost --sizes 2000x384,5000x384,13000x384,3300x768,100000x128
    python bench/precision.py error --n 1000000 --d 256
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np
from safetensors.numpy import save_file

import reprdiag

MOMENT_METRICS = ["vne", "effective_rank", "rankme", "participation_ratio", "stable_rank",
                  "numerical_rank", "alpha_req", "isoscore", "avg_cosine", "std_normalized"]


def _load() -> str:
    return "/".join(f"{v:.1f}" for v in os.getloadavg())


def _write(path: Path, n: int, d: int, collapsed: bool, seed: int = 0) -> Path:
    """n×d float32 rows, written in slabs (never more than ~256 MB of float64 at once)."""
    rng = np.random.default_rng(seed)
    basis = rng.standard_normal((4, d)) * 3
    out = np.empty((n, d), dtype=np.float32)
    step = max(1, (32 * 2**20) // d)
    for a in range(0, n, step):
        b = min(n, a + step)
        if collapsed:
            rows = rng.standard_normal((b - a, 4)) @ basis
            rows += 1e-3 * rng.standard_normal((b - a, d))
        else:
            rows = rng.standard_normal((b - a, d)) * np.geomspace(1.0, 0.05, d)
        out[a:b] = rows
    save_file({"emb": out}, path)
    return path


def _timed(path: Path, precision: str, repeats: int) -> tuple[float, float, str]:
    best_pass, best_total, load = float("inf"), float("inf"), ""
    for _ in range(repeats):
        t0 = time.perf_counter()
        rep = reprdiag.analyze(path, metrics=MOMENT_METRICS, precision=precision, device="cpu")
        total = time.perf_counter() - t0
        load = _load()
        best_pass = min(best_pass, rep.inputs[0].timings["read_and_moments_s"])
        best_total = min(best_total, total)
    return best_pass, best_total, load


def cost(sizes: list[tuple[int, int]], tmp: Path, repeats: int) -> None:
    print("| N × d | N·d² | pass f32 s | pass f64 s | f64 extra s | total f32 s | total f64 s "
          "| load (1/5/15 min) |")
    print("|---|---|---|---|---|---|---|---|")
    for n, d in sizes:
        path = _write(tmp / f"cost-{n}x{d}.safetensors", n, d, collapsed=False)
        p32, t32, load32 = _timed(path, "float32", repeats)
        p64, t64, load64 = _timed(path, "float64", repeats)
        print(f"| {n:,} × {d} | {n * d * d:.2g} | {p32:.3f} | {p64:.3f} | {p64 - p32:+.3f} "
              f"| {t32:.2f} | {t64:.2f} | {load32} → {load64} |", flush=True)
        path.unlink()


def error(n: int, d: int, tmp: Path, chunk_rows: int | None) -> None:
    path = _write(tmp / f"collapsed-{n}x{d}.safetensors", n, d, collapsed=True)
    runs = {}
    for precision in ("float32", "float64"):
        t0 = time.perf_counter()
        runs[precision] = reprdiag.analyze(path, metrics=MOMENT_METRICS, precision=precision,
                                           chunk_rows=chunk_rows, device="cpu").inputs[0]
        print(f"{precision}: {time.perf_counter() - t0:.1f} s, load {_load()}", flush=True)
    f32, f64 = runs["float32"], runs["float64"]
    rec = f32.precision
    print(f"\nfloat32 path: chunk_rows {rec['chunk_rows']}, relative error bound "
          f"{rec['relative_error']:.2e}, unresolved eigenvalues {rec['unresolved']}")
    lam32 = np.asarray(f32.spectra["covariance"])
    lam64 = np.asarray(f64.spectra["covariance"])
    worst = np.abs(lam32 - lam64).max()
    print(f"covariance eigenvalues: largest |λ32 − λ64| = {worst:.3g}, estimated floor "
          f"{rec['floors']['covariance']:.3g} ({worst / rec['floors']['covariance']:.2f}× "
          f"floor), λ₁ = {lam64[0]:.4g}\n")
    print("| metric | float64 | float32 | rel. error | flagged | float32 interval holds f64 |")
    print("|---|---|---|---|---|---|")
    sensitive = rec.get("sensitive", {})
    for name in MOMENT_METRICS:
        a, b = f64.metrics[name], f32.metrics[name]
        rel = abs(b - a) / abs(a) if a else abs(b - a)
        span = sensitive.get(name)
        holds = "" if span is None else ("yes" if span[0] <= a <= span[1] else "NO")
        print(f"| {name} | {a:.8g} | {b:.8g} | {rel:.2e} | {'yes' if span else 'no'} "
              f"| {holds} |")
    print(f"\nwarnings: {f32.warnings}\nload {_load()}")
    path.unlink()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", choices=["cost", "error"])
    parser.add_argument("--sizes", default="2000x384,13000x384,3300x768,100000x128",
                        help="N×d list for cost")
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--d", type=int, default=256)
    parser.add_argument("--chunk-rows", type=int, default=None)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--tmp", type=Path, default=Path("/tmp"))
    args = parser.parse_args()
    print(f"load at start {_load()}, {os.cpu_count()} CPUs")
    if args.what == "cost":
        sizes = [tuple(int(v) for v in s.split("x")) for s in args.sizes.split(",")]
        cost(sizes, args.tmp, args.repeats)
    else:
        error(args.n, args.d, args.tmp, args.chunk_rows)


if __name__ == "__main__":
    main()
