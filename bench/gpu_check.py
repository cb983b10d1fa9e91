"""One command for the first GPU machine: the CUDA tests, then bench/floor.py on CUDA.

    python bench/gpu_check.py             # CUDA machine: about 4–8 minutes; prints the
                                          # figures for bench/RESULTS.md ("GPU" section)
    python bench/gpu_check.py --dry-run   # any machine: the same steps on the CPU with
                                          # --quick sizes (the CUDA tests skip); tested in CI

Steps: (1) what the device is; (2) ``pytest tests/test_cuda.py`` (CUDA against CPU: float64 to
1e-10, default precision to 1e-4, ER entropy's float32 path on CUDA, chunk buffers allocated
once, jackknife SEs) plus the engine/API path tests; (3) ``bench/floor.py --device cuda``
over every case (1M × 768, 20k × 384, --uncertainty at d = 384 and 768, 30k × 4096), rows
with load average beside them. Each step has its own time limit so the whole stays under
8 minutes; a step that fails or runs out of time is reported and the next one still runs.
Exit status: 0 when every step passed.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def step(name: str, cmd: list[str], limit: float) -> bool:
    print(f"\n## {name}\n$ {' '.join(cmd)}", flush=True)
    t0 = time.perf_counter()
    try:
        code = subprocess.run(cmd, cwd=ROOT, timeout=limit).returncode
    except subprocess.TimeoutExpired:
        print(f"-> stopped after {limit:.0f} s", flush=True)
        return False
    print(f"-> exit {code} in {time.perf_counter() - t0:.1f} s", flush=True)
    return code == 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dry-run", action="store_true", help="CPU, --quick sizes")
    p.add_argument("--json", default=None, help="write the bench rows here")
    args = p.parse_args(argv)
    device = "cpu" if args.dry_run else "cuda"
    py = sys.executable
    probe = ("import torch; ok = torch.cuda.is_available(); print('torch', torch.__version__, "
             "'cuda', torch.version.cuda, torch.cuda.get_device_name(0) if ok else 'no GPU')")
    ok = step("device", [py, "-c", probe], 60)
    ok &= step("CUDA and path tests", [py, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                                       "tests/test_cuda.py", "tests/test_engine.py",
                                       "tests/test_api.py"], 150 if args.dry_run else 180)
    bench = [py, "bench/floor.py", "--device", device]
    if args.dry_run:
        bench.append("--quick")
    if args.json:
        bench += ["--json", args.json]
    ok &= step("bench on " + device, bench, 300)
    print("\nall steps passed" if ok else "\nsome step failed (see above)")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
