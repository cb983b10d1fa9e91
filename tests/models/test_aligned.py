"""``--labels`` / ``--pair`` on model runs (reprdiag/models/aligned.py), through the real path.

A tiny 6 → 5 → 4 network (factory + safetensors weights, as the other model tests) runs over
120 labelled examples given every way a model run takes data. The label and pair metrics of
``analyze_model`` must equal those of ``reprdiag.analyze`` on the same run's extracted
embeddings with the labels (or pair) as a file; the class balance and the alignment are
also checked against a by-hand float64 formula over the rows actually used.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

import reprdiag
from reprdiag.api import analyze_model
from reprdiag.errors import InputError, UsageError
from reprdiag.models.extract import ModelRun, extract
from tests.helpers import run_main
from tests.model_data import TINY_READY, TINY_ROWS, Tiny, tiny_rows

LABEL_METRICS = ["nc1", "lidar", "nc2_equinorm", "nc2_equiangularity", "class_balance",
                 "class_erank_min", "class_erank_median"]
PAIR_METRICS = ["alignment", "barlow_ondiag", "barlow_offdiag", "pair_cka"]
LAYERS = ["fc1", "act", "output"]
F64 = {"precision": "float64", "sample_size": 64}


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    """The weights; the inputs with their labels and a 4-wide view in one file; the labels
    alone; the view alone (row-aligned with the inputs)."""
    torch.manual_seed(0)
    save_file(Tiny().state_dict(), str(tmp_path / "w.safetensors"))
    x, y = tiny_rows()
    view = torch.randn(TINY_ROWS, 4, generator=torch.Generator().manual_seed(1),
                       dtype=torch.float64)
    save_file({"inputs": x, "labels": y, "view": view}, str(tmp_path / "data.safetensors"))
    save_file({"y": y}, str(tmp_path / "y.safetensors"))
    save_file({"view": view}, str(tmp_path / "view.safetensors"))
    return {"weights": tmp_path / "w.safetensors", "data": tmp_path / "data.safetensors",
            "labels": tmp_path / "y.safetensors", "view": tmp_path / "view.safetensors",
            "tmp": tmp_path}


def _run(files: dict[str, Path], data: str | None = None, **kw: object) -> ModelRun:
    kw = {"layers": LAYERS, "batch_size": 32, "device": "cpu",
          "data_key": None if data else "inputs", **kw}
    return ModelRun("tests.model_data:tiny", data or str(files["data"]),
                    weights=str(files["weights"]), **kw)


def _extracted(run: ModelRun, files: dict[str, Path], names: list[str], **options: object
               ) -> dict[str, reprdiag.Report]:
    """Each layer of ``run`` written by ``extract``, then analyzed as a file."""
    out = files["tmp"] / "emb.safetensors"
    extract(run, out)
    return {layer: reprdiag.analyze(out, keys=[layer], device="cpu", metrics=names, **F64,
                                    **options) for layer in run.layers}


def _equal(report: reprdiag.Report, expected: dict[str, reprdiag.Report],
           names: list[str]) -> None:
    assert [r.key for r in report.inputs] == list(expected)
    for r in report.inputs:
        want = expected[r.key].inputs[0]
        assert r.n == want.n
        for name in names:
            assert r.metrics[name] == pytest.approx(want.metrics[name], rel=1e-10, abs=1e-12), (
                r.key, name)


def _balance(y: torch.Tensor) -> float:
    """H(n_c / N) / ln C, float64 by hand."""
    counts = np.unique(y.numpy(), return_counts=True)[1].astype(float)
    p = counts / counts.sum()
    return float(-(p * np.log(p)).sum() / math.log(len(counts)))


@pytest.mark.parametrize(("data", "labels"), [
    ("tests.model_data:tiny_tuples", "batch"),  # a Dataset of (x, y): the collated y
    ("tests.model_data:tiny_dicts", "batch"),  # dicts: the 'label' entry
    ("tests.model_data:tiny_dicts", "label"),  # the dict entry named
    ("tests.model_data:tiny_ready", "batch"),  # ready (x, y) batches of unknown number
])
def test_labels_the_batches_carry_equal_the_extracted_file_with_its_labels(
        files: dict[str, Path], data: str, labels: str) -> None:
    run = _run(files, data)
    report = analyze_model(run, labels=labels, metrics=LABEL_METRICS, **F64)
    _equal(report, _extracted(run, files, LABEL_METRICS, labels=str(files["labels"])),
           LABEL_METRICS)
    assert report.inputs[0].metrics["class_balance"] == pytest.approx(
        _balance(tiny_rows()[1]), rel=1e-12)
    assert report.options["labels"] == labels and report.options["model"] == run.model


@pytest.mark.parametrize("labels", ["labels", "{labels}", "{labels}:y"])
def test_labels_of_the_data_file_or_another_file(files: dict[str, Path], labels: str) -> None:
    """KEY is an array of the --data file (as a file run's KEY), PATH[:KEY] another file."""
    run = _run(files)
    spec = labels.format(labels=files["labels"])
    report = analyze_model(run, labels=spec, metrics=LABEL_METRICS, **F64)
    _equal(report, _extracted(run, files, LABEL_METRICS, labels=str(files["labels"])),
           LABEL_METRICS)


def test_labels_key_of_a_folder_of_shards_is_read_shard_by_shard(files: dict[str, Path]
                                                                  ) -> None:
    """A folder --data: KEY is the array of each shard (rows 0–69 and 70–119)."""
    folder = files["tmp"] / "shards"
    folder.mkdir()
    x, y = tiny_rows()
    for name, rows in (("a", slice(0, 70)), ("b", slice(70, None))):
        save_file({"inputs": x[rows], "labels": y[rows]}, str(folder / f"{name}.safetensors"))
    run = _run(files, str(folder), data_key="inputs")
    report = analyze_model(run, labels="labels", metrics=LABEL_METRICS, **F64)
    _equal(report, _extracted(run, files, LABEL_METRICS, labels=str(files["labels"])),
           LABEL_METRICS)


def test_pair_file_equals_the_extracted_file_with_its_pair(files: dict[str, Path]) -> None:
    run = _run(files, layers=["output"])  # 4 wide, as the view
    for spec in (str(files["view"]), "view"):  # another file, or a key of the data file
        report = analyze_model(run, pair=spec, metrics=PAIR_METRICS, **F64)
        _equal(report, _extracted(run, files, PAIR_METRICS, pair=str(files["view"])),
               PAIR_METRICS)
    out = load_file(files["tmp"] / "emb.safetensors")["output"].double().numpy()
    view = load_file(files["view"])["view"].numpy()
    z, zv = (a / np.linalg.norm(a, axis=1, keepdims=True) for a in (out, view))
    assert report.metrics["alignment"] == pytest.approx(((z - zv) ** 2).sum(1).mean(),
                                                        rel=1e-10)


def test_labels_and_pair_together_on_every_layer_width(files: dict[str, Path]) -> None:
    """pair_cka compares layers of any width with the view (alignment needs one width)."""
    run = _run(files)
    names = [*LABEL_METRICS, "pair_cka"]
    report = analyze_model(run, labels="labels", pair="view",
                           metrics=names, **F64)
    _equal(report, _extracted(run, files, names, labels=str(files["labels"]),
                              pair=str(files["view"])), names)


def test_uncertainty_with_labels_and_pair_equals_the_extracted_file(
        files: dict[str, Path]) -> None:
    """The jackknife blocks hash global row indices: the model run's class and cross moments
    per block are the file run's, so every SE, bias and interval is."""
    run = _run(files, "tests.model_data:tiny_tuples", layers=["output"])
    names = ["nc1", "lidar", "alignment", "pair_cka", "vne"]
    options = {"uncertainty": True, "blocks": 5, "pair": str(files["view"])}
    report = analyze_model(run, labels="batch", metrics=names, **options, **F64)
    expected = _extracted(run, files, names, labels=str(files["labels"]), **options)["output"]
    got, want = report.uncertainty.droplevel(0), expected.uncertainty.droplevel(0)
    assert set(got.index) == set(names) and got["se"].gt(0).all()
    np.testing.assert_allclose(got.loc[names].to_numpy(), want.loc[names].to_numpy(),
                               rtol=1e-10, atol=1e-12)


def test_model_run_blocks_keep_per_class_ranks_like_a_file_run(
        files: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    """With room in the memory budget, each jackknife block of a model run keeps its per-class
    second moments up to a plain run's limit, as a file run's do (K blocks sharing that
    limit would leave the per-class ranks out: NaN)."""
    from reprdiag import companions

    run = _run(files, "tests.model_data:tiny_tuples", layers=["output"])
    d = 4  # the output layer's width; 4 classes: C·d²·8 = 512 bytes ≤ the limit, > its K-th
    monkeypatch.setattr(companions, "CLASS_SQUARES_BYTES", 4 * d * d * 8)
    names = ["class_erank_min", "class_erank_median"]
    options = {"uncertainty": True, "blocks": 5}
    report = analyze_model(run, labels="batch", metrics=names, **options, **F64)
    expected = _extracted(run, files, names, labels=str(files["labels"]), **options)["output"]
    got = report.inputs[0]
    assert math.isfinite(got.metrics["class_erank_min"]) and got.se("class_erank_min") > 0
    for name in names:
        assert got.metrics[name] == pytest.approx(expected.metrics[name], rel=1e-10), name
        assert got.se(name) == pytest.approx(expected.inputs[0].se(name), rel=1e-10), name


@pytest.mark.parametrize("data", [None, "tests.model_data:tiny_ready"])
def test_limit_trims_the_labels_and_pair_to_the_rows_used(files: dict[str, Path],
                                                           data: str | None) -> None:
    """With --limit 37 the first 37 labels and view rows go with the 37 examples (the files
    keep all 120 rows; a ready batch is cut)."""
    run = _run(files, data, limit=37, layers=["output"])
    report = analyze_model(run, labels=str(files["labels"]), pair=str(files["view"]),
                           metrics=[*LABEL_METRICS, *PAIR_METRICS], **F64)
    y, view = tiny_rows()[1][:37], load_file(files["view"])["view"][:37]
    save_file({"y": y}, str(files["tmp"] / "y37.safetensors"))
    save_file({"view": view}, str(files["tmp"] / "view37.safetensors"))
    expected = _extracted(run, files, [*LABEL_METRICS, *PAIR_METRICS],
                          labels=str(files["tmp"] / "y37.safetensors"),
                          pair=str(files["tmp"] / "view37.safetensors"))
    _equal(report, expected, [*LABEL_METRICS, *PAIR_METRICS])
    assert report.inputs[0].n == 37
    assert report.metrics["class_balance"] == pytest.approx(_balance(y), rel=1e-12)
    assert report.metrics["class_balance"] != pytest.approx(_balance(tiny_rows()[1]))


def _short(files: dict[str, Path], rows: int) -> Path:
    path = files["tmp"] / f"y{rows}.safetensors"
    save_file({"y": (torch.arange(rows) % 3)}, str(path))
    return path


@pytest.mark.parametrize("data", [None, "tests.model_data:tiny_tuples"])
def test_a_row_count_known_in_advance_is_checked_before_the_model_runs(
        files: dict[str, Path], data: str | None) -> None:
    """A tensor file or a sized Dataset: the file's rows must equal the data's examples
    (even with --limit: the file is aligned with the data, then trimmed)."""
    path = _short(files, 119)
    with pytest.raises(InputError, match=r"has 119 rows for the 120 (rows|examples) of"):
        analyze_model(_run(files, data, limit=10), labels=str(path), **F64)


def test_data_of_unknown_length_checks_the_rows_during_and_after_the_pass(
        files: dict[str, Path]) -> None:
    data = "tests.model_data:tiny_ready"  # batches of 50, 7, 33, 30
    with pytest.raises(InputError) as short:  # found at the batch that reads past the end
        analyze_model(_run(files, data), labels=str(_short(files, 60)), **F64)
    assert str(short.value) == (
        f"{_short(files, 60)}[y]: has 60 rows, but {data} gives more examples (at least 90); "
        "the file must hold one row per example of --data, in the same order")
    with pytest.raises(InputError) as long:  # found at the end of the pass
        analyze_model(_run(files, data), pair=str(files["tmp"] / "view.safetensors"),
                      labels=str(_short(files, 121)), **F64)
    assert str(long.value).startswith(f"{_short(files, 121)}[y]: has 121 rows for the 120 "
                                      f"examples of {data};")
    # --limit ends the pass early: the rest of a longer file is left unread
    assert sum(TINY_READY[:2]) == 57
    analyze_model(_run(files, data, limit=57), labels=str(_short(files, 121)), **F64)


def test_cli_model_run_with_labels_and_a_wrong_length_exits_2_on_one_line(
        files: dict[str, Path]) -> None:
    base = ["analyze", "--model", "tests.model_data:tiny", "--weights", str(files["weights"]),
            "--data", str(files["data"]), "--data-key", "inputs", "--layer", "act",
            "--precision", "float64", "-q"]
    ok = run_main([*base, "--labels", "labels", "--pair", str(files["view"]), "-m",
                   "nc1,pair_cka", "-f", "json"])
    assert ok.returncode == 0, ok.stderr
    expected = _extracted(_run(files, layers=["act"]), files, ["nc1", "pair_cka"],
                          labels=str(files["labels"]), pair=str(files["view"]))["act"]
    got = json.loads(ok.stdout)["inputs"][0]["metrics"]
    assert got["nc1"] == pytest.approx(expected.metrics["nc1"], rel=1e-10)
    assert got["pair_cka"] == pytest.approx(expected.metrics["pair_cka"], rel=1e-10)
    bad = run_main([*base, "--labels", str(_short(files, 100))])
    assert bad.returncode == 2
    assert bad.stderr.strip().count("\n") == 0 and "Traceback" not in bad.stderr
    assert bad.stderr.startswith(f"reprdiag: error: {_short(files, 100)}[y]: has 100 rows "
                                 f"for the 120 rows of {files['data']}[inputs] (--labels)")


@pytest.mark.parametrize(("data", "options", "error", "message"), [
    (None, {"labels": "batch"}, UsageError, "--labels batch takes the labels the batches "
     "carry, but those of .*data.safetensors.inputs. are plain rows"),
    (None, {"labels": "nope"}, UsageError, "nope"),  # not an array of the data file
    ("tests.model_data:tiny_dicts", {"labels": "y"}, InputError,
     r"its batches have no 'y' entry \(they hold 'x', 'label'\)"),
    ("tests.model_data:tiny_tuples", {"labels": "label"}, InputError,
     "--labels 'label' names a dict entry, but its batches are tuples; pass --labels batch"),
    ("tests.model_data:digits", {"labels": "batch"}, UsageError, "are plain rows"),
    ("tests.model_data:tiny_ready", {"pair": "view"}, UsageError,
     "--pair 'view' names a key, but tests.model_data:tiny_ready is not a tensor file"),
])
def test_labels_or_pair_the_data_cannot_give_are_one_line_errors(
        files: dict[str, Path], data: str | None, options: dict[str, str],
        error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=message) as info:
        analyze_model(_run(files, data), **options, **F64)
    assert "\n" not in str(info.value)
