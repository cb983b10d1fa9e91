"""Every failure of ``reprdiag analyze`` through the real CLI, in a subprocess.

Each case checks the exit code (docs/design.md §2), that stderr is exactly one
``reprdiag: error: ...`` line naming what is wrong, and that no traceback appears. The cases
run concurrently (a module fixture), since each subprocess pays for importing torch.
"""

from __future__ import annotations

import json
import os
import pickle
import signal
import struct
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from tests.helpers import PYTHON, assert_one_line_error, run_cli, run_cli_env, run_main

Maker = Callable[[Path], list[str]]
PROTECTED = "/proc/1/mem"


def rows(n: int = 64, d: int = 8, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, d)).astype(np.float32)




# -- files the cases read ---------------------------------------------------------------------
def write_all_formats(folder: Path) -> dict[str, Path]:
    """The same (64, 8) float32 rows in every supported format."""
    x = rows()
    paths = {"safetensors": folder / "e.safetensors", "hdf5": folder / "e.h5",
             "npy": folder / "e.npy", "npz": folder / "e.npz", "pt": folder / "e.pt",
             "pt-legacy": folder / "legacy.pt"}
    save_file({"emb": torch.from_numpy(x)}, str(paths["safetensors"]))
    with h5py.File(paths["hdf5"], "w") as f:
        f["emb"] = x
    np.save(paths["npy"], x)
    np.savez(paths["npz"], emb=x)
    torch.save({"emb": torch.from_numpy(x)}, paths["pt"])
    torch.save(torch.from_numpy(x), paths["pt-legacy"], _use_new_zipfile_serialization=False)
    return paths


