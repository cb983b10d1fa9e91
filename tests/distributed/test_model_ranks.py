"""``analyze_model`` under torchrun: ranks run the model on their share of the data.

One launch of 3 gloo ranks on loopback (and its 2-rank sub-group) runs every scenario; each
is compared with ``analyze_model`` in this process. Ranks feed the model the very batches one
process would, so float64 statistics agree to 1e-10 and the sampled rows exactly.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

import reprdiag
from reprdiag.api import analyze_model
from reprdiag.models.data import Batches, DataSpec, assigned, open_data
from reprdiag.models.extract import ModelRun, extract
from tests.helpers import SAMPLE
from tests.model_data import BAD_EXAMPLE
from tests.ranks import assert_same, assert_same_uncertainty, run_ranks, run_worker

DIGITS = {"model": "reprdiag.examples.digits:build", "data": str(SAMPLE / "digits.safetensors"),
          "weights": str(SAMPLE / "digits-mlp.safetensors"),
          "layers": ["fc1", "fc2", "fc3", "head"], "device": "cpu"}
SMALL = {**DIGITS, "layers": ["relu1", "head"], "batch_size": 32}
F64 = {"precision": "float64", "sample_size": 500}


def _data(name: str) -> dict[str, Any]:
    return {**SMALL, "data": f"tests.model_data:{name}"}


SCENARIOS: dict[str, Any] = {
    "digits_w3": {"world": 3, "model": DIGITS, "options": F64},
    "digits_w2": {"world": 2, "model": {**DIGITS, "batch_size": 100, "limit": 1000},
                  "options": F64},
    "fewer_rows_than_ranks": {"world": 3, "model": {**DIGITS, "limit": 2}, "options": F64},
    "ready_batches": {"world": 3, "model": _data("ready_batches"), "options": F64},
    "dataset": {"world": 3, "model": _data("dataset"), "options": F64},
    "failing_dataset": {"world": 3, "model": _data("failing"), "options": F64},
    "uncertainty_w3": {"world": 3, "model": {**DIGITS, "limit": 900},
                       "options": {**F64, "uncertainty": True, "blocks": 6}},
    "uncertainty_rank0_empty": {"world": 3, "model": {**DIGITS, "limit": 100},  # 2 batches
                                "options": {**F64, "uncertainty": True, "blocks": 5}},
}
LABELS = str(SAMPLE / "digits-labels.safetensors")
#: --labels / --pair on model runs: a file (contiguous shares of the rows, --limit trims it),
#: and the labels the batches carry (split as the batches are: contiguous, or round-robin).
#: Layers whose classes have more rows than dimensions: the per-class effective rank takes √
#: of eigenvalues, which rounding puts at ~1e-8 relative in a rank-deficient class.
COMPANIONS: dict[str, Any] = {
    "labels_pair_w3": {"world": 3, "model": {**DIGITS, "limit": 1000,
                                             "layers": ["fc2", "head"]}, "options": {
        **F64, "labels": LABELS, "pair": DIGITS["data"],
        "metrics": ["er_entropy", "nc1", "lidar", "class_balance", "class_erank_min",
                    "nc2_equiangularity", "pair_cka"]}},
    "batch_labels_dataset": {"world": 3, "model": {**_data("dataset"), "layers": ["head"]},
                             "options": {**F64, "labels": "batch"}},
    "batch_labels_ready": {"world": 3, "model": {**_data("ready_labelled"), "layers": ["head"]},
                           "options": {**F64, "labels": "batch"}},
    "labels_pair_uncertainty_w3": {"world": 3, "model": {**DIGITS, "limit": 900,
                                                         "layers": ["fc2", "head"]},
                                   "options": {**F64, "labels": LABELS, "pair": DIGITS["data"],
                                               "uncertainty": True, "blocks": 6, "metrics": [
                                                   "er_entropy", "vne", "nc1", "lidar",
                                                   "pair_cka"]}},
}
SCENARIOS.update(COMPANIONS)
UNCERTAINTY = ["uncertainty_w3", "uncertainty_rank0_empty", "labels_pair_uncertainty_w3"]
EQUAL = ["digits_w3", "digits_w2", "fewer_rows_than_ranks", "ready_batches", "dataset",
         *dict.fromkeys([*UNCERTAINTY, *COMPANIONS])]


@pytest.fixture(scope="module")
def ranks(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    tmp = tmp_path_factory.mktemp("dist-model")
    few = {**DIGITS, "limit": 2}  # one batch (on rank 2): ranks 0 and 1 write nothing
    stale = tmp / "few-00000-of-00003.safetensors"
    stale.write_bytes(b"from an earlier run")
    spec = {**SCENARIOS,
            "extract": {"world": 2, "model": DIGITS, "extract": str(tmp / "rows.safetensors")},
            "extract_few": {"world": 3, "model": few, "extract": str(tmp / "few.safetensors")}}
    return run_worker(spec, tmp)


def _single(name: str) -> Any:
    scenario = SCENARIOS[name]
    return analyze_model(ModelRun(**scenario["model"]), distributed=False,
                         **scenario["options"])


@pytest.mark.parametrize("name", EQUAL)
@pytest.mark.usefixtures("one_thread")  # as the ranks: float32 matmuls vary with threads
def test_ranks_equal_one_process_in_float64(name: str, ranks: list[dict[str, Any]]) -> None:
    single, world = _single(name), SCENARIOS[name]["world"]
    reports = [r[name] for r in ranks[:world]]
    assert all("error" not in r for r in reports), reports
    assert [r["world_size"] for r in reports] == [world] * world
    assert_same(single, reports[0], rtol=1e-10)
    er = [r.metrics["er_entropy"] for r in single.inputs]
    assert [i["metrics"]["er_entropy"] for i in reports[0]["inputs"]] == er  # bit for bit
    for other in reports[1:]:  # every rank returns the same values
        assert [i["metrics"] for i in other["inputs"]] == [
            i["metrics"] for i in reports[0]["inputs"]]
    if name in UNCERTAINTY:  # blocks hash global row indices: the same jackknife
        assert_same_uncertainty(single, reports[0])
    if name in COMPANIONS:  # the label metrics were compared above
        assert all("nc1" in r.metrics for r in single.inputs)


def test_a_data_error_on_one_rank_is_raised_by_every_rank(ranks: list[dict[str, Any]]
                                                          ) -> None:
    outcomes = [r["failing_dataset"] for r in ranks]
    assert {o["error"] for o in outcomes} == {"InputError"}
    assert all(o["all_ranks"] for o in outcomes)
    assert {o["message"] for o in outcomes} == {
        f"tests.model_data:failing: loading a batch raised ValueError: example {BAD_EXAMPLE} "
        "is corrupt; fix the data function or its dataset"}


@pytest.mark.usefixtures("one_thread")  # as the ranks: float32 matmuls vary with threads
def test_extract_writes_one_shard_per_rank_that_together_are_the_dataset(
        ranks: list[dict[str, Any]]) -> None:
    folder = Path(ranks[0]["extract"]["out"]).parent
    shards = [folder / f"rows-0000{r}-of-00002.safetensors" for r in range(2)]
    totals = {"fc1": [1797, 128, "float32"], "fc2": [1797, 64, "float32"],
              "fc3": [1797, 32, "float32"], "head": [1797, 10, "float32"]}
    assert [r["extract"]["written"] for r in ranks[:2]] == [totals, totals]
    assert not (folder / "rows.safetensors").exists()
    single = folder / "single.safetensors"
    extract(ModelRun(**DIGITS), single)
    whole = load_file(single)
    parts = [load_file(s) for s in shards]
    assert 0 < parts[0]["fc1"].shape[0] < 1797
    for layer in DIGITS["layers"]:  # in rank order, the rows of one process, in order
        torch.testing.assert_close(torch.cat([p[layer] for p in parts]), whole[layer],
                                   rtol=1e-6, atol=1e-6)


def test_extract_with_empty_ranks_writes_only_the_shards_with_rows(
        ranks: list[dict[str, Any]]) -> None:
    folder = Path(ranks[0]["extract_few"]["out"]).parent
    assert [r["extract_few"]["written"]["head"] for r in ranks] == [[2, 10, "float32"]] * 3
    # rank 0's stale shard from an earlier run is gone
    assert sorted(p.name for p in folder.glob("few*")) == ["few-00002-of-00003.safetensors"]
    assert load_file(folder / "few-00002-of-00003.safetensors")["head"].shape == (2, 10)


def _shares(batches: Batches, world: int) -> list[tuple[int, list[float]]]:
    """Every rank's ``(first index, example values)`` per batch, ranks in order."""
    return [(first, b.flatten().tolist() if isinstance(b, torch.Tensor) else list(map(float, b)))
            for r in range(world) for first, b in assigned(batches, r, world)[0]]


