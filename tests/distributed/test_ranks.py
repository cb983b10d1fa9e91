"""Many processes, one analysis: the split, the exact merge, and error agreement.

The multi-process tests start real gloo ranks on loopback (plain subprocesses given
torchrun's environment, and once torchrun itself) and compare with the single-process run.
"""

from __future__ import annotations

import itertools
import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

import reprdiag
from reprdiag.distributed import (
    DistributedContext,
    even_slices,
    group_shards,
    split_source,
)
from reprdiag.distributed.context import _Failure
from reprdiag.engine import StreamOptions, accumulate
from reprdiag.errors import InputError, ResourceError
from reprdiag.loaders import ConcatSource, TensorSource
from reprdiag.pipeline import gather_sources
from reprdiag.stats import sample_threshold
from tests.helpers import SAMPLE, run_cli_env, run_main
from tests.ranks import (
    WORKER,
    assert_same,
    assert_same_uncertainty,
    free_port,
    run_ranks,
    run_worker,
)

SHARD_ROWS = [400, 1, 37, 250, 12, 300]  # grouped whole, one rank would read 1.2× its share
MINILM = str(SAMPLE / "minilm.safetensors")


# -- the split (pure) -----------------------------------------------------------------------
def _best_max(sizes: list[int], k: int) -> int:
    """Brute force: the smallest possible largest group over all contiguous k-cuts."""
    best = math.inf
    for cuts in itertools.combinations(range(1, len(sizes)), k - 1):
        bounds = [0, *cuts, len(sizes)]
        best = min(best, max(sum(sizes[a:b]) for a, b in itertools.pairwise(bounds)))
    return int(best)


@pytest.mark.parametrize("seed", range(40))
def test_group_shards_is_an_optimal_contiguous_cut(seed: int) -> None:
    rng = np.random.default_rng(seed)
    sizes = rng.integers(0, 50, size=int(rng.integers(1, 9))).tolist()
    k = int(rng.integers(1, len(sizes) + 1))
    groups = group_shards(sizes, k)
    assert len(groups) == k and all(len(g) > 0 for g in groups)
    assert [i for g in groups for i in g] == list(range(len(sizes)))
    assert max(sum(sizes[i] for i in g) for g in groups) == _best_max(sizes, k)


def test_group_shards_refuses_too_few_shards() -> None:
    with pytest.raises(ValueError):
        group_shards([3, 4], 3)


@pytest.mark.parametrize(("sizes", "world"), [([10], 3), ([1], 4), (SHARD_ROWS, 3),
                                                (SHARD_ROWS, 2), ([5, 7], 3), ([3, 3, 3], 3)])
def test_split_covers_every_row_once(sizes: list[int], world: int) -> None:
    parts = [TensorSource(torch.zeros(n, 2)) for n in sizes]
    source = ConcatSource(parts) if len(parts) > 1 else parts[0]
    ranges = [split_source(source, r, world) for r in range(world)]
    rows = sorted(i for mine in ranges for a, b in mine for i in range(a, b))
    assert rows == list(range(sum(sizes)))
    bounds = set(np.cumsum([0, *sizes]).tolist())
    whole = all(len(m) == 1 and {m[0][0], m[0][1]} <= bounds for m in ranges)
    even = math.ceil(sum(sizes) / world)
    if len(sizes) >= world and _best_max(sizes, world) <= 1.1 * even:
        assert whole  # balanced whole shards: a rank's one range starts and ends on boundaries
    else:  # row ranges: every rank within a row per shard of its even share
        assert max(sum(b - a for a, b in m) for m in ranges) <= even + len(sizes)


@pytest.mark.parametrize(("sizes", "world", "whole"), [
    ([100] * 8, 8, True), ([100] * 10, 8, False), ([100] * 100, 8, True),
    ([100, 100, 100], 2, False), ([120, 80, 100, 100, 60, 140], 3, True)])
