"""Benchmark reprdiag against the hardware floor and against what users do today.

    python bench/run.py --n 1000000 --d 768                # 1M×768, safetensors + HDF5
    python bench/run.py --n 650000,1300000,2600000 --d 768 --formats safetensors --baselines none
    python bench/run.py --quick                             # tiny smoke run (CI)

For each size: write the file(s), measure the floor on this machine (fp32 Gram GFLOP/s of a
large matmul, page-cached read GB/s of the file just written), run ``reprdiag.analyze`` with
every metric in a child process whose private memory (``RssAnon`` of /proc/PID/status) is
sampled, then each baseline the same way, and print one markdown table. Baselines whose
in-memory copy cannot fit are reported as such. The eigenvalues are checked against a float64
reference on the first rows (a sub-problem that fits in memory).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path[:0] = [str(BENCH), str(ROOT)]

import _baselines  # noqa: E402
import _data  # noqa: E402

SAMPLE_MS = 20
REFERENCE_ROWS = 100_000


# -- the floor ------------------------------------------------------------------------------
def matmul_gflops(d: int, rows: int = 32768, repeat: int = 3) -> float:
    """Best fp32 GFLOP/s of a Gram product XᵀX of the benchmark's shape."""
    x = torch.randn(rows, d)
    _ = x.T @ x
    best = min(_timed(lambda: x.T @ x) for _ in range(repeat))
    return 2.0 * rows * d * d / best / 1e9


def read_gbps(path: Path, block: int = 64 * 2**20) -> float:
    """GB/s of reading ``path`` (just written, so page-cached) into one reused buffer."""
    buf = bytearray(block)
    view = memoryview(buf)
    t0 = time.perf_counter()
    total = 0
    with open(path, "rb", buffering=0) as f:
        while (got := f.readinto(view)) > 0:
            total += got
    return total / (time.perf_counter() - t0) / 1e9


def _timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


# -- child processes ------------------------------------------------------------------------
def child_reprdiag(path: str, device: str) -> dict:
    """Run ``reprdiag.analyze`` with every metric; time each metric separately."""
    import reprdiag
    import reprdiag.pipeline as pipeline

    per_metric: dict[str, float] = {}
    compute = pipeline.compute

    def timed(stats, infos, options=None):
        out = {}
        for info in infos:
            t0 = time.perf_counter()
            out.update(compute(stats, [info], options))
            per_metric[info.name] = time.perf_counter() - t0
        return out

    pipeline.compute = timed
    t0 = time.perf_counter()
    report = reprdiag.analyze(path, device=device)
    total = time.perf_counter() - t0
    res = report.inputs[0]
    return {"seconds": total, "stages": res.timings, "per_metric": per_metric,
            "values": res.metrics, "solver": res.solver,
            "covariance": res.spectra["covariance"][:64]}


def child_baseline(name: str, path: str) -> dict:
    t0 = time.perf_counter()
    values = _baselines.BASELINES[name][0](Path(path))
    return {"seconds": time.perf_counter() - t0, "values": values}


