"""No code stored in a ``.pt2`` archive runs: crafted archives whose payload would create a file.

Each crafted archive starts from a real ``torch.export.save`` and plants one of the entries that
``torch.export.load`` would unpickle (or ``dlopen``). The payload, when unpickled, creates a
marker file; every test asserts the marker never appears and the error names file and entry.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import pickle
import warnings
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from reprdiag.errors import InputError, ReprdiagWarning
from reprdiag.models.archive import check_export_archive, weights_only_loads
from reprdiag.models.load import ModelSpec, load_model
from tests.helpers import run_main


class Tiny(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = torch.nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.lin(x))


class Payload:
    """Unpickling it creates ``marker`` and yields a plausible weight (a 3×4 tensor)."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        code = f"(open({str(self.marker)!r}, 'w').close(), __import__('torch').zeros(3, 4))[1]"
        return eval, (code,)


def _saved(tmp_path: Path) -> Path:
    program = torch.export.export(Tiny().eval(), (torch.randn(2, 4),),
                                  dynamic_shapes=({0: torch.export.Dim("batch")},))
    path = tmp_path / "clean.pt2"
    torch.export.save(program, path)
    return path


def _rewrite(src: Path, dst: Path, edit: Callable[[dict[str, bytes], str], None]) -> Path:
    with zipfile.ZipFile(src) as archive:
        files = {n: archive.read(n) for n in archive.namelist()}
    root = next(iter(files)).split("/", 1)[0]
    edit(files, root)
    with zipfile.ZipFile(dst, "w") as archive:
        for name, data in files.items():
            archive.writestr(name, data)
    return dst


def _torch_save(obj: object) -> bytes:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


def _pickled_weight(marker: Path) -> Callable[[dict[str, bytes], str], None]:
    def edit(files: dict[str, bytes], root: str) -> None:
        name = f"{root}/data/weights/model_weights_config.json"
        config = json.loads(files[name])
        meta = config["config"]["lin.weight"]
        meta["use_pickle"] = True
        files[name] = json.dumps(config).encode()
        files[f"{root}/data/weights/{meta['path_name']}"] = _torch_save(Payload(marker))
    return edit


def _sample_inputs(marker: Path) -> Callable[[dict[str, bytes], str], None]:
    def edit(files: dict[str, bytes], root: str) -> None:
        files[f"{root}/data/sample_inputs/model.pt"] = _torch_save(Payload(marker))
    return edit


def _opaque_constant(marker: Path) -> Callable[[dict[str, bytes], str], None]:
    def edit(files: dict[str, bytes], root: str) -> None:
        name = f"{root}/data/constants/model_constants_config.json"
        config = json.loads(files[name])
        config["config"]["obj"] = {"path_name": "opaque_obj_0", "is_param": False,
                                   "use_pickle": False, "tensor_meta": None}
        files[name] = json.dumps(config).encode()
        files[f"{root}/data/constants/opaque_obj_0"] = pickle.dumps(Payload(marker))
    return edit


def _compiled(marker: Path) -> Callable[[dict[str, bytes], str], None]:
    def edit(files: dict[str, bytes], root: str) -> None:
        files[f"{root}/data/aotinductor/model/model.so"] = b"\x7fELF not really"
    return edit


CRAFTS = {
    "pickled-weight": (_pickled_weight, "data/weights/model_weights_config.json:lin.weight"),
    "sample-inputs": (_sample_inputs, "data/sample_inputs/model.pt"),
    "opaque-constant": (_opaque_constant, "data/constants/model_constants_config.json:obj"),
    "aotinductor": (_compiled, "data/aotinductor/model/model.so"),
}


@pytest.fixture
def marker(tmp_path: Path) -> Path:
    return tmp_path / "payload-ran"


def _crafted(tmp_path: Path, marker: Path, kind: str) -> Path:
    return _rewrite(_saved(tmp_path), tmp_path / f"{kind}.pt2", CRAFTS[kind][0](marker))


@pytest.mark.parametrize("kind", ["pickled-weight", "sample-inputs"])
def test_payload_is_live_under_plain_torch_export_load(tmp_path: Path, marker: Path,
                                                       kind: str) -> None:
    """The crafted archives are real exploits: plain ``torch.export.load`` runs them."""
    path = _crafted(tmp_path, marker, kind)
    with warnings.catch_warnings(), contextlib.suppress(Exception):
        warnings.simplefilter("ignore")
        torch.export.load(path)  # the sample-inputs payload runs, then torch fails on its type
    if not marker.exists():
        pytest.skip("this torch no longer unpickles the entry; the refusal below still holds")


@pytest.mark.parametrize("kind", sorted(CRAFTS))
def test_crafted_archive_is_refused_before_anything_runs(tmp_path: Path, marker: Path,
                                                         kind: str) -> None:
    path = _crafted(tmp_path, marker, kind)
    with pytest.raises(InputError) as err:
        load_model(ModelSpec(str(path)), torch.device("cpu"))
    message = str(err.value)
    assert path.name in message and CRAFTS[kind][1] in message, message
    assert "refused" in message and "nothing in the file was run" in message
    assert not marker.exists()


def test_clean_archive_still_loads_and_runs(tmp_path: Path) -> None:
    path = _saved(tmp_path)
    with open(path, "rb") as handle:
        check_export_archive(handle, path.name)
    probe = load_model(ModelSpec(str(path)), torch.device("cpu"))
    x = torch.randn(5, 4)
    torch.testing.assert_close(probe.module(x), torch.export.load(path).module()(x))


def test_weights_only_loads_forces_and_restores(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                marker: Path) -> None:
    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    blob = _torch_save(Payload(marker))
    with weights_only_loads(), pytest.raises(pickle.UnpicklingError):
        torch.load(io.BytesIO(blob), weights_only=False)
    assert not marker.exists()
    assert os.environ.get("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD") == "1"
    assert "TORCH_FORCE_WEIGHTS_ONLY_LOAD" not in os.environ


def test_torchscript_warns_and_points_to_pt2(tmp_path: Path) -> None:
    path = tmp_path / "m.ts"
    torch.jit.script(Tiny().eval()).save(str(path))
    with pytest.warns(ReprdiagWarning, match=r"TorchScript is deprecated.*\.pt2"):
        load_model(ModelSpec(str(path)), torch.device("cpu"))


def test_cli_refuses_crafted_archive_with_one_line(tmp_path: Path, marker: Path) -> None:
    """The command (through its console-script entry point): exit 2, one ``reprdiag: error:``
    line naming file and entry."""
    model = _crafted(tmp_path, marker, "pickled-weight")
    data = tmp_path / "x.safetensors"
    save_file({"x": torch.randn(16, 4)}, str(data))
    proc = run_main(["analyze", "--model", str(model), "--data", str(data), "-q", "-f", "csv"],
                    cwd=tmp_path)
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert proc.returncode == 2, proc.stderr
    assert len(lines) == 1 and lines[0].startswith("reprdiag: error: "), proc.stderr
    assert "pickled-weight.pt2" in lines[0] and "lin.weight" in lines[0]
    assert not marker.exists() and proc.stdout == ""