def test_whole_shards_only_when_the_ranks_stay_even(sizes: list[int], world: int,
                                                   whole: bool) -> None:
    """10 equal shards on 8 ranks would put 2 on some ranks (1.6× the even share): those
    are cut into row ranges instead; 100 shards on 8 ranks (13 vs 12.5) stay whole."""
    source = ConcatSource([TensorSource(torch.zeros(n, 1)) for n in sizes])
    ranges = [split_source(source, r, world) for r in range(world)]
    assert all(len(m) == 1 for m in ranges) is whole
    loads = [sum(b - a for a, b in m) for m in ranges]
    assert max(loads) <= 1.1 * math.ceil(sum(sizes) / world)


def test_even_slices_differ_by_at_most_one_row() -> None:
    lengths = [b - a for a, b in even_slices(17, 5)]
    assert sum(lengths) == 17 and max(lengths) - min(lengths) <= 1


def test_sample_threshold_is_the_kth_smallest_priority() -> None:
    gen = torch.Generator().manual_seed(3)
    parts = [torch.randperm(1000, generator=gen)[:50] + 1000 * i for i in range(3)]
    everything = torch.cat(parts).sort().values
    assert sample_threshold(parts, 20) == int(everything[19])
    assert sample_threshold(parts, 150) is None and sample_threshold([None], 5) is None


def test_failures_rebuild_with_the_same_class_message_and_exit_code() -> None:
    original = ResourceError("out of GPU memory", source="a.h5[x]", hint="use --device cpu")
    rebuilt = _Failure.of(original, 2).rebuild()
    assert type(rebuilt) is ResourceError and str(rebuilt) == str(original)
    assert rebuilt.exit_code == 3
    other = _Failure.of(KeyError("k"), 1).rebuild()
    assert isinstance(other, RuntimeError) and "rank 1" in str(other)


def test_single_process_report_records_world_size_one() -> None:
    report = reprdiag.analyze(torch.randn(20, 3, dtype=torch.float64), metrics=["vne"],
                              device="cpu")
    assert report.world_size == 1
    assert reprdiag.Report.from_dict(report.to_dict()).world_size == 1


# -- real ranks ------------------------------------------------------------------------------
def _write_shards(folder: Path, sizes: list[int], nan_rows: dict[int, list[int]] | None = None,
                  seed: int = 0) -> list[str]:
    """Row shards of one synthetic dataset with two keys: ``a`` (24 wide, mean 30, scales
    spread over 100×) and ``b`` (8 wide, fp64)."""
    rng = np.random.default_rng(seed)
    n = sum(sizes)
    a = (rng.standard_normal((n, 24)) * np.geomspace(10, 0.1, 24) + 30).astype(np.float32)
    b = rng.standard_normal((n, 8)) @ rng.standard_normal((8, 8))
    paths, lo = [], 0
    folder.mkdir(parents=True, exist_ok=True)
    for i, size in enumerate(sizes):
        part_a = a[lo:lo + size].copy()
        for row in (nan_rows or {}).get(i, []):
            part_a[row] = np.nan
        path = folder / f"shard-{i}.safetensors"
        save_file({"a": torch.from_numpy(part_a), "b": torch.from_numpy(b[lo:lo + size].copy())},
                  str(path))
        paths.append(str(path))
        lo += size
    return paths