def _open(kind: str, folder: Path, limit: int | None) -> Batches:
    """100 examples, example i holding the value i, as data of ``kind``."""
    values = torch.arange(100.0).reshape(100, 1)
    spec = DataSpec(str(folder), batch_size=32, limit=limit)
    if kind == "shards":  # random access; batches restart at the second shard
        np.save(folder / "a.npy", values[:60].numpy())
        np.save(folder / "b.npy", values[60:].numpy())
    elif kind == "text":  # random access after counting the non-empty lines
        spec = replace(spec, spec=str(folder / "t.txt"))
        Path(spec.spec).write_text("".join(f"{i}\n\n" if i % 7 else f"{i}\n" for i in range(100)))
    elif kind == "texts":
        spec = replace(spec, spec="tests.model_data:texts")
    else:  # ready batches of uneven sizes: no random access, dealt round-robin
        return Batches("ready", list(values[:limit].split(7)))
    return open_data(spec, text=kind == "text")


@pytest.mark.parametrize("kind", ["shards", "text", "texts", "ready"])
@pytest.mark.parametrize("limit", [None, 75, 2])
def test_every_example_goes_to_exactly_one_rank_as_one_process_batches_it(
        tmp_path: Path, kind: str, limit: int | None) -> None:
    alone = _shares(_open(kind, tmp_path, limit), 1)
    assert all(b[0] == first for first, b in alone)  # global indices
    assert sum(len(b) for _, b in alone) == (limit or 100)
    for world in (2, 3, 5, 8):  # the same batches, shared out
        assert sorted(_shares(_open(kind, tmp_path, limit), world)) == alone


