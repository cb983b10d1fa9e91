"""One rank of the multi-process scenarios in tests/distributed/test_ranks.py (not a test module).

Run as ``python tests/dist_worker.py SPEC.json OUT_DIR`` (or ``--stall sleep|exit OUT_DIR``,
see :func:`stall`, or ``--monitor OUT_DIR``, see :func:`monitor`) with torchrun's environment
variables (RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT). Joins a gloo group of every rank
plus a sub-group of ranks 0–1, runs each scenario of SPEC through ``reprdiag.analyze`` (or,
for a ``model`` scenario, ``analyze_model`` / ``extract``) on the group its ``world`` names,
and writes what this rank saw to ``OUT_DIR/rank{R}.json``.
"""

from __future__ import annotations

import json
import os
import sys
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

import reprdiag
from reprdiag.api import analyze_model
from reprdiag.distributed import DistributedContext
from reprdiag.engine import StreamOptions, check_shape
from reprdiag.errors import InputError, ResourceError
from reprdiag.loaders import TensorSource
from reprdiag.models.extract import ModelRun, extract
from reprdiag.pipeline import gather_sources


class Faulty(TensorSource):
    """n random rows of which those from ``bad_from`` on fail to read (one rank's share)."""

    def __init__(self, n: int, bad_from: int, kind: str):
        super().__init__(torch.randn(n, 4, dtype=torch.float64), "faulty")
        self.bad_from, self.kind = bad_from, kind

    def read(self, start: int, stop: int) -> torch.Tensor:
        if stop > self.bad_from:
            if self.kind == "input":
                raise InputError(f"row {self.bad_from} is unreadable", source="faulty.bin",
                                 hint="re-copy the shard")
            raise ValueError(f"boom at row {self.bad_from}")
        return super().read(start, stop)


def run_scenario(scenario: dict[str, Any], ctx: Any) -> dict[str, Any]:
    """The report (as a dict) or the error one scenario gives on this rank."""
    try:
        if "tensor" in scenario:
            reprdiag.analyze(torch.zeros(4, 2), distributed=ctx, device="cpu")
            return {"ok": True}
        if "faulty" in scenario:
            spec = scenario["faulty"]
            source = Faulty(spec["n"], spec["bad_from"], spec["kind"])
            list(ctx.accumulate_each(lambda: [source], StreamOptions(chunk_rows=10),
                                     check=check_shape))
            return {"ok": True}
        if "model" in scenario:
            return run_model(scenario, ctx)
        if "fail_on" in scenario and ctx.rank == scenario["fail_on"]:
            return _with_failing_metrics(scenario, ctx)
        report = reprdiag.analyze(scenario["files"], distributed=ctx, device="cpu",
                                  **scenario.get("options", {}))
        out = report.to_dict()
        if scenario.get("index"):
            out["sample_index"] = _sample_index(scenario, ctx)
        return out
    except Exception as exc:
        return {"error": type(exc).__name__, "message": str(exc),
                "all_ranks": bool(getattr(exc, "all_ranks", False))}


def _with_failing_metrics(scenario: dict[str, Any], ctx: Any) -> dict[str, Any]:
    """The scenario on a rank whose metric step (``fail_in``: ``summarize``, or ``compute``
    in the jackknife's blocks) runs out of device memory, on this rank only."""
    import reprdiag.pipeline
    import reprdiag.uncertainty.estimator

    module = (reprdiag.pipeline if scenario["fail_in"] == "summarize"
              else reprdiag.uncertainty.estimator)
    real = getattr(module, scenario["fail_in"])

    def failing(*args: Any, **kwargs: Any) -> Any:
        raise ResourceError("out of memory on cuda:1 in the spectra", source="rank-local")

    setattr(module, scenario["fail_in"], failing)
    try:
        reprdiag.analyze(scenario["files"], distributed=ctx, device="cpu",
                         **scenario.get("options", {}))
        return {"ok": True}
    except Exception as exc:
        return {"error": type(exc).__name__, "message": str(exc),
                "all_ranks": bool(getattr(exc, "all_ranks", False))}
    finally:
        setattr(module, scenario["fail_in"], real)


def run_model(scenario: dict[str, Any], ctx: Any) -> dict[str, Any]:
    """``analyze_model`` of the scenario's ``model`` run (a report dict), or its ``extract``."""
    run = ModelRun(**scenario["model"])
    if "extract" in scenario:
        return {"out": scenario["extract"],
                "written": extract(run, scenario["extract"], distributed=ctx)}
    return analyze_model(run, distributed=ctx, **scenario.get("options", {})).to_dict()