def _write_labelled(folder: Path, sizes: list[int], seed: int = 4,
                    nan_rows: tuple[int, ...] = ()) -> dict[str, Any]:
    """Row shards of ``a`` (16 wide, fp32, offset 20), one file of class ids ``y`` and one of a
    paired view ``view`` (a noisy linear map of ``a``), row-aligned with the shards in order.
    Classes come in sorted runs, so each rank sees its own subset of the 7 classes (their
    ids, -3 … 40, are not 0 … C−1). ``nan_rows`` (global indices) of ``a`` are NaN."""
    rng = np.random.default_rng(seed)
    n = sum(sizes)
    ids = np.array([-3, 0, 2, 5, 11, 23, 40])
    y = np.sort(rng.choice(ids, size=n, p=np.linspace(1, 2, 7) / np.linspace(1, 2, 7).sum()))
    means = rng.standard_normal((7, 16)) * 3
    a = (rng.standard_normal((n, 16)) + means[np.searchsorted(ids, y)] + 20).astype(np.float32)
    view = a.astype(np.float64) @ rng.standard_normal((16, 16)) + rng.standard_normal((n, 16))
    a[list(nan_rows)] = np.nan
    folder.mkdir(parents=True, exist_ok=True)
    paths, lo = [], 0
    for i, size in enumerate(sizes):
        path = folder / f"shard-{i}.safetensors"
        save_file({"a": torch.from_numpy(a[lo:lo + size].copy()),
                   "y": torch.from_numpy(y[lo:lo + size].copy()),
                   "view": torch.from_numpy(view[lo:lo + size].copy())}, str(path))
        paths.append(str(path))
        lo += size
    save_file({"y": torch.from_numpy(y)}, str(folder / "labels.safetensors"))
    save_file({"view": torch.from_numpy(view)}, str(folder / "pair.safetensors"))
    return {"files": paths, "labels": f"{folder / 'labels.safetensors'}:y",
            "pair": f"{folder / 'pair.safetensors'}:view"}


def _write_huge(folder: Path) -> list[str]:
    """Two float64 shards of 90 rows; the last row of the second holds 1e61, beyond what
    float64 statistics hold (4th powers): only the rank reading that row sees it."""
    rng = np.random.default_rng(8)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(2):
        x = rng.standard_normal((90, 6))
        if i == 1:
            x[89, 2] = 1e61
        paths.append(str(folder / f"shard-{i}.safetensors"))
        save_file({"a": torch.from_numpy(x)}, paths[-1])
    return paths


