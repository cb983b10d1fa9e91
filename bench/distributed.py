"""One process against W torchrun ranks on the same shards, side by side: where the time goes.

Writes S float32 row shards of an N × d dataset (a random rotation of a power-law spectrum),
then times, for each configuration, the three phases of ``analyze --concat``:

* ``pass``: reading the rows and streaming them into moments and the row sample (each rank
  its own shards; the maximum over ranks is shown);
* ``merge``: the exact merge (all_reduce of the float64 moments, gather of the sample),
  timed after a barrier so that it excludes waiting for the slowest rank; zero for one
  process;
* ``metrics``: spectra and every metric (every rank computes them; rank 0's time), and with
  ``--blocks K`` the jackknife's K re-evaluations (spread over the ranks, K/W each).

Configurations: one process with 1 thread, one process with T threads, and W ranks with T/W
threads each (the same cores; gloo on CPUs, NCCL with ``--device cuda``). The last column
is the largest relative difference of any metric from the one-process run (``--precision
float64``: ~1e-12; default precision: ~1e-6).

    python bench/distributed.py                          # N = 400k, d = 256, 4 shards, W = 2
    python bench/distributed.py --rows 2000000 --dim 768 --shards 8 --ranks 4 --threads 8
    python bench/distributed.py --device cuda --ranks 1 --threads 8   # NCCL, one GPU
"""

from __future__ import annotations

import argparse
import json
import math
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from reprdiag.config import AnalysisConfig
from reprdiag.distributed import DistributedContext
from reprdiag.engine import StreamOptions, accumulate
from reprdiag.pipeline import gather_sources, summarize


def write_shards(folder: Path, n: int, d: int, shards: int, seed: int = 0) -> list[str]:
    """S shards of rows x = g · diag(i^-1/2) · Q + 1 (g Gaussian, Q a random rotation)."""
    gen = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(d, d, generator=gen, dtype=torch.float64))
    scale = torch.arange(1, d + 1, dtype=torch.float64).pow(-0.5)
    basis = (scale[:, None] * q).float()
    paths = []
    for i in range(shards):
        lo, hi = n * i // shards, n * (i + 1) // shards
        rows = torch.randn(hi - lo, d, generator=gen) @ basis + 1.0
        path = folder / f"shard-{i:03d}.safetensors"
        save_file({"emb": rows.contiguous()}, str(path))
        paths.append(str(path))
    return paths


def clock(device: torch.device) -> float:
    """Seconds now, after the device's queued work (CUDA runs asynchronously)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter()


def phases(files: list[str], precision: str, blocks: int, device: torch.device,
           ctx: DistributedContext | None) -> tuple[dict[str, float], dict[str, float]]:
    """(seconds per phase, metric values) of one analysis, in this process."""
    source = gather_sources(files, concat=True)[0]
    opts = StreamOptions(device, precision, blocks=blocks)
    t0 = clock(device)
    if ctx is None:
        acc = accumulate(source, opts)
        seconds = {"pass": clock(device) - t0, "merge": 0.0}
    else:
        local = ctx.accumulate(source, opts)
        seconds = {"pass": clock(device) - t0}
        ctx.all_gather(None)  # wait for the slowest rank, so "merge" is the merge alone
        t1 = clock(device)
        acc = ctx.merge(local)
        seconds["merge"] = clock(device) - t1
    t2 = clock(device)
    result = summarize(source, acc, AnalysisConfig(),
                       block_map=ctx.map_blocks if ctx is not None else None)
    seconds["metrics"] = clock(device) - t2
    return seconds, result.metrics


def worker(files: list[str], precision: str, blocks: int, device: str, out: Path) -> None:
    """One rank: time the phases, gather the pass times, rank 0 writes them (NCCL when the
    ranks compute on GPUs, gloo on CPUs)."""
    ctx = DistributedContext.from_env(torch.device(device), "auto")
    try:
        seconds, metrics = phases(files, precision, blocks, ctx.device, ctx)
        passes = ctx.all_gather(seconds["pass"])
        if ctx.rank == 0:
            seconds["pass"] = max(passes)
            out.write_text(json.dumps({"seconds": seconds, "metrics": metrics,
                                       "backend": ctx.backend}))
    finally:
        ctx.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def run_ranks(files: list[str], args: argparse.Namespace, threads: int, folder: Path
              ) -> tuple[dict[str, Any], float]:
    """Launch ``args.ranks`` ranks with torchrun; (what rank 0 wrote, wall seconds)."""
    out = folder / "ranks.json"
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(args.ranks),
           "--master-port", str(free_port()), __file__, "--worker", "--precision",
           args.precision, "--blocks", str(args.blocks), "--device", args.device, "--out",
           str(out), *files]
    t0 = time.perf_counter()
    subprocess.run(cmd, env=env, check=True, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    return json.loads(out.read_text()), wall


def max_rel_diff(a: dict[str, float], b: dict[str, float]) -> float:
    diffs = [abs(a[k] - b[k]) / max(abs(b[k]), 1e-300) for k in b
             if math.isfinite(b[k]) and k in a and math.isfinite(a[k])]
    return max(diffs, default=math.nan)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("files", nargs="*")
    parser.add_argument("--rows", type=int, default=400_000)
    parser.add_argument("--dim", type=int, default=256)
    parser.add_argument("--shards", type=int, default=4)
    parser.add_argument("--ranks", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2, help="cores to use in all")
    parser.add_argument("--precision", default="auto")
    parser.add_argument("--blocks", type=int, default=0,
                        help="K jackknife blocks (--uncertainty); 0: off")
    parser.add_argument("--device", default="cpu", help="cpu|cuda (each rank: cuda:LOCAL_RANK)")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.files, args.precision, args.blocks, args.device, args.out)
        return
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        files = write_shards(folder, args.rows, args.dim, args.shards)
        rows: list[tuple[str, dict[str, float], float, dict[str, float]]] = []
        reference: dict[str, float] = {}
        for threads in sorted({1, args.threads}):
            torch.set_num_threads(threads)
            t0 = time.perf_counter()
            seconds, metrics = phases(files, args.precision, args.blocks,
                                      torch.device(args.device), None)
            reference = reference or metrics
            rows.append((f"1 process × {threads} thread(s)", seconds,
                         time.perf_counter() - t0, metrics))
        per_rank = max(1, args.threads // args.ranks)
        ranks, wall = run_ranks(files, args, per_rank, folder)
        rows.append((f"{args.ranks} ranks × {per_rank} thread(s) ({ranks['backend']})",
                     ranks["seconds"], wall, ranks["metrics"]))
    print(f"N = {args.rows:,}, d = {args.dim}, {args.shards} shards, precision "
          f"{args.precision}, jackknife blocks {args.blocks}, device {args.device}, "
          f"torch {torch.__version__}")
    print(f"{'configuration':<34}{'pass s':>9}{'merge s':>9}{'metrics s':>11}"
          f"{'wall s':>9}{'max rel diff':>14}")
    for name, sec, wall_s, values in rows:
        print(f"{name:<34}{sec['pass']:>9.2f}{sec['merge']:>9.3f}{sec['metrics']:>11.2f}"
              f"{wall_s:>9.2f}{max_rel_diff(values, reference):>14.2e}")
    print("wall s of the ranks includes torchrun's start-up and each rank's imports.")


if __name__ == "__main__":
    main()
