"""Linear CKA of two large row-aligned inputs: `reprdiag similarity` against ckatorch.

    python bench/cka.py                         # 1,000,000 × 768, two files (issue 19)
    python bench/cka.py --n 20000 --d 64        # a smoke run (tests/test_bench.py)

Two float32 safetensors files with the same rows: A is :mod:`_data`'s benchmark matrix X,
B = 0.8·XQ + 0.6·s·G (Q a fixed random rotation, G fresh Gaussian noise, s A's column
scales), written slab by slab. Each method runs in a child process (wall time, and the
largest ``RssAnon`` of ``/proc/PID/status`` sampled every 20 ms: memory-mapped file pages do
not count):

- ``reprdiag``: ``python -m reprdiag similarity A B --format json`` (one streaming pass,
  cross-moments, float64 products by default; ``--precision float32`` as a second row);
- ``ckatorch``: ckatorch 1.0.3's minibatch CKA (``ckatorch.core.cka_batch``, Nguyen et al.
  2021: the unbiased HSIC₁ summed over minibatches of ``--batch`` rows, linear kernel,
  float64), fed the same memory-mapped rows, ``--stack`` minibatches per call. Its full-data
  estimator (``cka_base``) builds N×N Gram matrices: 8 TB at N = 10⁶, not run.

The minibatch estimator is a different quantity (the ratio of summed minibatch HSIC₁s, whose
expectation differs from the full-data CKA at finite batch size), so both values are printed.
``pip install ckatorch==1.0.3`` into the environment to run its row; reprdiag does not depend
on it. ``os.getloadavg()`` is printed beside every row; rows above 0.5 are marked ``*``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np
import torch

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path[:0] = [str(BENCH)]

import _data  # noqa: E402
from _child import run_child  # noqa: E402

LOADED = 0.5

CKATORCH = """
import json, sys, time
import torch
from safetensors import safe_open
from ckatorch.core import cka_batch
from ckatorch.hsic import hsic1