def truncated(fmt: str) -> Maker:
    def make(tmp: Path) -> list[str]:
        src = write_all_formats(tmp)[fmt]
        data = src.read_bytes()
        out = tmp / f"cut-{src.name}"
        out.write_bytes(data[: len(data) * 2 // 3])  # cut in the middle of the data
        return [str(out)]
    return make


def safetensors_with(header: bytes, body: bytes = b"\0" * 2048) -> Maker:
    def make(tmp: Path) -> list[str]:
        path = tmp / "lie.safetensors"
        path.write_bytes(struct.pack("<Q", len(header)) + header + body)
        return [str(path)]
    return make


def safetensors_header_length(length: int) -> Maker:
    def make(tmp: Path) -> list[str]:
        path = tmp / "huge.safetensors"
        path.write_bytes(struct.pack("<Q", length) + b'{"emb": {}}' + b"\0" * 64)
        return [str(path)]
    return make


def npy_of(array: np.ndarray, name: str = "x.npy", *extra: str) -> Maker:
    def make(tmp: Path) -> list[str]:
        np.save(tmp / name, array)
        return [str(tmp / name), *extra]
    return make


def file_bytes(name: str, data: bytes) -> Maker:
    def make(tmp: Path) -> list[str]:
        (tmp / name).write_bytes(data)
        return [str(tmp / name)]
    return make


def with_nan(tmp: Path) -> list[str]:
    x = rows()
    x[5, 2], x[9, 0], x[40, 7] = np.nan, np.inf, -np.inf
    np.save(tmp / "nan.npy", x)
    return [str(tmp / "nan.npy")]


def hdf5_without_2d(tmp: Path) -> list[str]:
    with h5py.File(tmp / "flat.h5", "w") as f:
        f["bias"] = np.arange(5.0)
        f["name"] = np.bytes_("hello")
    return [str(tmp / "flat.h5")]


def npz_objects(tmp: Path) -> list[str]:
    np.savez(tmp / "obj.npz", emb=np.array([{"a": 1}, 2], dtype=object))
    return [str(tmp / "obj.npz")]


def npy_objects(tmp: Path) -> list[str]:
    np.save(tmp / "obj.npy", np.array([{"a": 1}, 2], dtype=object), allow_pickle=True)
    return [str(tmp / "obj.npy")]


class Payload:
    """Unpickling this would create the file named in ``target``."""

    def __init__(self, target: str):
        self.target = target

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.system, (f"touch {self.target}",))


def malicious_pt(zip_format: bool) -> Maker:
    def make(tmp: Path) -> list[str]:
        path = tmp / ("evil.pt" if zip_format else "evil-raw.pt")
        payload = Payload(str(tmp / "PWNED"))
        if zip_format:
            torch.save({"emb": torch.from_numpy(rows()), "x": payload}, path)
        else:
            path.write_bytes(pickle.dumps(payload, protocol=2))
        return [str(path)]
    return make


def npz_with_vector(tmp: Path) -> list[str]:
    np.savez(tmp / "mixed.npz", emb=rows(), bias=np.arange(7.0))
    return [str(tmp / "mixed.npz"), "--key", "bias"]


def valid(tmp: Path) -> list[str]:
    np.save(tmp / "ok.npy", rows())
    return [str(tmp / "ok.npy")]


def valid_with(*extra: str) -> Maker:
    return lambda tmp: [*valid(tmp), *extra]


def renamed_npy(tmp: Path) -> list[str]:
    np.save(tmp / "ok.npy", rows())
    os.replace(tmp / "ok.npy", tmp / "emb.weird")
    return [str(tmp / "emb.weird")]


def run_folder(report_json: str) -> Maker:
    def make(tmp: Path) -> list[str]:
        (tmp / "run").mkdir()
        (tmp / "run" / "report.json").write_text(report_json)
        return [str(tmp / "run")]
    return make


def out_holding(name: str) -> Maker:
    """A missing input and an --out folder holding ``name`` (a folder if it ends in /)."""
    def make(tmp: Path) -> list[str]:
        target = tmp / "run" / name
        target.mkdir(parents=True) if name.endswith("/") else (
            target.parent.mkdir(), target.write_text("mine"))
        return [str(tmp / "nope.npy"), "--out", str(tmp / "run")]
    return make


def with_gate(*extra: str) -> Maker:
    """A missing input, a valid gate config and ``extra`` options."""
    def make(tmp: Path) -> list[str]:
        (tmp / "g.toml").write_text("[gate]\nrules = {rankme = {min = 1}}\n")
        return [str(tmp / "nope.npy"), "--gate", str(tmp / "g.toml"), *extra]
    return make


def tensor_file(tmp: Path, name: str, tensor: torch.Tensor) -> list[str]:
    """``{"emb": tensor}`` saved as safetensors or torch.save, by the name's extension."""
    path = tmp / name
    if name.endswith(".safetensors"):
        save_file({"emb": tensor}, str(path))
    else:
        torch.save({"emb": tensor}, path)
    return [str(path)]


def margin_only(tmp: Path) -> list[str]:
    (tmp / "m.toml").write_text("[gate]\nmargin_se = 2\n")
    return valid(tmp)


def zero_rows(tmp: Path) -> list[str]:
    x = rows()
    x[[3, 30]] = 0.0
    np.save(tmp / "z.npy", x)
    return [str(tmp / "z.npy")]


@dataclass(frozen=True)
class Case:
    make: Maker
    code: int
    needles: tuple[str, ...]


CASES: dict[str, Case] = {
    # paths
    "missing": Case(lambda t: [str(t / "nope.npy")], 2, ("nope.npy: no such file",)),
    # root may read a chmod-000 file, but nobody may read another process's memory
    "permission-denied": Case(lambda t: [PROTECTED], 2, (f"{PROTECTED}: permission denied",)),
    "directory": Case(lambda t: [str(t)], 2, ("is a directory, not an embedding file",)),
    "empty": Case(file_bytes("empty.npy", b""), 2, ("empty.npy: is empty (0 bytes)",)),
    "junk-with-npy-extension": Case(file_bytes("junk.npy", b"not an array at all, sorry"), 2,
                                    ("not a recognised embedding file although its "
                                     "extension says npy",)),
    **{f"truncated-{fmt}": Case(truncated(fmt), 2, ("cut-",)) for fmt in
       ("safetensors", "hdf5", "npy", "npz", "pt", "pt-legacy")},
    "safetensors-offsets-lie": Case(safetensors_with(
        b'{"emb": {"dtype": "F32", "shape": [64, 8], "data_offsets": [0, 99999999]}}'), 2,
        ("lie.safetensors: is not a readable safetensors file", "offset")),
    "safetensors-header-absurd": Case(safetensors_header_length(2**62), 2,
                                      ("header (the format allows at most",)),
    "safetensors-header-past-eof": Case(safetensors_header_length(90_000_000), 2,
                                        ("claims a 90000000-byte header but the file has "
                                         "only",)),
    "hdf5-no-2d": Case(hdf5_without_2d, 2, ("flat.h5: holds no 2-D array",)),
    "npz-object-array": Case(npz_objects, 2, ("obj.npz[emb]", "object")),
    "npy-object-array": Case(npy_objects, 2, ("obj.npy", "objects")),
    # shapes and values
    "0-rows": Case(npy_of(np.zeros((0, 8), np.float32)), 2, ("x.npy: has 0 rows",)),
    "1-row": Case(npy_of(rows(1)), 2, ("has only 1 row",)),
    "1-D": Case(npy_of(rows(1, 50)[0]), 2, ("holds no 2-D array",)),
    "1-D-by-key": Case(npz_with_vector, 2, ("mixed.npz[bias]: is 1-D with shape (7,)",)),
    "4-D-without-pool": Case(npy_of(rows(120, 4).reshape(10, 3, 4, 4)), 2,
                             ("is 4-D with shape (10, 3, 4, 4)", "--pool mean|first|flatten")),
    "nan-and-inf": Case(with_nan, 2, ("has 3 row(s) containing NaN or Inf (first at row 5)",
                                      "--nan drop")),
    "float64-too-large": Case(npy_of(rows().astype(np.float64) * 1e200), 2,
                              ("too large for float64 statistics", "rescale")),
    # untrusted content
    "pickle-payload-zip": Case(malicious_pt(True), 2, ("weights_only=True) refuses",
                                                       "posix.system")),
    "pickle-payload-raw": Case(malicious_pt(False), 2, ("weights_only=True) refuses",)),
    # the model path (--model imports only the module it names)
    "model-missing-module": Case(lambda t: ["--model", "no_such_reprdiag_module:build",
                                            "--data", *valid(t)], 2,
                                 ("cannot import module 'no_such_reprdiag_module'",)),
    "model-weights-pickle-payload": Case(lambda t: ["--model", "torch.nn:Identity", "--weights",
                                                    *malicious_pt(True)(t), "--data",
                                                    *valid(t)], 2,
                                         ("is not a weights-only state dict", "posix.system",
                                          "nothing in it was run")),
    "model-data-nan": Case(lambda t: ["--model", "torch.nn:Identity", "--data",
                                      *with_nan(t)], 2,
                           ("has 3 row(s) containing NaN or Inf (first at row 5)",)),
    "complex-safetensors": Case(lambda t: [*tensor_file(t, "c.safetensors", torch.randn(
        64, 8, dtype=torch.complex64))], 2, ("c.safetensors[emb]: holds complex values",
                                              "torch.view_as_real")),
    "sparse-pt": Case(lambda t: [*tensor_file(t, "s.pt", torch.eye(64, 8).to_sparse())], 2,
                      ("s.pt[emb]: is a sparse tensor (layout sparse_coo)", ".to_dense()")),
    # options
    "unknown-metric": Case(valid_with("-m", "vne,rankmee"), 2,
                           ("unknown metric 'rankmee'", "did you mean 'rankme'?", "valid:")),
    "unknown-key": Case(lambda t: [*npz_with_vector(t)[:1], "--key", "embb"], 2,
                        ("has no key 'embb'", "did you mean 'emb'?", "valid keys:")),
    "cuda-without-gpu": Case(valid_with("--device", "cuda"), 2,
                             ("no CUDA GPU is available", "--device cpu")),
    "unknown-device": Case(valid_with("--device", "tpu"), 2, ("unknown device 'tpu'",)),
    "kappa-zero": Case(valid_with("--kappa", "0"), 2, ("kappa must be a positive number",)),
    "kappa-negative": Case(valid_with("--kappa", "-3"), 2, ("got -3.0",)),
    "sample-size-1": Case(valid_with("--sample-size", "1"), 2,
                          ("sample size must be at least 2, got 1",)),
    "bad-format-value": Case(valid_with("--format", "yaml"), 2,
                             ("Invalid value for '--format'", "see 'reprdiag analyze --help'")),
    "unknown-option": Case(valid_with("--bogus"), 2, ("No such option: --bogus",)),
    "bad-integer": Case(valid_with("--chunk-size", "many"), 2, ("'--chunk-size'",)),
    "bad-plot-format": Case(lambda t: [*valid(t), "--out", str(t / "run"), "--plot-format",
                                       "bmp"], 2, ("Invalid value for '--plot-format'", "'bmp'")),
    "unwritable-out": Case(valid_with("--out", "/proc/reprdiag-test/run"), 2,
                           ("/proc/reprdiag-test/run", "pick a writable --out")),
    # outputs are checked before any data is read: these inputs do not even exist
    "unwritable-out-before-reading": Case(
        lambda t: [str(t / "nope.npy"), "--out", "/proc/reprdiag-test/run"], 2,
        ("/proc/reprdiag-test/run: cannot write the output folder", "pick a writable --out")),
    "out-is-a-file": Case(lambda t: [str(t / "nope.npy"), "--out", *file_bytes("f", b"x")(t)],
                          2, ("f: exists and is not a folder; pick a folder name for --out",)),
    "out-report-json-is-a-folder": Case(out_holding("report.json/"), 2,
                                        ("run: holds what reprdiag did not write (report.json/)",
                                         "move them away or pick a new --out folder")),
    "out-holds-other-files": Case(out_holding("notes.txt"), 2,
                                  ("did not write (notes.txt); --out replaces the whole "
                                   "folder on each run",)),
    "unwritable-junit": Case(with_gate("--junit", "/proc/reprdiag-test/gate.xml"), 2,
                             ("/proc/reprdiag-test/gate.xml: cannot be written",
                              "pick a writable --junit")),
    "junit-is-a-folder": Case(lambda t: with_gate("--junit", str(t))(t), 2,
                              ("is a folder, not a file; give --junit a file name",)),
}


#: Every case runs in-process through the console-script ``main()``; these also run as a real
#: subprocess (each costs ~3 s of CPU importing torch, so one per kind of failure path:
#: loader, value check, untrusted content, option check, click parsing, output folder).
SUBPROCESS = ("permission-denied", "truncated-npz", "nan-and-inf", "pickle-payload-zip",
              "cuda-without-gpu", "unknown-option", "bad-plot-format")



def cli_args(name: str, tmp: Path) -> list[str]:
    return ["analyze", "-q", "-f", "csv", *CASES[name].make(tmp)]


#: The same failures through ``compare`` and ``gate`` (they load runs or analyze files).
OTHER_COMMANDS: dict[str, tuple[list[str], Maker, tuple[str, ...]]] = {
    "compare-missing": (["compare"], lambda t: [str(t / "nope"), *valid(t)],
                        ("nope: no such file",)),
    "compare-truncated": (["compare"], lambda t: [*truncated("npz")(t), *valid(t)],
                          ("cut-e.npz: is a zip archive",)),
    "compare-bad-report": (["compare"], lambda t: [*run_folder('{"inputs": [{}]}')(t),
                                                   *valid(t)],
                           ("run/report.json: is not a valid reprdiag report (missing field",)),
    "compare-not-json": (["compare"], lambda t: [*run_folder("{oops")(t), *valid(t)],
                         ("is not a valid reprdiag report",)),
    "gate-nan": (["gate", "--fail-if", "rankme < 2"], with_nan,
                 ("has 3 row(s) containing NaN or Inf (first at row 5)",)),
    "gate-payload": (["gate"], malicious_pt(True), ("weights_only=True) refuses",)),
    "gate-bad-rule": (["gate", "--fail-if", "rankmee < 2"], valid,
                      ("unknown metric 'rankmee'", "did you mean 'rankme'?")),
    "gate-missing-config": (["gate", "--config", "missing.toml"], valid,
                            ("missing.toml: no such config file",)),
    "gate-unwritable-junit": (["gate", "--junit", "/proc/reprdiag-test/gate.xml"],
                              lambda t: [str(t / "nope.npy")],
                              ("/proc/reprdiag-test/gate.xml: cannot be written",
                               "pick a writable --junit")),
    "gate-empty-report": (["gate", "--fail-if", "rankme < 1"],
                          run_folder('{"schema": 1, "inputs": []}'),
                          ("run/report.json: is not a valid reprdiag report (inputs: [] should be "
                           "non-empty)",)),
    "compare-schema-99": (["compare"], lambda t: [*run_folder('{"schema": 99}')(t), *valid(t)],
                          ("(schema: 99, but this reprdiag reads schema 1 only)",)),
    "gate-fail-if-nan": (["gate", "--fail-if", "rankme < nan"], valid,
                         ("--fail-if: rankme.min must be a finite number, got nan",)),
    "gate-margin-without-rules": (["gate", "--config", "m.toml"], margin_only,
                                  ("m.toml: margin_se = 2 in the gate table has no rule to "
                                   "apply to",)),
    "compare-out-holds-other-files": (["compare"], lambda t: [*out_holding("a.txt")(t), "x"],
                                      ("run: holds what reprdiag did not write (a.txt)",)),
}


@pytest.mark.parametrize("name", list(OTHER_COMMANDS))
def test_compare_and_gate_failures_are_one_line(name: str, tmp_path: Path) -> None:
    command, make, needles = OTHER_COMMANDS[name]
    proc = run_main([*command, "-f", "csv", *make(tmp_path)], tmp_path)
    assert_one_line_error(proc, 2, *needles)
    assert proc.stdout == "" and not (tmp_path / "PWNED").exists()


@pytest.mark.parametrize("command", [["compare"], ["gate", "--fail-if", "rankme < 1"]])
def test_compare_and_gate_warn_about_zero_rows(command: list[str], tmp_path: Path) -> None:
    zero_rows(tmp_path)
    files = ["z.npy", "z.npy"] if command == ["compare"] else ["z.npy"]  # warned once
    args = [*command, "-f", "csv", *files]
    proc = run_main(args, tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.splitlines() == ["reprdiag: warning: z.npy: 2 of 64 rows are all zeros; "
                                        "x/‖x‖ is undefined for them and they count as the zero "
                                        "vector in the normalized metrics"]


@pytest.fixture(scope="module")
def subprocess_results(tmp_path_factory: pytest.TempPathFactory
                       ) -> dict[str, tuple[Path, subprocess.CompletedProcess[str]]]:
    """Run the :data:`SUBPROCESS` cases once, two at a time."""
    def one(name: str) -> tuple[str, tuple[Path, subprocess.CompletedProcess[str]]]:
        tmp = tmp_path_factory.mktemp(name)
        return name, (tmp, run_cli(*cli_args(name, tmp), cwd=tmp))

    with ThreadPoolExecutor(max_workers=2) as pool:
        return dict(pool.map(one, SUBPROCESS))


def _skip_if_readable(name: str) -> None:
    if name == "permission-denied" and os.access(PROTECTED, os.R_OK):
        try:
            Path(PROTECTED).open("rb").close()
        except PermissionError:
            return
        except OSError:
            pass
        pytest.skip(f"{PROTECTED} is readable here")


@pytest.mark.parametrize("name", list(CASES))
def test_failure_is_one_line(name: str, tmp_path: Path) -> None:
    _skip_if_readable(name)
    proc = run_main(cli_args(name, tmp_path), tmp_path)
    assert_one_line_error(proc, CASES[name].code, *CASES[name].needles)
    assert proc.stdout == ""  # nothing printed as if it were a result


@pytest.mark.parametrize("name", SUBPROCESS)
def test_failure_is_one_line_in_a_subprocess(name: str, subprocess_results: dict) -> None:
    _skip_if_readable(name)
    _, proc = subprocess_results[name]
    assert_one_line_error(proc, CASES[name].code, *CASES[name].needles)
    assert proc.stdout == ""


def test_pickle_payload_never_runs(subprocess_results: dict, tmp_path: Path) -> None:
    tmp, _ = subprocess_results["pickle-payload-zip"]
    assert (tmp / "evil.pt").exists() and not (tmp / "PWNED").exists()
    for name in ("pickle-payload-raw", "model-weights-pickle-payload"):
        folder = tmp_path / name
        folder.mkdir()
        assert run_main(cli_args(name, folder), folder).returncode == 2
        assert list(folder.glob("evil*.pt")) and not (folder / "PWNED").exists()


def test_bad_plot_format_writes_nothing(subprocess_results: dict) -> None:
    tmp, _ = subprocess_results["bad-plot-format"]
    assert not (tmp / "run").exists()


# -- inputs that succeed, with or without a warning ---------------------------------------------
def analyze_json(*args: str, cwd: Path, subprocess: bool = False) -> tuple[dict, list[str]]:
    argv = ["analyze", *args, "-q", "-f", "json"]
    proc = run_cli(*argv, cwd=cwd) if subprocess else run_main(argv, cwd)
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    return json.loads(proc.stdout), [ln for ln in proc.stderr.splitlines() if ln.strip()]


def test_extension_is_only_a_hint(tmp_path: Path) -> None:
    report, warnings = analyze_json(*renamed_npy(tmp_path), "-m", "vne", cwd=tmp_path)
    assert report["inputs"][0]["n"] == 64 and warnings == []


def test_zero_rows_and_dropped_rows_warn(tmp_path: Path) -> None:
    """Zero rows are counted and reported; --nan drop says how many rows it dropped; both as
    one-line warnings on stderr and in report.json."""
    x = rows()
    x[[3, 30]] = 0.0
    x[5, 2] = np.nan
    np.save(tmp_path / "z.npy", x)
    report, warnings = analyze_json("z.npy", "--nan", "drop", "-m", "vne", cwd=tmp_path,
                                    subprocess=True)
    result = report["inputs"][0]
    assert (result["n"], result["zero_rows"], result["rows_dropped"]) == (63, 2, 1)
    assert len(warnings) == 2 and all(w.startswith("reprdiag: warning: z.npy: ")
                                      for w in warnings)
    assert "dropped 1 of 64 rows holding NaN or Inf" in warnings[0]
    assert "2 of 63 rows are all zeros" in warnings[1]
    assert result["warnings"] == [w.split("z.npy: ", 1)[1] for w in warnings]


def test_small_shapes_succeed(tmp_path: Path) -> None:
    """d = 1 and N < d are valid inputs; α-ReQ is null (not NaN in JSON) with < 2 eigenvalues."""
    np.save(tmp_path / "d1.npy", rows(50, 1))
    np.save(tmp_path / "wide.npy", rows(5, 40))
    report, warnings = analyze_json(str(tmp_path / "d1.npy"), str(tmp_path / "wide.npy"),
                                    cwd=tmp_path)
    d1, wide = report["inputs"]
    assert (d1["d"], wide["n"], wide["d"]) == (1, 5, 40) and warnings == []
    assert d1["metrics"]["alpha_req"] is None and d1["metrics"]["vne"] == 0
    assert wide["solver"]["covariance"].startswith("gram N×N")


# -- Ctrl-C ------------------------------------------------------------------------------------
def _mapped(pid: int, path: Path) -> bool:
    try:
        return str(path) in Path(f"/proc/{pid}/maps").read_text()
    except OSError:
        return False


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/PID/maps")
def _default_sigint() -> None:
    # A job started in the background inherits SIGINT as ignored, and Python then never
    # installs its KeyboardInterrupt handler: restore the default so the test means the same
    # in a terminal, in CI and under `&`.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_ctrl_c_exits_130_and_leaves_no_report(tmp_path: Path) -> None:
    """SIGINT once the file is being read: exit 130, one line, no report.json, no temp files."""
    np.save(tmp_path / "big.npy", np.random.default_rng(0).standard_normal(
        (200_000, 32)).astype(np.float32))
    out = tmp_path / "run"
    proc = subprocess.Popen([PYTHON, "-m", "reprdiag", "analyze", str(tmp_path / "big.npy"),
                             "--chunk-size", "16", "--out", str(out), "-q"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=run_cli_env(), preexec_fn=_default_sigint)
    deadline = time.monotonic() + 120
    while not _mapped(proc.pid, tmp_path / "big.npy") and proc.poll() is None:
        assert time.monotonic() < deadline, "the file was never opened"
        time.sleep(0.05)
    time.sleep(0.3)  # well inside the pass (12 500 chunks)
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=120)
    finished = subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)
    assert_one_line_error(finished, 130, "interrupted; no report was written")
    assert not (out / "report.json").exists()
    leftovers = list(out.glob("*")) if out.exists() else []
    assert [p for p in leftovers if p.name.endswith(".tmp")] == []
    assert leftovers == []


def test_second_writer_of_one_out_folder_fails_with_exit_2(tmp_path: Path) -> None:
    """While another writer holds the --out folder's lock, a run waits REPRDIAG_LOCK_WAIT_S,
    then fails with one line naming the holder; the folder keeps the first run."""
    from reprdiag.report.folder import FolderLock

    valid(tmp_path)
    out = tmp_path / "run"
    env = {**run_cli_env(), "REPRDIAG_LOCK_WAIT_S": "0.5"}
    with FolderLock(out):
        proc = subprocess.run([PYTHON, "-m", "reprdiag", "analyze", "ok.npy", "-m", "rankme",
                               "--out", "run", "-q", "-f", "csv"], capture_output=True,
                              text=True, env=env, cwd=tmp_path, timeout=120)
    assert_one_line_error(proc, 2, f"run: is being written by another reprdiag run (pid "
                          f"{os.getpid()}); wait for it to finish or pick another --out")
    assert not out.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["ok.npy"]