def _sample_index(scenario: dict[str, Any], ctx: Any) -> list[list[int]]:
    """Global row indices of each input's merged sample."""
    opts = scenario.get("options", {})
    stream = StreamOptions(precision=opts.get("precision", "auto"),
                           sample_size=opts.get("sample_size", 16384),
                           seed=opts.get("seed", 0), nan=opts.get("nan", "error"),
                           chunk_rows=opts.get("chunk_rows"))
    pairs = ctx.accumulate_each(lambda: gather_sources(scenario["files"],
                                                       concat=opts.get("concat", False)),
                                stream)
    return [acc.reservoir.index.tolist() for _, acc in pairs]


def stall(how: str, out_dir: Path) -> None:
    """Rank 1 stops answering (``sleep``: for longer than the 3 s timeout; ``exit``: dies)
    after joining; rank 0 records what its next collective raised and how long it took."""
    dist.init_process_group("gloo", timeout=timedelta(seconds=3))
    ctx = DistributedContext(torch.device("cpu"))
    if ctx.rank == 1:
        if how == "exit":
            os._exit(0)
        time.sleep(12)
        os._exit(0)
    t0 = time.perf_counter()
    try:
        with ctx.agree():
            pass
        outcome: dict[str, Any] = {"ok": True}
    except Exception as exc:
        outcome = {"error": type(exc).__name__, "message": str(exc),
                   "exit_code": getattr(exc, "exit_code", None)}
    outcome["seconds"] = time.perf_counter() - t0
    (out_dir / "rank0.json").write_text(json.dumps(outcome))
    os._exit(0)  # leaving the group would wait for the silent rank


def monitor(out_dir: Path) -> None:
    """Each rank feeds its own batches (6 steps of 40 + 10·rank rows) to two distributed
    monitors (reset and cumulative windows, evaluated every 3 steps); writes its batches and
    both histories to ``OUT_DIR/monitor{R}.pt``."""
    from reprdiag.monitor import SpectralMonitor

    torch.set_num_threads(1)
    dist.init_process_group("gloo")
    rank = dist.get_rank()
    gen = torch.Generator().manual_seed(100 + rank)
    batches = [torch.randn(40 + 10 * rank, 12, generator=gen) * torch.linspace(3, 0.1, 12) + 2
               for _ in range(6)]
    common = {"metrics": ["vne", "rankme", "avg_cosine", "er_entropy"], "precision": "float64",
              "sample_size": 1000, "distributed": True}
    monitors = {window: SpectralMonitor(3, window=window, csv=out_dir / f"{window}{rank}.csv",
                                        **common) for window in ("reset", "cumulative")}
    # labels/pair (issue 19): rank 0 sees classes 0-2, rank 1 classes 1-3 (the merge unites)
    labels = [torch.randint(rank, rank + 3, (b.shape[0],), generator=gen) for b in batches]
    pairs = [b + 0.3 * torch.randn(b.shape, generator=gen) for b in batches]
    labelled = SpectralMonitor(3, metrics=["nc1", "alignment", "uniformity"],
                               precision="float64", sample_size=1000, distributed=True)
    for step, batch in enumerate(batches):
        for mon in monitors.values():
            mon.update(batch, step=step)
        labelled.update(batch, step=step, labels=labels[step], pair=pairs[step])
    torch.save({"batches": batches, "labels": labels, "pairs": pairs,
                "labelled": labelled.history,
                **{w: m.history for w, m in monitors.items()}}, out_dir / f"monitor{rank}.pt")
    dist.destroy_process_group()


def main() -> None:
    if sys.argv[1] == "--stall":
        stall(sys.argv[2], Path(sys.argv[3]))
    if sys.argv[1] == "--monitor":
        monitor(Path(sys.argv[2]))
        return
    spec = json.loads(Path(sys.argv[1]).read_text())
    out_dir = Path(sys.argv[2])
    torch.set_num_threads(1)
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    pair = dist.new_group([0, 1])
    contexts = {world: DistributedContext(torch.device("cpu"))}
    if rank < 2:
        contexts[2] = DistributedContext(torch.device("cpu"), group=pair)
    results = {}
    for name, scenario in spec.items():
        ctx = contexts.get(scenario["world"])
        if ctx is not None:
            results[name] = run_scenario(scenario, ctx)
    (out_dir / f"rank{rank}.json").write_text(json.dumps(results))
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
