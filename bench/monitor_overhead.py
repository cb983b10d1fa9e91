"""Training-step time with and without a SpectralMonitor, side by side in one process.

A small MLP encoder (in → 2·d → d) is trained with SGD on random data. For each embedding
width d, three variants of the same step run interleaved, so machine noise hits them alike:
no monitor; a monitor that only accumulates (every_n_steps large, so update() is the cost:
two d×d Gram products of the batch); and a monitor that also evaluates its default metrics
every N steps (the cost amortized per step). Median per-step milliseconds are printed.

    python bench/monitor_overhead.py                 # d = 128, 512; batch 256
    python bench/monitor_overhead.py --dims 64 256 1024 --batch 512 --every 50 --steps 200
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch

from reprdiag.monitor import SpectralMonitor


def make_step(d: int, batch: int, device: torch.device,
              monitor: SpectralMonitor | None) -> Callable[[], None]:
    torch.manual_seed(0)
    d_in = 2 * d
    model = torch.nn.Sequential(torch.nn.Linear(d_in, 2 * d), torch.nn.GELU(),
                                torch.nn.Linear(2 * d, d)).to(device)
    opt = torch.optim.SGD(model.parameters(), lr=1e-3)
    x = torch.randn(batch, d_in, device=device)

    def step() -> None:
        z = model(x)
        loss = (z - 1.0).pow(2).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if monitor is not None:
            monitor.update(z)

    return step


def timed(step: Callable[[], None], device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - t0) * 1e3


def bench(d: int, batch: int, every: int, steps: int, device: torch.device) -> list[float]:
    variants = {
        "none": make_step(d, batch, device, None),
        "update": make_step(d, batch, device, SpectralMonitor(every_n_steps=10**9)),
        "log": make_step(d, batch, device, SpectralMonitor(every_n_steps=every)),
    }
    for step in variants.values():  # warm-up
        for _ in range(3):
            step()
    times: dict[str, list[float]] = {k: [] for k in variants}
    for i in range(steps):
        for name in (list(variants) if i % 2 == 0 else reversed(list(variants))):
            times[name].append(timed(variants[name], device))
    med = {k: statistics.median(v) for k, v in times.items()}
    mean_log = statistics.fmean(times["log"])  # the evaluations are rare spikes: amortize
    return [med["none"], med["update"], mean_log, statistics.fmean(times["none"])]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dims", type=int, nargs="+", default=[128, 512])
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--every", type=int, default=50, help="every_n_steps of the log run")
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch CPU threads (1: steadier timings on a shared machine)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    print(f"device {device}, torch threads {torch.get_num_threads()}, batch {args.batch}, "
          f"{args.steps} steps, default metrics every {args.every} steps")
    head = ("d", "step ms (none)", "+update ms (median)", "overhead", "+update+log ms (mean)",
            "none ms (mean)", "overhead (mean)")
    print("| " + " | ".join(head) + " |")
    print("|" + "|".join("---" for _ in head) + "|")
    for d in args.dims:
        none, upd, log_mean, none_mean = bench(d, args.batch, args.every, args.steps, device)
        print(f"| {d} | {none:.3f} | {upd:.3f} | {100 * (upd / none - 1):+.1f}% | "
              f"{log_mean:.3f} | {none_mean:.3f} | {100 * (log_mean / none_mean - 1):+.1f}% |")


if __name__ == "__main__":
    main()
