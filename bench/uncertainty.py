"""Jackknife uncertainty (``analyze --uncertainty``): calibration and overhead.

Calibration: draw independent Gaussian samples of a known covariance, analyze each with
``uncertainty=True``, and compare the mean reported SE of each metric with the standard
deviation of the metric over the replicates (the true sampling noise at that N); count how
often the 95% intervals cover the replicates' mean (the metric's expected value at that N) and
the large-N value. Overhead: wall time of ``analyze`` with and without ``--uncertainty``.

    python bench/uncertainty.py calibrate --reps 400          # d = 32 power law, N = 2000
    python bench/uncertainty.py highdim --reps 200 --se-reps 20   # d = 384 MiniLM covariance
    python bench/uncertainty.py overhead --dims 384,768,2048 --n 20000

The test suite (tests/uncertainty/test_calibration.py) runs small versions of the
``calibrate --bend 16`` and ``highdim`` runs (12 + 60 and 8 + 40 replicates).
"""

from __future__ import annotations

import argparse
import math
import platform
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run from a checkout without installing
    sys.path.insert(0, str(ROOT))

import reprdiag  # noqa: E402
from reprdiag.metrics import METRICS, Statistics, compute, resolve  # noqa: E402

CONTINUOUS = tuple(i.name for i in resolve(None) if not i.discrete and not i.needs)
TAIL_METRICS = ("effective_rank", "rankme", "participation_ratio", "stable_rank", "alpha_req")


class Gaussian:
    """N(mean, C) with C = R·diag(λ)·Rᵀ; draws float64 rows with a seeded generator."""

    def __init__(self, eigenvalues: torch.Tensor, rotation: torch.Tensor, mean: torch.Tensor):
        self.eigenvalues, self.rotation, self.mean = eigenvalues, rotation, mean
        self.sqrt = rotation * eigenvalues.clamp_min(0).sqrt()  # rows = z·sqrtᵀ

    @property
    def d(self) -> int:
        return self.eigenvalues.numel()

    def draw(self, n: int, seed: int) -> torch.Tensor:
        g = torch.Generator().manual_seed(seed)
        z = torch.randn(n, self.d, dtype=torch.float64, generator=g)
        return z @ self.sqrt.T + self.mean


def power_law(d: int = 32, alpha: float = 1.0, seed: int = 0, bend: int | None = None,
              alpha2: float = 2.0) -> Gaussian:
    """λ_i = i^(−α) in a random rotation (with ``bend``: exponent α2 beyond rank ``bend``, a
    broken power law), with a mean of norm ≈ the total spread / 2 (so raw-X metrics such as
    RankMe and avg_cosine see a non-centred cloud).

    With an exact power law the population α-ReQ fit is perfect (R² = 1, a boundary), and the
    sample R² moves only at second order: there the jackknife overstates its SE (about 1.6×
    at d = 32, N = 2000), as Efron–Stein predicts for such degenerate statistics; the bend
    makes the population R² < 1, the usual smooth case.
    """
    g = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(d, d, dtype=torch.float64, generator=g))
    i = torch.arange(1, d + 1, dtype=torch.float64)
    lam = i**-alpha
    if bend is not None:
        lam[bend:] = lam[bend:] * (i[bend:] / bend) ** (alpha - alpha2)
    mean = torch.randn(d, dtype=torch.float64, generator=g)
    return Gaussian(lam, q, mean / mean.norm() * lam.sum().sqrt() / 2)


def minilm(path: Path = ROOT / "sample_data" / "minilm.safetensors") -> Gaussian:
    """The mean and covariance of the bundled MiniLM embeddings (d = 384)."""
    from safetensors.torch import load_file

    x = load_file(str(path))["embeddings"].to(torch.float64)
    lam, vecs = torch.linalg.eigh(torch.cov(x.T))
    return Gaussian(lam, vecs, x.mean(0))


def jackknife_runs(model: Gaussian, n: int, reps: int, blocks: int = 20,
                   metrics: Sequence[str] = CONTINUOUS, seed: int = 0,
                   jackknife: str = "auto") -> pd.DataFrame:
    """``reps`` independent samples analyzed with uncertainty: one row per (rep, metric)."""
    rows = []
    for rep in range(reps):
        report = reprdiag.analyze(model.draw(n, seed + rep), metrics=list(metrics),
                                  uncertainty=True, blocks=blocks, device="cpu",
                                  jackknife=jackknife)
        frame = report.uncertainty.reset_index()
        frame["rep"] = rep
        rows.append(frame)
    return pd.concat(rows, ignore_index=True)


def metric_values(model: Gaussian, n: int, reps: int, metrics: Sequence[str],
                  seed: int = 10_000) -> pd.DataFrame:
    """The metrics alone (no jackknife) on ``reps`` independent samples: rep × metric."""
    infos = [METRICS[m] for m in metrics]
    out = [compute(Statistics.from_tensor(model.draw(n, seed + rep)), infos)
           for rep in range(reps)]
    return pd.DataFrame(out)


def large_n_values(model: Gaussian, metrics: Sequence[str], n: int = 200_000,
                   seed: int = 99) -> dict[str, float]:
    """Each metric at a large N (its limit, up to O(1/√N) noise)."""
    return metric_values(model, n, 1, metrics, seed).iloc[0].to_dict()