@pytest.fixture(scope="module")
def scenario_results(tmp_path_factory: pytest.TempPathFactory
                     ) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Run every scenario once on 3 gloo ranks (and on a 2-rank sub-group)."""
    tmp = tmp_path_factory.mktemp("dist")
    uneven = _write_shards(tmp / "uneven", SHARD_ROWS)
    three = _write_shards(tmp / "three", [100, 100, 100], seed=1)
    even = _write_shards(tmp / "even", [120, 80, 100, 100, 60, 140], seed=6)
    two = _write_shards(tmp / "two", [150, 61], seed=2)
    nan = _write_shards(tmp / "nan", SHARD_ROWS, nan_rows={5: [7, 30]}, seed=3)  # rank 2's
    f64 = {"precision": "float64", "sample_size": 256, "chunk_rows": 64}
    shards = {"concat": True, **f64}
    one = _write_labelled(tmp / "labelled_one", [700])  # one file: ranks read row slices
    holed = _write_labelled(tmp / "labelled_nan", [700], nan_rows=(3, 400, 650))
    many = _write_labelled(tmp / "labelled", [150, 130, 160, 140, 120], seed=5)
    same_file = {**f64, "keys": ["a"], "labels": "y", "pair": "view"}
    other_files = {**shards, "keys": ["a"], "labels": many["labels"], "pair": many["pair"]}
    spec: dict[str, Any] = {
        "minilm_w3": {"world": 3, "files": [MINILM],
                      "options": {**f64, "sample_size": 500, "chunk_rows": None}},
        "uneven_w3": {"world": 3, "files": uneven, "options": shards, "index": True},
        "uneven_w2": {"world": 2, "files": uneven, "options": shards},
        "uneven_auto_w3": {"world": 3, "files": uneven,
                           "options": {**shards, "precision": "auto"}},
        "one_per_rank": {"world": 3, "files": three, "options": shards},
        "whole_shard_groups": {"world": 3, "files": even, "options": shards, "index": True},
        "more_ranks_than_shards": {"world": 3, "files": two, "options": shards,
                                   "index": True},
        "nan_drop": {"world": 3, "files": nan, "options": {**shards, "nan": "drop"}},
        "nan_error": {"world": 3, "files": nan, "options": shards},
        "uncertainty_w3": {"world": 3, "files": uneven,
                           "options": {**shards, "uncertainty": True, "blocks": 6}},
        "uncertainty_w2": {"world": 2, "files": [MINILM],
                           "options": {**f64, "sample_size": 400, "chunk_rows": 300,
                                       "uncertainty": True, "blocks": 5,
                                       "metrics": ["vne", "rankme", "er_entropy"]}},
        "labels_pair_w3": {"world": 3, "files": one["files"], "options": same_file},
        "labels_pair_w2": {"world": 2, "files": one["files"], "options": same_file},
        "labels_pair_shards_w3": {"world": 3, "files": many["files"], "options": other_files},
        "labels_pair_shards_w2": {"world": 2, "files": many["files"], "options": other_files},
        "labels_nan_drop": {"world": 3, "files": holed["files"],
                            "options": {**same_file, "nan": "drop"}},
        "labels_pair_uncertainty_w3": {"world": 3, "files": many["files"],
                                       "options": {**other_files, "uncertainty": True,
                                                   "blocks": 6}},
        "huge_on_one_rank": {"world": 3, "files": _write_huge(tmp / "huge"),
                             "options": shards},
        "faulty_input": {"world": 3, "faulty": {"n": 90, "bad_from": 60, "kind": "input"}},
        "faulty_bug": {"world": 3, "faulty": {"n": 90, "bad_from": 60, "kind": "bug"}},
        "tensor": {"world": 2, "tensor": True},
        "metrics_fail": {"world": 3, "files": [MINILM, str(SAMPLE / "collapsed.safetensors")],
                         "fail_on": 1, "fail_in": "summarize"},
        "jackknife_fail": {"world": 3, "files": [MINILM, str(SAMPLE / "collapsed.safetensors")],
                           "fail_on": 1, "fail_in": "compute",
                           "options": {"uncertainty": True, "blocks": 5, "metrics": ["vne"]}},
    }
    return spec, run_worker(spec, tmp)


def _single(scenario: dict[str, Any]) -> reprdiag.Report:
    """The single-process report of a scenario."""
    return reprdiag.analyze(scenario["files"], distributed=False, device="cpu",
                            **scenario["options"])


def _single_sample_index(scenario: dict[str, Any]) -> list[list[int]]:
    """Global row indices of each input's single-process sample."""
    opts = scenario["options"]
    stream = StreamOptions(precision=opts["precision"], sample_size=opts["sample_size"],
                           chunk_rows=opts["chunk_rows"], nan=opts.get("nan", "error"))
    return [accumulate(s, stream).reservoir.index.tolist()
            for s in gather_sources(scenario["files"], concat=opts.get("concat", False))]


EXACT = ["minilm_w3", "uneven_w3", "uneven_w2", "one_per_rank", "whole_shard_groups",
         "more_ranks_than_shards", "nan_drop"]


@pytest.mark.parametrize("name", EXACT)
def test_ranks_equal_single_process_in_float64(name: str, scenario_results: Any) -> None:
    spec, ranks = scenario_results
    single = _single(spec[name])
    multi = ranks[0][name]
    assert "error" not in multi, multi
    assert multi["world_size"] == spec[name]["world"]
    assert_same(single, multi, rtol=1e-10)
    if spec[name].get("index"):  # the same sampled rows, whatever the split
        assert multi["sample_index"] == _single_sample_index(spec[name])
    er = [r.metrics["er_entropy"] for r in single.inputs]
    assert [m["metrics"]["er_entropy"] for m in multi["inputs"]] == er  # bit for bit
    for other in ranks[1:spec[name]["world"]]:  # every rank returns the same values
        assert [r["metrics"] for r in other[name]["inputs"]] == [
            r["metrics"] for r in multi["inputs"]]


