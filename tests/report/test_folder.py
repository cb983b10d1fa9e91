"""The --out run folder: swapped in whole, locked, umask-respecting (reprdiag.report.folder)."""

from __future__ import annotations

import errno
import os
import stat
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

import reprdiag
from reprdiag.errors import ReprdiagError, ResourceError, UsageError
from reprdiag.report import export, folder
from reprdiag.report.export import atomic_write
from reprdiag.report.folder import FolderLock, owned_name, write_run_folder


@pytest.fixture(scope="module")
def reports() -> tuple[reprdiag.Report, reprdiag.Report]:
    """A run of three inputs and a run of one (the rerun analyzes fewer inputs)."""
    g = torch.Generator().manual_seed(0)
    xs = [torch.randn(300, 6, dtype=torch.float64, generator=g) for _ in range(3)]
    three = reprdiag.analyze(xs, metrics=["rankme", "vne"], device="cpu")
    one = reprdiag.analyze(xs[:1], metrics=["rankme"], device="cpu")
    return three, one


def snapshot(path: Path) -> dict[str, bytes]:
    return {p.name: b"<dir>" if p.is_dir() else p.read_bytes() for p in sorted(path.iterdir())}


def beside(out: Path) -> list[str]:
    """Everything next to ``out`` other than ``out`` itself (staging folders, lock files)."""
    return sorted(p.name for p in out.parent.iterdir() if p.name != out.name)


@pytest.fixture
def umask() -> Iterator[None]:
    old = os.umask(0o027)
    yield
    os.umask(old)


def test_rerun_replaces_the_whole_folder(reports, tmp_path: Path) -> None:
    """A rerun on fewer inputs leaves no plot of the inputs it no longer analyzes."""
    three, one = reports
    out = tmp_path / "run"
    three.save(out)
    assert {"layers.png", "spectrum-tensor2.png"} <= set(snapshot(out))
    one.save(out)
    assert sorted(snapshot(out)) == ["metrics.csv", "report.html", "report.json",
                                     "spectrum.csv", "spectrum.png", "summary.md"]
    assert reprdiag.Report.load(out).metrics.keys() == {"rankme"}
    assert beside(out) == []  # no staging folder, no lock file left


@pytest.mark.parametrize("exchange", [True, False], ids=["renameat2", "two-renames"])
def test_failed_rerun_keeps_the_old_run(reports, tmp_path: Path, monkeypatch,
                                        exchange: bool) -> None:
    """Disk full while the plots are written: exit-3 error naming the file, the old run
    untouched byte for byte, nothing left beside it."""
    three, one = reports
    out = tmp_path / "run"
    three.save(out)
    before = snapshot(out)
    if not exchange:
        monkeypatch.setattr(folder, "_exchange", lambda a, b: False)

    def full(*_a, **_k):
        raise OSError(errno.ENOSPC, "No space left on device", str(_a[1] / "spectrum.png"))

    monkeypatch.setattr("reprdiag.report.plots.save_plots", full)
    with pytest.raises(ResourceError) as info:
        one.save(out)
    assert info.value.one_line() == (f"{out}/spectrum.png: cannot be written: No space left on "
                                     "device; free some disk space or pick another --out")
    assert snapshot(out) == before and beside(out) == []
    monkeypatch.undo()
    if not exchange:  # the fallback path also swaps a complete run in
        monkeypatch.setattr(folder, "_exchange", lambda a, b: False)
    one.save(out)
    assert "layers.png" not in snapshot(out) and beside(out) == []


def test_interrupt_while_writing_keeps_the_old_run(reports, tmp_path: Path) -> None:
    three, _ = reports
    out = tmp_path / "run"
    three.save(out)
    before = snapshot(out)

    def interrupted(staging: Path) -> None:
        (staging / "report.json").write_text("{}")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        write_run_folder(out, interrupted)
    assert snapshot(out) == before and beside(out) == []