def run_child(spec: dict, timeout: float) -> dict:
    """Run a child, sampling its RssAnon; returns its JSON plus ``peak_anon_mb``."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get(
        "PYTHONPATH", "")]))
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as tmp:
        out = Path(tmp.name)
    cmd = [sys.executable, str(BENCH / "run.py"), "--child", json.dumps(spec), "--child-out",
           str(out)]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True)
    peak, t0 = 0, time.perf_counter()
    while proc.poll() is None:
        peak = max(peak, _rss_anon_kb(proc.pid))
        if time.perf_counter() - t0 > timeout:
            proc.kill()
            proc.wait()
            return {"error": f"timed out after {timeout:.0f} s", "peak_anon_mb": peak / 1024}
        time.sleep(SAMPLE_MS / 1000)
    err = proc.stderr.read() if proc.stderr else ""
    try:
        if proc.returncode != 0:
            lines = err.strip().splitlines() or [f"exit {proc.returncode}"]
            return {"error": lines[-1][:120], "peak_anon_mb": peak / 1024}
        result = json.loads(out.read_text())
    finally:
        out.unlink(missing_ok=True)
    result["peak_anon_mb"] = peak / 1024
    print(f"  {spec.get('name', spec['kind'])}: {result['seconds']:.2f} s, peak RssAnon "
          f"{result['peak_anon_mb']:.0f} MB", file=sys.stderr, flush=True)
    return result


def _rss_anon_kb(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("RssAnon:"):
                return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0


def _available_bytes() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) * 1024
    return 0


# -- accuracy on a sub-problem --------------------------------------------------------------
def eigen_accuracy(n: int, d: int, device: str) -> dict[str, float]:
    """reprdiag (fp32 chunks, fp64 totals) vs numpy float64 on the first rows."""
    import reprdiag

    k = min(n, REFERENCE_ROWS)
    x = _data.first_rows(n, d, k)
    rep = reprdiag.analyze(torch.from_numpy(x), device=device, metrics=["vne"],
                           chunk_rows=8192).inputs[0]
    x64 = x.astype(np.float64)
    ref_cov = np.linalg.eigvalsh(np.cov(x64, rowvar=False))[::-1]
    z = x64 / np.linalg.norm(x64, axis=1, keepdims=True)
    ref_auto = np.linalg.eigvalsh(z.T @ z / k)[::-1]
    out = {"rows": float(k)}
    for name, ref in (("covariance", ref_cov), ("autocorrelation", ref_auto)):
        got = np.asarray(rep.spectra[name])
        m = min(len(got), len(ref))
        out[name] = float(np.max(np.abs(got[:m] - ref[:m]) / np.abs(ref[:m])))
    return out


# -- the table ------------------------------------------------------------------------------
def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return (f"{cpu}, {os.cpu_count()} cores, {mem:.0f} GiB RAM, torch {torch.__version__} "
            f"({torch.get_num_threads()} threads), Python {platform.python_version()}, "
            f"load average {os.getloadavg()[0]:.1f} at start")


def bench_size(n: int, d: int, fmt: str, args: argparse.Namespace, workdir: Path) -> list[dict]:
    path = workdir / f"bench_{n}x{d}{_data.SUFFIX[fmt]}"
    print(f"{n:,}×{d} {fmt}: writing {n * d * 4 / 1e9:.2f} GB", file=sys.stderr, flush=True)
    t0 = time.perf_counter()
    _data.WRITERS[fmt](path, n, d)
    write_s = time.perf_counter() - t0
    try:
        gbps = read_gbps(path)
        probe_rows = min(32768, max(n, 1024))
        before = matmul_gflops(d, rows=probe_rows)
        ours = run_child({"kind": "reprdiag", "path": str(path), "device": args.device},
                         args.timeout)
        after = matmul_gflops(d, rows=probe_rows)
        gflops = (before + after) / 2  # the machine may be shared: probe on both sides
        floor_gram = 4.0 * n * d * d / (gflops * 1e9)
        floor_read = n * d * 4 / (gbps * 1e9)
        floor = floor_gram + floor_read
        rows = []
        base = {"n": n, "d": d, "format": fmt, "file_gb": path.stat().st_size / 1e9,
                "write_s": write_s, "gflops": gflops, "gflops_before": before,
                "gflops_after": after, "read_gbps": gbps, "floor_s": floor,
                "floor_gram_s": floor_gram, "floor_read_s": floor_read}
        rows.append({**base, "method": "reprdiag", **ours})
        for name in _selected_baselines(args, fmt):
            per_elem = _baselines.BASELINES[name][1]
            need = n * d * per_elem
            if need > 0.8 * _available_bytes():
                rows.append({**base, "method": name, "error": f"cannot hold the data in "
                             f"memory (needs ~{need / 2**30:.1f} GiB)"})
                continue
            res = run_child({"kind": "baseline", "name": name, "path": str(path)},
                            args.timeout)
            rows.append({**base, "method": name, **res})
        return rows
    finally:
        if not args.keep:
            path.unlink(missing_ok=True)


def _selected_baselines(args: argparse.Namespace, fmt: str) -> list[str]:
    if args.baselines == "none" or fmt != args.formats.split(",")[0]:
        return []
    if args.baselines == "all":
        return list(_baselines.BASELINES)
    return [b for b in args.baselines.split(",") if b]


def _cell(row: dict, ours: dict) -> list[str]:
    if "error" in row:
        return ["—", "—", f"{row['peak_anon_mb']:.0f}" if row.get("peak_anon_mb") else "—",
                "—", "—", row["error"]]
    secs = row["seconds"]
    ratio = f"{secs / ours['seconds']:.1f}×" if "seconds" in ours and row is not ours else ""
    vs_floor = f"{secs / row['floor_s']:.2f}" if row is ours else ""
    note = ""
    if row is ours:
        st, pm = row["stages"], row["per_metric"]
        pair = pm.get("er_entropy", 0) + pm.get("partition_isotropy", 0)
        note = (f"read+moments {st['read_and_moments_s']:.1f} s, spectra "
                f"{st['spectra_s']:.1f} s, metrics {st['metrics_s']:.1f} s (pairwise "
                f"{pair:.1f} s = {100 * pair / secs:.0f}% of run)")
    else:
        shared = [k for k in row["values"] if k in ours.get("values", {})]
        if shared:
            diff = max(abs(row["values"][k] - ours["values"][k]) / max(abs(row["values"][k]),
                                                                         1e-12) for k in shared)
            note = f"max rel. diff of {', '.join(shared)} vs reprdiag: {diff:.1e}"
    cpu = f"{row['cpu_s']:.1f}" if "cpu_s" in row else "—"
    return [f"{secs:.2f}", cpu, f"{row['peak_anon_mb']:.0f}", ratio, vs_floor, note]


def table(rows: list[dict]) -> str:
    head = ["N", "d", "format", "method", "time s", "CPU s", "peak RssAnon MB", "× reprdiag",
            "÷ floor", "notes"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    ours: dict = {}
    for row in rows:
        if row["method"] == "reprdiag":
            ours = row
        cells = [f"{row['n']:,}", str(row["d"]), row["format"], row["method"], *_cell(row, ours)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def floors(rows: list[dict]) -> str:
    seen, out = set(), []
    for r in rows:
        key = (r["n"], r["d"], r["format"])
        if key in seen:
            continue
        seen.add(key)
        out.append(f"- {r['n']:,}×{r['d']} {r['format']} ({r['file_gb']:.2f} GB): Gram "
                   f"{r['gflops']:.1f} GFLOP/s (before {r['gflops_before']:.1f}, after "
                   f"{r['gflops_after']:.1f}), read {r['read_gbps']:.1f} GB/s → floor "
                   f"{r['floor_s']:.2f} s (Gram {r['floor_gram_s']:.2f} s + read "
                   f"{r['floor_read_s']:.2f} s)")
    return "\n".join(out)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", default="1000000", help="rows; a comma list runs several sizes")
    p.add_argument("--d", default="768", help="width; a comma list runs several widths")
    p.add_argument("--formats", default="safetensors,hdf5")
    p.add_argument("--baselines", default="all",
                   help="all, none, or a comma list of " + ", ".join(_baselines.BASELINES))
    p.add_argument("--device", default="auto")
    p.add_argument("--dir", default=None, help="where files are written (default: a temp dir)")
    p.add_argument("--keep", action="store_true", help="keep the generated files")
    p.add_argument("--timeout", type=float, default=1800.0, help="seconds per child")
    p.add_argument("--no-accuracy", action="store_true", help="skip the float64 check")
    p.add_argument("--json", default=None, help="also write all measurements here")
    p.add_argument("--quick", action="store_true", help="tiny sizes: a smoke test for CI")
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    p.add_argument("--child-out", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.quick:
        args.n, args.d, args.formats, args.timeout = "3000", "32", "safetensors", 300.0
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.child:
        spec = json.loads(args.child)
        result = (child_reprdiag(spec["path"], spec["device"]) if spec["kind"] == "reprdiag"
                  else child_baseline(spec["name"], spec["path"]))
        use = resource.getrusage(resource.RUSAGE_SELF)
        result["cpu_s"] = use.ru_utime + use.ru_stime
        Path(args.child_out).write_text(json.dumps(result))
        return 0
    print(f"machine: {machine()}")
    if "isoscore-pkg" in _selected_baselines(args, args.formats.split(",")[0]) \
            and not _baselines.isoscore_available():
        print("note: the isoscore package is not installed; its algorithm is reimplemented "
              "in bench/_baselines.py")
    rows: list[dict] = []
    accuracy = []
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        for d in (int(v) for v in args.d.split(",")):
            for n in (int(v) for v in args.n.split(",")):
                for fmt in args.formats.split(","):
                    rows += bench_size(n, d, fmt, args, Path(tmp))
                if not args.no_accuracy:
                    accuracy.append((n, d, eigen_accuracy(n, d, args.device)))
    print(floors(rows))
    print()
    print(table(rows))
    for n, d, acc in accuracy:
        print(f"\neigenvalue accuracy {n:,}×{d} (first {acc['rows']:,.0f} rows, fp32 chunks + "
              f"fp64 totals vs numpy float64): max relative error covariance "
              f"{acc['covariance']:.1e}, autocorrelation {acc['autocorrelation']:.1e}")
    if args.json:
        Path(args.json).write_text(json.dumps({"machine": machine(), "rows": rows,
                                               "accuracy": accuracy}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