@pytest.mark.parametrize("name", ["uncertainty_w3", "uncertainty_w2"])
def test_jackknife_under_ranks_equals_single_process(name: str, scenario_results: Any
                                                     ) -> None:
    """Block labels hash the global row index, so each block's moments all-reduce exactly:
    the standard errors, bias and intervals are the single process's."""
    spec, ranks = scenario_results
    single = _single(spec[name])
    multi = ranks[0][name]
    assert "error" not in multi, multi
    assert_same(single, multi, rtol=1e-10)
    assert_same_uncertainty(single, multi)


LABEL_PAIR = ["labels_pair_w3", "labels_pair_w2", "labels_pair_shards_w3",
              "labels_pair_shards_w2"]


@pytest.mark.parametrize("name", LABEL_PAIR)
def test_labels_and_pair_under_ranks_equal_single_process(name: str, scenario_results: Any
                                                          ) -> None:
    """Class moments (each rank sees other classes) and cross-moments all-reduce in a common
    frame: every label and paired-view metric is one process's to 1e-10, on every rank."""
    spec, ranks = scenario_results
    single = _single(spec[name])
    multi = ranks[0][name]
    assert "error" not in multi, multi
    assert multi["world_size"] == spec[name]["world"]
    names = set(single.inputs[0].metrics)
    assert {"nc1", "lidar", "class_balance", "class_erank_min", "nc2_equinorm", "alignment",
            "barlow_ondiag", "pair_cka"} <= names
    assert all(not math.isnan(single.inputs[0].metrics[m]) for m in ("nc1", "lidar", "pair_cka",
                                                                    "class_erank_min"))
    assert_same(single, multi, rtol=1e-10)
    for other in ranks[1:spec[name]["world"]]:
        assert [r["metrics"] for r in other[name]["inputs"]] == [
            r["metrics"] for r in multi["inputs"]]


def test_label_and_pair_jackknife_under_ranks_equals_single_process(scenario_results: Any
                                                                    ) -> None:
    """The per-block class and cross-moments all-reduce block by block in a common frame
    (each rank sees other classes in each block): every label and paired-view metric's SE,
    bias and interval are one process's."""
    spec, ranks = scenario_results
    name = "labels_pair_uncertainty_w3"
    single = _single(spec[name])
    multi = ranks[0][name]
    assert "error" not in multi, multi
    assert {"nc1", "lidar", "class_erank_min", "alignment", "pair_cka"} <= set(
        single.inputs[0].uncertainty)
    assert single.inputs[0].uncertainty["nc1"]["se"] > 0
    assert_same(single, multi, rtol=1e-10)
    assert_same_uncertainty(single, multi)
    for other in ranks[1:3]:
        assert other[name]["inputs"][0]["uncertainty"] == multi["inputs"][0]["uncertainty"]


def test_rank_split_does_not_change_label_and_pair_metrics(scenario_results: Any) -> None:
    """The same data over 2 and 3 ranks, as one file's row slices or as whole shards."""
    _, ranks = scenario_results
    reference = ranks[0]["labels_pair_shards_w3"]["inputs"][0]["metrics"]
    for name in ["labels_pair_shards_w2"]:
        got = ranks[0][name]["inputs"][0]["metrics"]
        for metric, value in reference.items():
            assert got[metric] == pytest.approx(value, rel=1e-10, abs=1e-300), (name, metric)
    one = ranks[0]["labels_pair_w3"]["inputs"][0]["metrics"]
    for metric, value in ranks[0]["labels_pair_w2"]["inputs"][0]["metrics"].items():
        assert one[metric] == pytest.approx(value, rel=1e-10, abs=1e-300), metric