def test_files_and_folder_respect_the_umask(reports, tmp_path: Path, umask) -> None:
    out = tmp_path / "run"
    reports[0].save(out)
    assert stat.S_IMODE(out.stat().st_mode) == 0o750
    assert {stat.S_IMODE(p.stat().st_mode) for p in out.iterdir()} == {0o640}
    target = tmp_path / "gate.xml"  # the single-file writes (--junit, extract, history)
    atomic_write(target, lambda p: p.write_text("x"))
    assert stat.S_IMODE(target.stat().st_mode) == 0o640


def test_folder_with_other_files_is_refused_untouched(reports, tmp_path: Path) -> None:
    out = tmp_path / "run"
    reports[0].save(out)
    (out / "notes.txt").write_text("mine")
    (out / "tb").mkdir()
    before = snapshot(out)
    with pytest.raises(UsageError, match=r"holds what reprdiag did not write \(notes.txt, tb/\)"
                                         r"; --out replaces the whole folder"):
        reports[1].save(out)
    assert snapshot(out) == before


def test_report_json_that_is_a_folder_is_refused(reports, tmp_path: Path) -> None:
    (tmp_path / "run" / "report.json").mkdir(parents=True)
    with pytest.raises(UsageError, match=r"did not write \(report.json/\)"):
        reports[1].save(tmp_path / "run")


def test_current_folder_is_refused(reports, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(UsageError, match="is the current folder or holds it"):
        reports[1].save(".")
    assert list(tmp_path.iterdir()) == []


def test_stale_staging_of_a_killed_run_is_removed(reports, tmp_path: Path) -> None:
    out = tmp_path / "run"
    stale = tmp_path / ".run.reprdiag-new-abc123"
    stale.mkdir()
    (stale / "metrics.csv").write_text("half")
    reports[1].save(out)
    assert beside(out) == []


def test_second_writer_fails_after_waiting(reports, tmp_path: Path) -> None:
    out = tmp_path / "run"
    second = FolderLock(out.resolve(), wait_s=0.3)
    with FolderLock(out.resolve()), pytest.raises(UsageError) as info:
        second.acquire()
    assert info.value.exit_code == 2
    assert info.value.one_line() == (f"{out.resolve()}: is being written by another reprdiag "
                                     f"run (pid {os.getpid()}); wait for it to finish or pick "
                                     "another --out")
    assert beside(out) == []


def test_second_writer_waits_for_the_first(reports, tmp_path: Path, monkeypatch) -> None:
    """A writer that finds the folder locked waits and then writes its complete run."""
    out = tmp_path / "run"
    reports[0].save(out)
    lock = FolderLock(out.resolve())
    lock.acquire()
    releaser = threading.Timer(0.5, lock.release)
    releaser.start()
    t0 = time.monotonic()
    reports[1].save(out)
    releaser.join()
    assert time.monotonic() - t0 >= 0.4  # it did wait for the lock
    assert "layers.png" not in snapshot(out) and beside(out) == []


def test_writer_errors_name_the_final_path(tmp_path: Path) -> None:
    def bad(staging: Path) -> None:
        raise UsageError("cannot be written", source=str(staging / "summary.md"))

    with pytest.raises(ReprdiagError, match=r"^.*/run/summary.md: cannot be written$"):
        write_run_folder(tmp_path / "run", bad)


def test_every_file_a_run_writes_is_owned(reports, tmp_path: Path) -> None:
    """The files analyze/compare --out write all count as reprdiag's (else a rerun would
    refuse the folder): checked on real runs, so a new output file cannot be forgotten."""
    reports[0].save(tmp_path / "a", plot_format="svg")
    cmp = reprdiag.compare([reports[0], reports[0]], metrics=["rankme"], device="cpu")
    written = cmp.save(tmp_path / "c")
    from reprdiag.report.similarity import save_similarity
    from reprdiag.similarity import similarity

    torch.save({"a": torch.randn(40, 3), "b": torch.randn(40, 2)}, tmp_path / "ab.pt")
    written += save_similarity(similarity([tmp_path / "ab.pt"]), tmp_path / "s")
    names = [p.name for p in (tmp_path / "a").iterdir()] + [p.name for p in written]
    assert {"compare.json", "cka.png", "similarity.json"} <= set(names)
    assert all(owned_name(n) for n in names), names
    assert not owned_name("history.csv") and not owned_name("report.json.bak")
    assert export.write_run_folder is write_run_folder
