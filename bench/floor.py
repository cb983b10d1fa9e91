"""Time to answer, measured from the command a user runs, beside the by-hand floor.

    python bench/floor.py                    # every case (files go to /tmp/reprdiag-bench)
    python bench/floor.py --quick            # small sizes (tests: via gpu_check.py --dry-run)
    python bench/floor.py --cases 20k384,unc384 --device cuda --json out.json

Each row runs ``python -m reprdiag analyze FILE --format json`` in a child process (what a
user types; ``timings.total_s`` of its report is "reprdiag s", the child's wall time with
the Python/torch start-up is "command s") and, in this process, the floor: what the same
numbers cost by hand, measured in the same run —

- ``stream`` (1M × 768): one read of the file (page-cached, into one reused buffer) plus two
  fp32 Gram products at the GFLOP/s torch measures for a ``XᵀX`` of 32768 rows;
- ``small`` (20k × 384): the same plus three float64 ``eigvalsh`` of d×d and the
  upper-triangle fp32 vMF log-sum-exp over a 16,384-row sample, written out here;
- ``uncertainty``: ``--uncertainty`` (K = 20) against the plain command on the same file;
- ``numpy``: numpy float64 computing the same three spectra (covariance, autocorrelation of
  the normalized rows, XᵀX), in memory.

``os.getloadavg()`` is printed beside every row (before/after); a row whose load exceeded 0.5
is marked ``*``: other processes shared the cores, so its figures are upper bounds. Peak
private memory of the child is its largest ``RssAnon`` (memory-mapped file pages excluded).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as reprdiag sets it: a fair floor

import numpy as np
import torch

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path[:0] = [str(BENCH)]

import _data  # noqa: E402
from _child import run_child  # noqa: E402

LOADED = 0.5


@dataclass(frozen=True)
class Case:
    name: str
    n: int
    d: int
    kind: str  # stream | small | uncertainty | numpy | numpy-spectra


#: What the numpy baseline computes: the metrics of the three spectra (λ, η, σ) and of the
#: moments. ``numpy-spectra`` rows run ``analyze --metrics`` these, the same work as numpy
#: (no row-sample metrics: er_entropy, uniformity, partition_isotropy's eigh + projection).
SPECTRAL = ("vne,vne_normalized,effective_rank,rankme,participation_ratio,stable_rank,"
            "numerical_rank,alpha_req,alpha_req_r2,isoscore,avg_cosine,cov_offdiag,"
            "vicreg_std,std_normalized")


CASES = [Case("1m768", 1_000_000, 768, "stream"), Case("20k384", 20_000, 384, "small"),
         Case("unc384", 20_000, 384, "uncertainty"), Case("unc768", 20_000, 768, "uncertainty"),
         Case("30k4096", 30_000, 4096, "numpy"), Case("30k4096-spectra", 30_000, 4096,
                                                       "numpy-spectra")]
QUICK = [Case("1m768", 20_000, 64, "stream"), Case("20k384", 3_000, 32, "small"),
         Case("unc384", 3_000, 32, "uncertainty"), Case("unc768", 3_000, 64, "uncertainty"),
         Case("30k4096", 2_000, 128, "numpy"), Case("30k4096-spectra", 2_000, 128,
                                                      "numpy-spectra")]


# -- the floor, by hand ---------------------------------------------------------------------
def _best(fn, repeat: int = 3) -> float:
    fn()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def gram_gflops(d: int, device: torch.device, rows: int = 32768) -> float:
    """fp32 GFLOP/s of one Gram product XᵀX of ``rows`` × d on ``device``."""
    x = torch.randn(rows, d, device=device)

    def run() -> None:
        _ = x.T @ x
        _sync(device)

    return 2.0 * rows * d * d / _best(run) / 1e9


def read_seconds(path: Path, block: int = 64 * 2**20) -> float:
    """Seconds to read ``path`` once into one reused buffer (page-cached after writing)."""
    buf = bytearray(block)
    view = memoryview(buf)
    t0 = time.perf_counter()
    with open(path, "rb", buffering=0) as f:
        while f.readinto(view) > 0:
            pass
    return time.perf_counter() - t0


def eigvalsh_seconds(d: int, device: torch.device) -> float:
    """One float64 eigvalsh of a d×d SPD matrix (the best of one thread and torch's count)."""
    a = torch.randn(d, d, dtype=torch.float64, device=device)
    a = a @ a.T

    def run() -> None:
        torch.linalg.eigvalsh(a)
        _sync(device)

    best = _best(run, 2)
    if device.type == "cpu" and torch.get_num_threads() > 1:
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            best = min(best, _best(run, 2))
        finally:
            torch.set_num_threads(threads)
    return best


def lse_seconds(m: int, d: int, device: torch.device, kappa: float = 10.0,
                block: int = 4096) -> float:
    """The upper-triangle fp32 vMF log-sum-exp over an m-row unit sample, written out."""
    e = torch.nn.functional.normalize(torch.randn(m, d, device=device), dim=1)

    def run() -> None:
        sums = torch.zeros(m, dtype=torch.float64, device=device)
        for i in range(0, m, block):
            for j in range(i, m, block):
                b = (e[i:i + block] @ e[j:j + block].T).mul_(kappa).sub_(kappa).exp_()
                sums[i:i + block] += b.sum(1)
                if j != i:
                    sums[j:j + block] += b.sum(0)
        sums.log_()
        _sync(device)

    return _best(run, 1)


def numpy_spectra_seconds(path: Path) -> float:
    """numpy float64, in memory: λ of np.cov, η of ZᵀZ/N and the eigenvalues of XᵀX."""
    t0 = time.perf_counter()
    x = _data.load_array(path).astype(np.float64)
    np.linalg.eigvalsh(np.cov(x, rowvar=False))
    np.linalg.eigvalsh(x.T @ x)
    z = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-300)
    np.linalg.eigvalsh(z.T @ z / len(z))
    return time.perf_counter() - t0