def test_labels_with_dropped_nan_rows_under_ranks(scenario_results: Any) -> None:
    """NaN rows on ranks 0 and 2 are dropped from the input and, row for row, from its labels
    and paired view, as in one process (each rank's companions read its global rows)."""
    spec, ranks = scenario_results
    single = _single(spec["labels_nan_drop"])
    assert single.inputs[0].rows_dropped == 3
    assert_same(single, ranks[0]["labels_nan_drop"], rtol=1e-10)


def test_default_precision_agrees_to_float32_accuracy(scenario_results: Any) -> None:
    spec, ranks = scenario_results
    scenario = spec["uneven_auto_w3"]
    single = _single(scenario)
    assert_same(single, ranks[0]["uneven_auto_w3"], rtol=1e-5)


def test_nan_rows_on_one_rank_fail_every_rank_alike(scenario_results: Any) -> None:
    _, ranks = scenario_results
    outcomes = [r["nan_error"] for r in ranks]
    assert all(o["error"] == "InputError" and o["all_ranks"] for o in outcomes)
    assert len({o["message"] for o in outcomes}) == 1
    assert "first at row 707" in outcomes[0]["message"]  # global index: 700 + 7


def test_values_too_large_on_one_rank_fail_every_rank_alike(scenario_results: Any) -> None:
    """The magnitude check runs on every rank's largest |x| (merged like the row counts), so
    the ranks that never saw the huge row raise the same error instead of going on alone."""
    spec, ranks = scenario_results
    with pytest.raises(InputError, match="too large for float64") as single:
        _single(spec["huge_on_one_rank"])
    outcomes = [r["huge_on_one_rank"] for r in ranks]
    assert all(o.get("error") == "InputError" and o["all_ranks"] for o in outcomes), outcomes
    assert all("too large for float64" in o["message"] for o in outcomes)
    assert {o["message"] for o in outcomes} == {str(single.value)}


def test_read_error_on_one_rank_is_raised_by_every_rank(scenario_results: Any) -> None:
    _, ranks = scenario_results
    outcomes = [r["faulty_input"] for r in ranks]
    assert {o["error"] for o in outcomes} == {"InputError"}
    assert {o["message"] for o in outcomes} == {
        "faulty.bin: row 60 is unreadable; re-copy the shard"}
    bug = [r["faulty_bug"] for r in ranks]
    assert bug[2]["error"] == "ValueError"  # the failing rank keeps its own exception
    assert [b["error"] for b in bug[:2]] == ["RuntimeError", "RuntimeError"]
    assert all("boom at row 60" in b["message"] for b in bug)


def test_a_metric_failure_on_one_rank_is_raised_by_every_rank(scenario_results: Any
                                                              ) -> None:
    """Rank 1 fails computing the first input's metrics; the others raise it too instead of
    waiting at the second input's merge until the timeout."""
    _, ranks = scenario_results
    for name in ("metrics_fail", "jackknife_fail"):  # before, and inside, the block exchange
        outcomes = [r[name] for r in ranks]
        assert {o["error"] for o in outcomes} == {"ResourceError"}, outcomes
        assert {o["message"] for o in outcomes} == {
            "rank-local: out of memory on cuda:1 in the spectra"}


def test_in_memory_tensors_are_refused_on_every_rank(scenario_results: Any) -> None:
    _, ranks = scenario_results
    outcomes = [r["tensor"] for r in ranks[:2]]
    assert all(o["error"] == "UsageError" and o["all_ranks"] for o in outcomes)
    assert "tensor" not in ranks[2]  # rank 2 is not in the 2-rank group


def _cli(*args: str) -> list[str]:
    return ["-m", "reprdiag", "analyze", *args]