def calibration(runs: pd.DataFrame, spread: pd.DataFrame | None = None,
                limit: dict[str, float] | None = None) -> pd.DataFrame:
    """Per metric: sd over replicates, mean SE, their ratio, and interval coverage.

    ``spread`` (optional) gives the metric values of separate, cheaper replicates for the
    standard deviation; by default the jackknife runs' own values are used. Coverage of the
    mean is of the replicates' mean value; coverage of the limit of ``limit`` (large N).
    """
    out = {}
    for name, g in runs.groupby("metric", sort=False):
        values = spread[name].to_numpy() if spread is not None else g["value"].to_numpy()
        sd, mean = float(np.std(values, ddof=1)), float(np.mean(values))
        row = {"sd": sd, "mean_se": float(g["se"].mean()), "ratio": float(g["se"].mean() / sd),
               "coverage_mean": float(((g["ci_low"] <= mean) & (mean <= g["ci_high"])).mean()),
               "mean_bias": float(g["bias"].mean()), "finite_n_bias": math.nan}
        if limit is not None and name in limit:
            lim = limit[name]
            row["coverage_limit"] = float(((g["ci_low"] <= lim) & (lim <= g["ci_high"])).mean())
            row["finite_n_bias"] = mean - lim
        out[name] = row
    return pd.DataFrame(out).T



def _timed(x: torch.Tensor, flag: bool, blocks: int, device: str) -> tuple[float, float]:
    """(wall s, CPU s of this process) of one analyze of ``x``."""
    w0, c0 = time.perf_counter(), time.process_time()
    reprdiag.analyze(x, uncertainty=flag, blocks=blocks, device=device)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return time.perf_counter() - w0, time.process_time() - c0


def overhead(dims: Sequence[int], n: int, blocks: int = 20, device: str = "cpu",
             repeat: int = 1) -> pd.DataFrame:
    """Wall and CPU time of analyze (all metrics) with and without uncertainty, best of
    ``repeat``; prints each row as it is measured. CPU time (of this process, all threads)
    is the fairer figure on a shared machine."""
    rows = []
    for d in dims:
        x = power_law(d, 1.0, seed=d).draw(n, 1).to(torch.float32)
        best = {flag: min((_timed(x, flag, blocks, device) for _ in range(repeat)),
                          key=lambda t: t[1]) for flag in (False, True)}
        rows.append({"d": d, "n": n, "blocks": blocks, "device": device,
                     "plain_wall_s": best[False][0], "unc_wall_s": best[True][0],
                     "plain_cpu_s": best[False][1], "unc_cpu_s": best[True][1],
                     "overhead_cpu_x": best[True][1] / best[False][1],
                     "moment_memory_mib": blocks * 2 * d * d * 8 / 2**20})
        print(rows[-1], flush=True)
    return pd.DataFrame(rows)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="what", required=True)
    cal = sub.add_parser("calibrate", help="d = 32 power-law Gaussian, N = 2000")
    cal.add_argument("--reps", type=int, default=400)
    cal.add_argument("--blocks", type=int, default=20)
    cal.add_argument("--bend", type=int, default=None, help="broken power law: exponent 2 "
                     "beyond this rank (default: exact power law i^-1)")
    hd = sub.add_parser("highdim", help="d = 384 MiniLM covariance, N = 2000")
    hd.add_argument("--reps", type=int, default=200, help="replicates for the true spread")
    hd.add_argument("--se-reps", type=int, default=20, help="replicates with the jackknife")
    hd.add_argument("--blocks", type=int, default=20)
    ov = sub.add_parser("overhead", help="analyze vs analyze --uncertainty")
    ov.add_argument("--dims", default="384,768,2048")
    ov.add_argument("--n", type=int, default=20_000)
    ov.add_argument("--blocks", type=int, default=20)
    ov.add_argument("--device", default="cpu")
    ov.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--jackknife", default="auto", help="deleted spectra: auto, "
                        "first-order or exact (calibrate, highdim)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1 is fastest "
                        "for the small matrices of the calibration runs)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    pd.set_option("display.width", 160)
    t0 = time.perf_counter()
    if args.what == "calibrate":
        model = power_law(32, bend=args.bend)
        runs = jackknife_runs(model, 2000, args.reps, args.blocks, jackknife=args.jackknife)
        table = calibration(runs, limit=large_n_values(model, CONTINUOUS))
    elif args.what == "highdim":
        model = minilm()
        runs = jackknife_runs(model, 2000, args.se_reps, args.blocks, TAIL_METRICS,
                              jackknife=args.jackknife)
        table = calibration(runs, metric_values(model, 2000, args.reps, TAIL_METRICS))
    else:
        table = overhead([int(d) for d in args.dims.split(",")], args.n, args.blocks,
                         args.device, args.repeat)
    print(f"# {args}  ({platform.processor() or platform.machine()}, torch {torch.__version__},"
          f" {torch.get_num_threads()} threads, {time.perf_counter() - t0:.0f} s)")
    print(table.to_markdown(floatfmt=".4g") if _has_tabulate() else table.to_string())


def _has_tabulate() -> bool:
    try:
        import tabulate  # noqa: F401
    except ImportError:
        return False
    return True


if __name__ == "__main__":
    main()