# -- the command a user runs ----------------------------------------------------------------
def run_analyze(path: Path, device: str, *extra: str) -> dict:
    """``python -m reprdiag analyze PATH --format json`` in a child; its report's timings,
    its wall time and its peak RssAnon."""
    cmd = [sys.executable, "-m", "reprdiag", "analyze", str(path), "--format", "json",
           "--device", device, *extra]
    out, wall, peak = run_child(cmd)
    report = json.loads(out)
    entry = report["inputs"][0]
    return {"total_s": report["timings"]["total_s"], "command_s": wall, "peak_mb": peak,
            "timings": entry["timings"], "solver": entry["solver"]}


# -- one case -------------------------------------------------------------------------------
def data_file(case: Case, folder: Path) -> Path:
    """The case's float32 safetensors file (written once, reused while its size matches)."""
    path = folder / f"{case.n}x{case.d}.safetensors"
    if not path.exists() or path.stat().st_size < case.n * case.d * 4:
        folder.mkdir(parents=True, exist_ok=True)
        _data.write_safetensors(path, case.n, case.d)
    return path


_NUMPY: dict[Path, float] = {}


def measure(case: Case, folder: Path, device: torch.device) -> dict:
    path = data_file(case, folder)
    load_before = os.getloadavg()[0]
    extra = ("--metrics", SPECTRAL) if case.kind == "numpy-spectra" else ()
    ours = run_analyze(path, device.type, *extra)
    row = {"case": case.name, "n": case.n, "d": case.d, "kind": case.kind,
           "reprdiag_s": ours["total_s"], "command_s": ours["command_s"],
           "peak_mb": ours["peak_mb"], "timings": ours["timings"], "solver": ours["solver"]}
    if case.kind == "uncertainty":
        unc = run_analyze(path, device.type, "--uncertainty")
        row.update(baseline="plain analyze", baseline_s=ours["total_s"],
                   reprdiag_s=unc["total_s"], command_s=unc["command_s"],
                   peak_mb=unc["peak_mb"], timings=unc["timings"])
    elif case.kind.startswith("numpy"):
        if path not in _NUMPY:  # one numpy run per file serves both rows
            _NUMPY[path] = numpy_spectra_seconds(path)
        what = "same metrics" if case.kind == "numpy-spectra" else "all metrics"
        row.update(baseline=f"numpy float64 spectra (reprdiag: {what})",
                   baseline_s=_NUMPY[path])
    else:
        rate = gram_gflops(case.d, device)
        parts = {"read": read_seconds(path), "2 Grams": 4.0 * case.n * case.d**2 / rate / 1e9}
        if case.kind == "small":
            parts["3 eigvalsh"] = 3 * eigvalsh_seconds(case.d, device)
            parts["ER lse"] = lse_seconds(min(case.n, 16384), case.d, device)
        row.update(baseline="floor: " + " + ".join(f"{k} {v:.2f}" for k, v in parts.items())
                   + f" (Gram {rate:.0f} GFLOP/s)", baseline_s=sum(parts.values()))
    row["load"] = (load_before, os.getloadavg()[0])
    return row


def render(rows: list[dict]) -> str:
    head = ("| case | N × d | reprdiag s (`total_s`) | command s | baseline | baseline s | "
            "ratio | peak RssAnon MB | load before/after |")
    lines = [head, "|---" * 9 + "|"]
    for r in rows:
        mark = " *" if max(r["load"]) > LOADED else ""
        lines.append(f"| {r['case']} | {r['n']:,} × {r['d']} | {r['reprdiag_s']:.2f} | "
                     f"{r['command_s']:.2f} | {r['baseline']} | {r['baseline_s']:.2f} | "
                     f"{r['reprdiag_s'] / r['baseline_s']:.2f}× | {r['peak_mb']:.0f} | "
                     f"{r['load'][0]:.2f} / {r['load'][1]:.2f}{mark} |")
    lines.append("")
    lines.append(f"`*` load average above {LOADED} during the row: the cores were shared, "
                 "times are upper bounds. ratio = reprdiag s / baseline s.")
    for r in rows:
        t = ", ".join(f"{k} {v:.2f}" for k, v in r["timings"].items())
        lines.append(f"- {r['case']}: {t}; er_entropy: {r['solver'].get('er_entropy', '-')}")
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--cases", default=",".join(c.name for c in CASES),
                   help="comma list of " + ", ".join(c.name for c in CASES))
    p.add_argument("--quick", action="store_true", help="small sizes (a smoke run)")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--dir", default="/tmp/reprdiag-bench", help="where the files are written")
    p.add_argument("--json", default=None, help="also write the rows here")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    device = torch.device(args.device)
    pool = {c.name: c for c in (QUICK if args.quick else CASES)}
    chosen = [pool[name] for name in args.cases.split(",") if name]
    print(f"# bench/floor.py on {device}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, {os.cpu_count()} CPUs", flush=True)
    rows = []
    for case in chosen:
        rows.append(measure(case, Path(args.dir) / ("quick" if args.quick else "full"),
                            device))
        print(f"  {case.name}: {rows[-1]['reprdiag_s']:.2f} s vs {rows[-1]['baseline_s']:.2f} s "
              f"(load {rows[-1]['load'][0]:.2f})", flush=True)
    print(render(rows))
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