def test_torchrun_cli_writes_one_report_equal_to_single_process(tmp_path: Path) -> None:
    shards = _write_shards(tmp_path / "s", [300, 5, 250], seed=4)
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2",
           "--master-port", str(free_port()), *_cli("--concat", *shards, "--precision",
                                                      "float64", "--out", str(out),
                                                      "--no-plots", "-f", "json", "-q")]
    env = run_cli_env()
    env.update(OMP_NUM_THREADS="1", REPRDIAG_DIST_TIMEOUT="90")
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=150)
    assert done.returncode == 0, done.stderr[-3000:]
    printed = json.loads(done.stdout)  # rank 0 alone prints: one JSON document
    saved = json.loads((out / "report.json").read_text())
    assert printed["world_size"] == saved["world_size"] == 2
    single = reprdiag.analyze(shards, concat=True, precision="float64", device="cpu",
                              distributed=False)
    assert_same(single, saved, rtol=1e-10)


def test_bad_shard_on_one_rank_exits_every_rank_with_code_2(tmp_path: Path) -> None:
    shards = _write_shards(tmp_path / "s", [40, 40], nan_rows={1: [3]}, seed=5)
    runs = run_ranks(_cli("--concat", *shards, "-q", "-f", "json"), 2)
    assert [r.returncode for r in runs] == [2, 2]
    assert all(r.stdout == "" for r in runs)
    lines = [line for r in runs for line in r.stderr.splitlines() if "reprdiag" in line]
    assert lines == [f"reprdiag: error: {shards[0]}[a] (+1 shards): has 1 row(s) containing "
                     "NaN or Inf (first at row 43); clean the data, or pass --nan drop to "
                     "skip them"]
    assert "Traceback" not in runs[0].stderr


def test_unknown_backend_is_a_usage_error() -> None:
    done = run_main(_cli(MINILM, "--backend", "mpi", "-q")[2:])
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr == ("reprdiag: error: unknown backend 'mpi'; use one of auto, nccl, "
                           "gloo\n")


def test_library_refuses_distributed_true_outside_torchrun() -> None:
    from reprdiag.errors import UsageError

    with pytest.raises(UsageError, match="torchrun"):
        reprdiag.analyze(torch.randn(5, 2), device="cpu", distributed=True)



@pytest.mark.parametrize("how", ["sleep", "exit"])
def test_a_silent_rank_fails_the_others_within_the_timeout(tmp_path: Path, how: str) -> None:
    """A rank that stops answering (or dies) is a resource error after the process group's
    timeout on the others, not a hang."""
    runs = run_ranks([str(WORKER), "--stall", how, str(tmp_path)], 2)
    assert runs[0].returncode == 0, runs[0].stderr[-2000:]
    outcome = json.loads((tmp_path / "rank0.json").read_text())
    assert outcome["error"] == "ResourceError" and outcome["exit_code"] == 3, outcome
    assert "with the other ranks failed" in outcome["message"]
    assert outcome["seconds"] < 30


COLLAPSED = str(SAMPLE / "collapsed.safetensors")
F64 = ["--precision", "float64", "-q"]


def test_compare_under_ranks_prints_once_and_equals_single_process() -> None:
    runs = run_ranks(["-m", "reprdiag", "compare", MINILM, COLLAPSED, "-f", "json", *F64,
                       "-m", "vne,rankme,avg_cosine"], 2)
    assert [r.returncode for r in runs] == [0, 0], [r.stderr[-2000:] for r in runs]
    assert runs[1].stdout == ""
    printed = json.loads(runs[0].stdout)
    single = reprdiag.compare([MINILM, COLLAPSED], metrics=["vne", "rankme", "avg_cosine"],
                              precision="float64", device="cpu", distributed=False)
    rows = {(r["run"], r["metric"]): r for r in printed["rows"]}
    assert len(rows) == len(single.frame) == 6
    for _, row in single.frame.iterrows():
        got = rows[(row["run"], row["metric"])]
        assert got["value"] == pytest.approx(row["value"], rel=1e-10)
        assert got["change"] == row["change"]


def _gate_config(tmp_path: Path) -> Path:
    config = tmp_path / "gate.toml"
    config.write_text(f'[gate]\nbaseline = "{MINILM}"\n[gate.rules]\n'
                      + "vne = { max_drop = 0.05 }\n")
    return config