def test_cli_model_run_under_ranks_is_one_report() -> None:
    """``analyze --model/--data`` through the CLI joins the group: rank 0 prints one report
    over the whole dataset, recording the world size; rank 1 prints nothing."""
    args = ["-m", "reprdiag", "analyze", "--model", DIGITS["model"], "--weights",
            DIGITS["weights"], "--data", DIGITS["data"], "--layer", "fc1", "--layer", "head",
            "--precision", "float64", "-m", "vne,rankme", "-f", "json", "-q"]
    runs = run_ranks(args, 2)
    assert [r.returncode for r in runs] == [0, 0], [r.stderr[-2000:] for r in runs]
    assert runs[1].stdout == ""
    report = json.loads(runs[0].stdout)
    assert report["world_size"] == 2
    assert [(r["name"], r["n"]) for r in report["inputs"]] == [("fc1", 1797), ("head", 1797)]
    single = analyze_model(ModelRun(**{**DIGITS, "layers": ["fc1", "head"]}),
                           precision="float64", metrics=["vne", "rankme"], distributed=False)
    for one, many in zip(single.inputs, report["inputs"], strict=True):
        for name, value in one.metrics.items():  # float32 forward passes: threads may differ
            assert many["metrics"][name] == pytest.approx(value, rel=1e-5), name


def test_cli_extract_under_ranks_writes_shards_and_prints_once(tmp_path: Path) -> None:
    out = tmp_path / "emb.h5"
    args = ["-m", "reprdiag", "extract", "--model", DIGITS["model"], "--weights",
            DIGITS["weights"], "--data", DIGITS["data"], "--layer", "head", "-o", str(out)]
    runs = run_ranks(args, 2)
    assert [r.returncode for r in runs] == [0, 0], [r.stderr[-2000:] for r in runs]
    assert runs[1].stdout == ""
    assert "emb-*-of-00002.h5" in runs[0].stdout and "1,797 × 10" in runs[0].stdout
    shards = sorted(tmp_path.glob("emb-*-of-00002.h5"))
    assert [s.name for s in shards] == ["emb-00000-of-00002.h5", "emb-00001-of-00002.h5"]
    report = reprdiag.analyze(shards, concat=True, metrics=["vne"], device="cpu")
    assert report.inputs[0].n == 1797
