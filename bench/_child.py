"""Run a benchmark command in a child process: its stdout, wall time and peak anonymous memory.

Shared by the bench scripts that measure the command a user runs (``python -m reprdiag ...``)
rather than a function in-process. The peak is ``RssAnon`` from ``/proc/PID/status`` sampled
every 20 ms (private memory: file pages of memory-mapped inputs are not counted).
"""

from __future__ import annotations

import os
import subprocess
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def rss_anon_mb(pid: int) -> float:
    """A process's private resident memory in MB (0 when it has already exited)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("RssAnon:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def run_child(cmd: list[str]) -> tuple[str, float, float]:
    """(stdout, wall seconds, peak RssAnon MB) of ``cmd``, with this checkout first on the path."""
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env)
    peak = [0.0]

    def sample() -> None:
        while proc.poll() is None:
            peak[0] = max(peak[0], rss_anon_mb(proc.pid))
            time.sleep(0.02)

    watcher = threading.Thread(target=sample, daemon=True)
    watcher.start()
    out, err = proc.communicate()
    wall = time.perf_counter() - t0
    watcher.join()
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[:5])} … exited {proc.returncode}: {err.strip()}")
    return out, wall, peak[0]