@pytest.mark.parametrize("command", ["gate", "analyze"])
def test_failing_gate_under_ranks_exits_1_on_every_rank(tmp_path: Path, command: str) -> None:
    """The run and its baseline file are analyzed in one process group; every rank exits 1,
    rank 0 alone prints the checks."""
    config = _gate_config(tmp_path)
    flag = "--config" if command == "gate" else "--gate"
    runs = run_ranks(["-m", "reprdiag", command, COLLAPSED, flag, str(config), *F64], 2)
    assert [r.returncode for r in runs] == [1, 1], [r.stderr[-2000:] for r in runs]
    assert runs[1].stdout == "" and runs[1].stderr == ""
    assert "vne" in runs[0].stdout
    assert runs[0].stderr.startswith("reprdiag: gate failed: ")


@pytest.fixture
def one_rank_group() -> Any:
    """A gloo process group of this process alone (world size 1)."""
    import torch.distributed as dist

    from tests.ranks import free_port

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{free_port()}", rank=0,
                            world_size=1)
    try:
        yield DistributedContext(torch.device("cpu"))
    finally:
        dist.destroy_process_group()


def test_out_of_memory_on_a_rank_restarts_its_pass_and_is_reported(
        one_rank_group: DistributedContext, monkeypatch: pytest.MonkeyPatch) -> None:
    """A chunk over 300 rows 'does not fit' after the first: the rank restarts its share with
    smaller chunks (no row counted twice), and the merged result names the rank's fallback."""
    from reprdiag.stats import StreamingMoments

    x = torch.randn(2000, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    real_update = StreamingMoments.update

    def limited(self: StreamingMoments, rows: torch.Tensor, dtype: object = None) -> None:
        if rows.shape[0] > 300 and self.n > 0:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        real_update(self, rows, dtype)

    monkeypatch.setattr(StreamingMoments, "update", limited)
    ctx = one_rank_group
    result = ctx.merge(ctx.accumulate(TensorSource(x), StreamOptions(chunk_rows=1024)))
    assert result.moments.n == result.rows_read == 2000
    torch.testing.assert_close(result.moments.covariance(), torch.cov(x.T), rtol=1e-12,
                               atol=1e-14)
    assert result.notes == [
        "rank 0: out of memory on cpu with 1024 rows per chunk; retried with 512",
        "rank 0: out of memory on cpu with 512 rows per chunk; retried with 256"]


def test_nccl_without_a_gpu_is_a_usage_error() -> None:
    """--backend nccl on a rank that computes on the CPU is refused before joining."""
    runs = run_ranks(["-m", "reprdiag", "analyze", MINILM, "--backend", "nccl", "-q"], 1)
    assert runs[0].returncode == 2 and runs[0].stdout == ""
    assert runs[0].stderr.startswith("reprdiag: error: --backend nccl needs a CUDA GPU")
    assert runs[0].stderr.count("\n") == 1


def test_a_run_folder_one_rank_cannot_read_fails_every_rank(tmp_path: Path,
                                                           minilm_run: Path) -> None:
    """compare RUN FILE where RUN (a relative path) exists on rank 0's node only: rank 1
    analyzes it as a file and fails; both exit 2 at once, and the error is printed once."""
    here, there = tmp_path / "node0", tmp_path / "node1"
    here.mkdir(), there.mkdir()
    (here / "run").symlink_to(minilm_run)
    args = ["-m", "reprdiag", "compare", "run", MINILM, "-q"]
    runs = run_ranks(args, 2, cwds=[here, there])
    assert [r.returncode for r in runs] == [2, 2], [r.stderr[-2000:] for r in runs]
    lines = [line for r in runs for line in r.stderr.splitlines()]
    assert len(lines) == 1 and lines[0].startswith("reprdiag: error: run"), lines