a, b, batch, stack = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
t0 = time.perf_counter()
xy = xx = yy = 0.0
with safe_open(a, "pt") as fa, safe_open(b, "pt") as fb:
    sa, sb = fa.get_slice("emb"), fb.get_slice("emb")
    n = sa.get_shape()[0]
    step = batch * stack
    for lo in range(0, n - batch + 1, step):
        k = min(stack, (n - lo) // batch)
        x = sa[lo:lo + k * batch].reshape(k, batch, -1).double()
        y = sb[lo:lo + k * batch].reshape(k, batch, -1).double()
        gx, gy = torch.bmm(x, x.transpose(1, 2)), torch.bmm(y, y.transpose(1, 2))
        parts = [float(hsic1(gx, gy).sum()), float(hsic1(gx, gx).sum()),
                 float(hsic1(gy, gy).sum())]
        xy, xx, yy = xy + parts[0], xx + parts[1], yy + parts[2]
    # cka_batch's arithmetic (sum of HSIC1 over minibatches), accumulated over every call
    cka = xy / (xx * yy) ** 0.5
    seconds = time.perf_counter() - t0
    # the library's own call on the last stack gives that stack's ratio
    same = abs(float(cka_batch(x, y)) - parts[0] / (parts[1] * parts[2]) ** 0.5)
print(json.dumps({"cka": cka, "seconds": seconds, "check": same}))
"""


def write_pair(folder: Path, n: int, d: int) -> tuple[Path, Path]:
    """A (the benchmark matrix) and B = 0.8·XQ + 0.6·s·G, row-aligned, written once."""
    folder.mkdir(parents=True, exist_ok=True)
    a, b = folder / f"{n}x{d}.safetensors", folder / f"{n}x{d}-pair.safetensors"
    if not a.exists() or a.stat().st_size < n * d * 4:
        _data.write_safetensors(a, n, d)
    if not b.exists() or b.stat().st_size < n * d * 4:
        gen = torch.Generator().manual_seed(7)
        q = torch.linalg.qr(torch.randn(d, d, generator=gen))[0]
        scale = torch.arange(1, d + 1, dtype=torch.float32) ** -0.75
        header = json.dumps({_data.KEY: {"dtype": "F32", "shape": [n, d],
                                         "data_offsets": [0, n * d * 4]}}).encode()
        header += b" " * (-len(header) % 8)
        with open(b, "wb") as f:
            f.write(len(header).to_bytes(8, "little") + header)
            for slab in _data.slabs(n, d):
                x = torch.from_numpy(slab)
                y = 0.8 * (x @ q) + 0.6 * scale * torch.randn(x.shape, generator=gen)
                f.write(y.numpy().astype(np.float32).tobytes())
    return a, b


def reprdiag_row(a: Path, b: Path, precision: str) -> dict:
    out, wall, peak = run_child([sys.executable, "-m", "reprdiag", "similarity", str(a),
                                 str(b), "--format", "json", "--device", "cpu",
                                 "--precision", precision])
    report = json.loads(out)
    return {"method": f"reprdiag similarity --precision {precision}",
            "cka": report["cka_linear"]["matrix"][0][1], "seconds": wall, "peak_mb": peak,
            "note": f"full-data linear CKA from one pass (N = {report['n']:,})"}


def ckatorch_row(a: Path, b: Path, batch: int, stack: int) -> dict:
    out, wall, peak = run_child([sys.executable, "-c", CKATORCH, str(a), str(b), str(batch),
                                 str(stack)])
    got = json.loads(out)
    if got["check"] > 1e-9:
        raise RuntimeError(f"ckatorch's cka_batch disagrees with its summed HSIC1: {got}")
    return {"method": "ckatorch 1.0.3 minibatch (cka_batch / hsic1)", "cka": got["cka"],
            "seconds": wall, "peak_mb": peak,
            "note": f"minibatches of {batch} rows, {stack} per call, float64"}


def render(rows: list[dict], n: int, d: int) -> str:
    lines = [f"Two {n:,} × {d} float32 safetensors inputs (row-aligned).", "",
             "| method | linear CKA | wall s | peak RssAnon MB | load before/after | note |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        mark = " *" if max(r["load"]) > LOADED else ""
        lines.append(f"| {r['method']} | {r['cka']:.6f} | {r['seconds']:.1f} | "
                     f"{r['peak_mb']:.0f} | {r['load'][0]:.2f} / {r['load'][1]:.2f}{mark} | "
                     f"{r['note']} |")
    lines.append("")
    lines.append(f"`*` load average above {LOADED}: the cores were shared, times are upper "
                 "bounds.")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=1_000_000)
    p.add_argument("--d", type=int, default=768)
    p.add_argument("--batch", type=int, default=256, help="ckatorch minibatch rows")
    p.add_argument("--stack", type=int, default=16, help="ckatorch minibatches per call")
    p.add_argument("--dir", default="/tmp/reprdiag-bench/full")
    p.add_argument("--methods", default="reprdiag,reprdiag32,ckatorch")
    args = p.parse_args(argv)
    a, b = write_pair(Path(args.dir), args.n, args.d)
    print(f"# bench/cka.py: torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"{os.cpu_count()} CPUs", flush=True)
    runs = {"reprdiag": lambda: reprdiag_row(a, b, "float64"),
            "reprdiag32": lambda: reprdiag_row(a, b, "float32"),
            "ckatorch": lambda: ckatorch_row(a, b, args.batch, args.stack)}
    rows = []
    for name in args.methods.split(","):
        before = os.getloadavg()[0]
        row = runs[name]()
        row["load"] = (before, os.getloadavg()[0])
        rows.append(row)
        print(f"  {row['method']}: {row['cka']:.6f} in {row['seconds']:.1f} s, "
              f"{row['peak_mb']:.0f} MB (load {before:.2f})", flush=True)
    print(render(rows, args.n, args.d))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
