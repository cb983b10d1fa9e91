"""``reprdiag analyze --model`` and ``reprdiag extract`` through the console-script entry point."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from reprdiag.examples.digits import build, random_inputs
from tests.helpers import SAMPLE, assert_one_line_error, run_main

FACTORY = "reprdiag.examples.digits:build"
WEIGHTS = str(SAMPLE / "digits-mlp.safetensors")
DATA = str(SAMPLE / "digits.safetensors")
LAYERS = ["fc1", "relu1", "fc2", "relu2", "fc3", "relu3", "head"]


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return run_main(list(args))


def _layer_args(layers: list[str]) -> list[str]:
    return [a for name in layers for a in ("--layer", name)]


def _metrics(stdout: str) -> list[tuple[int, int, dict[str, float]]]:
    return [(r["n"], r["d"], r["metrics"]) for r in json.loads(stdout)["inputs"]]


def test_extract_then_analyze_equals_analyze_model(tmp_path: Path) -> None:
    layers = ["fc1", "relu2", "fc3", "head"]
    common = ["--model", FACTORY, "--weights", WEIGHTS, "--data", DATA, *_layer_args(layers),
              "--batch-size", "100", "--limit", "900"]
    out = tmp_path / "emb.safetensors"
    wrote = cli("extract", *common, "-o", str(out))
    assert wrote.returncode == 0, wrote.stderr
    assert "fc1" in wrote.stdout and "900 × 128" in wrote.stdout
    stats = ["--precision", "float64", "--format", "json", "--metrics",
             "vne,effective_rank,rankme,isoscore,avg_cosine,cov_offdiag,er_entropy"]
    from_file = cli("analyze", str(out), *stats)
    direct = cli("analyze", *common, *stats, "--out", str(tmp_path / "run"))
    assert from_file.returncode == direct.returncode == 0, from_file.stderr + direct.stderr
    assert [r["key"] for r in json.loads(direct.stdout)["inputs"]] == layers  # depth order
    assert [r["key"] for r in json.loads(from_file.stdout)["inputs"]] == layers
    a, b = _metrics(from_file.stdout), _metrics(direct.stdout)
    assert [x[:2] for x in a] == [x[:2] for x in b] == [(900, 128), (900, 64), (900, 32),
                                                         (900, 10)]
    for (_, _, ma), (_, _, mb) in zip(a, b, strict=True):
        assert ma.keys() == mb.keys()
        for name in ma:
            assert math.isclose(ma[name], mb[name], rel_tol=1e-10, abs_tol=1e-12), name
    assert (tmp_path / "run" / "layers.png").stat().st_size > 0
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    assert report["options"]["weights"] == WEIGHTS and report["options"]["layers"] == layers


def test_exported_and_torchscript_programs(tmp_path: Path) -> None:
    model = build(hidden=32).eval()
    x = random_inputs(8)
    program = torch.export.export(model, (x,), dynamic_shapes=({0: torch.export.Dim("b")},))
    torch.export.save(program, tmp_path / "m.pt2")
    torch.jit.trace(model, x).save(str(tmp_path / "m.ts"))
    for spec in ("m.pt2", "m.ts"):
        out = tmp_path / f"{spec}.h5"
        done = cli("extract", "--model", str(tmp_path / spec), "--data", DATA, "--layer",
                   "relu2", "--limit", "300", "-o", str(out), "-q")
        assert done.returncode == 0, done.stderr
        if spec == "m.pt2":
            assert done.stderr == "", done.stderr
        else:  # TorchScript is deprecated in torch: one warning line pointing to .pt2
            lines = done.stderr.strip().splitlines()
            assert len(lines) == 1 and "TorchScript is deprecated" in lines[0], done.stderr
            assert ".pt2" in lines[0]
        import h5py

        with h5py.File(out) as f:
            got = torch.from_numpy(f["relu2"][:])
        with torch.no_grad():
            want = torch.relu(model.fc2(torch.relu(model.fc1(load_file(DATA)["inputs"][:300]))))
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)


def test_list_layers() -> None:
    done = cli("analyze", "--model", FACTORY, "--data", DATA, "--list-layers")
    assert done.returncode == 0, done.stderr
    lines = [ln for ln in done.stdout.splitlines() if "Linear" in ln or "ReLU" in ln]
    assert [ln.split()[1] for ln in lines] == LAYERS
    assert "64 × 128" in done.stdout  # fc1's output on the first batch of 64


def test_wrong_layer_exits_2_with_close_matches() -> None:
    done = cli("analyze", "--model", FACTORY, "--data", DATA, "--layer", "relu_2")
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr
    assert done.stderr.startswith("reprdiag: error: reprdiag.examples.digits:build: has no "
                                  "layer 'relu_2'; did you mean 'relu2'")


def test_factory_that_raises_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                        ) -> None:
    (tmp_path / "boom.py").write_text("def build(size=3):\n    raise RuntimeError('bad size')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "boom", raising=False)
    try:
        done = cli("analyze", "--model", "boom:build", "--model-arg", "size=5", "--data", DATA)
    finally:
        sys.modules.pop("boom", None)
    assert done.returncode == 2
    assert done.stderr == ("reprdiag: error: boom:build: model factory raised RuntimeError: "
                           "bad size; fix the model factory or its arguments\n")


@pytest.mark.parametrize(("args", "message"), [
    (["--model", FACTORY], "--model needs --data"),
    (["--model", FACTORY, "--data", DATA, "--weights", str(SAMPLE / "missing.pt")],
     "missing.pt: no such file"),
    (["--model", "nosuchpkg.mod:build", "--data", DATA], "cannot import module 'nosuchpkg.mod'"),
    (["--model", FACTORY, "--data", DATA, "--batch-size", "0"], "--batch-size must be at least"),
])
def test_bad_model_options_exit_2(args: list[str], message: str) -> None:
    done = cli("analyze", *args)
    assert done.returncode == 2 and message in done.stderr, done.stderr
    assert done.stderr.count("\n") == 1


@pytest.mark.parametrize(("out", "needle"), [
    ("/proc/reprdiag-test/e.safetensors", "/proc/reprdiag-test/e.safetensors: cannot be "
     "written (No such file or directory); pick a writable --out"),
    (".", ".: is a folder, not a file; give --out a file name")])
def test_unwritable_extract_out_is_refused_before_the_model_runs(out: str, needle: str,
                                                                 tmp_path: Path) -> None:
    """The data file does not even exist: the output is checked first."""
    proc = run_main(["extract", "--model", FACTORY, "--data", str(tmp_path / "nope.npy"),
                     "--out", out], tmp_path)
    assert_one_line_error(proc, 2, needle)
    assert list(tmp_path.iterdir()) == []
