"""Real ranks on loopback for the multi-process tests: plain subprocesses given torchrun's
environment (gloo, one node), and the check that a rank's report equals one process's."""

from __future__ import annotations

import json
import math
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import reprdiag
from tests.helpers import run_cli_env

WORKER = Path(__file__).with_name("dist_worker.py")


def free_port() -> int:
    """A TCP port free on loopback now (the rendezvous port of one launch)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def rank_env(rank: int, world: int, port: int) -> dict[str, str]:
    """What torchrun sets for a worker, on one node."""
    env = run_cli_env()
    env.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank),
               LOCAL_WORLD_SIZE=str(world), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port),
               TORCHELASTIC_RUN_ID="reprdiag-test", OMP_NUM_THREADS="1",
               REPRDIAG_DIST_TIMEOUT="90")
    return env


def run_ranks(args: list[str], world: int, cwds: list[Path] | None = None
              ) -> list[subprocess.CompletedProcess[str]]:
    """Start ``world`` ranks of ``python ARGS`` (rank r in ``cwds[r]``, if given) and wait
    for all of them."""
    port = free_port()
    procs = [subprocess.Popen([sys.executable, *args], env=rank_env(r, world, port),
                              cwd=cwds[r] if cwds else None, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
             for r in range(world)]
    done = []
    for p in procs:
        out, err = p.communicate(timeout=150)
        done.append(subprocess.CompletedProcess(p.args, p.returncode, out, err))
    return done


def run_worker(spec: dict[str, Any], tmp: Path, world: int = 3) -> list[dict[str, Any]]:
    """Run every scenario of ``spec`` once on ``world`` gloo ranks of tests/dist_worker.py
    (and a 2-rank sub-group); each rank's ``{scenario: report dict or error}``."""
    (tmp / "spec.json").write_text(json.dumps(spec))
    out = tmp / "out"
    out.mkdir()
    runs = run_ranks([str(WORKER), str(tmp / "spec.json"), str(out)], world)
    assert [r.returncode for r in runs] == [0] * world, [r.stderr[-2000:] for r in runs]
    return [json.loads((out / f"rank{r}.json").read_text()) for r in range(world)]


def assert_same(single: reprdiag.Report, multi: dict[str, Any], rtol: float) -> None:
    """``multi`` (a report dict from a rank) has ``single``'s rows, sample sizes, metrics
    and spectra, to ``rtol`` relative."""
    assert len(single.inputs) == len(multi["inputs"])
    for one, many in zip(single.inputs, multi["inputs"], strict=True):
        assert (one.n, one.d, one.sample_size, one.rows_dropped, one.zero_rows) == (
            many["n"], many["d"], many["sample_size"], many["rows_dropped"], many["zero_rows"])
        for name, value in one.metrics.items():
            got = many["metrics"][name]
            if math.isnan(value):  # undefined (e.g. too few rows): null in JSON
                assert got is None or math.isnan(got), name
                continue
            assert got is not None, name
            assert got == pytest.approx(value, rel=rtol, abs=1e-300), name
        for kind, values in one.spectra.items():
            np.testing.assert_allclose(many["spectra"][kind], values, rtol=rtol,
                                       atol=rtol * max(values))


def assert_same_uncertainty(single: reprdiag.Report, multi: dict[str, Any]) -> None:
    """``multi`` has ``single``'s jackknife blocks, estimates and spectrum standard errors
    (to 1e-8: each estimate differences K leave-one-block-out metric values)."""
    for one, many in zip(single.inputs, multi["inputs"], strict=True):
        assert one.uncertainty_method["blocks"] == many["uncertainty_method"]["blocks"]
        assert set(one.uncertainty) == set(many["uncertainty"]) and "vne" in one.uncertainty
        for metric, est in one.uncertainty.items():
            for field, value in est.items():
                got = many["uncertainty"][metric][field]
                if got is None:  # JSON null: not estimated (a first-order spectral bias)
                    assert math.isnan(value), (metric, field)
                    continue
                assert got == pytest.approx(value, rel=1e-8, abs=1e-12), (metric, field)
        np.testing.assert_allclose(many["spectra_se"]["covariance"],
                                   one.spectra_se["covariance"], rtol=1e-8, atol=1e-14)
