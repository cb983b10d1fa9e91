"""The ``--out`` run folder: checked before any work, locked, built beside the old one and
swapped in whole.

At every instant the folder holds one complete run, the old or the new: the new run is
written to a hidden staging folder next to it (``.NAME.reprdiag-new-XXXX``), then exchanged
with the old folder by one ``renameat2(RENAME_EXCHANGE)`` (two renames where the kernel or
file system lacks it) and the old run is deleted. A failed or interrupted write removes its
staging folder and leaves the old run untouched; files of the old run that the new one does
not write (the plot of an input no longer analyzed) do not survive.

Because the folder is replaced whole, it may hold only files reprdiag writes
(:func:`owned_name`); anything else is refused before the run starts rather than deleted.
Writers of one folder take a lock (``fcntl.flock`` on ``.NAME.reprdiag-lock`` beside it,
holding the owner's pid); a second writer waits up to :data:`LOCK_WAIT_S` seconds
(``REPRDIAG_LOCK_WAIT_S``), then fails with exit 2. Files get mode 0666 minus the umask and
folders 0777 minus the umask, as ``open`` and ``mkdir`` would give them.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import os
import re
import shutil
import signal
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from reprdiag.errors import ReprdiagError, ResourceError, UsageError, source_label

#: Seconds a second writer of one ``--out`` folder waits for the first to finish.
LOCK_WAIT_S = 60.0
STAGING_TAG = ".reprdiag-"

#: The files a run folder may hold: what ``analyze``, ``compare`` and ``similarity --out``
#: write, and temporary files of an older version's interrupted writes.
_OWNED = re.compile(
    r"(report\.(json|html)|metrics\.csv|spectrum\.csv|summary\.md|compare\.(csv|json|md|html)"
    r"|similarity\.(csv|json)"
    r"|(spectrum|layers|compare|compare-layers|cka)(-.+)?\.(png|svg|pdf)"
    r"|\..+\.tmp)")


def owned_name(name: str) -> bool:
    """Whether a file of this name may be one that ``analyze --out`` / ``compare --out``
    wrote (and may be replaced by the next run).

    >>> owned_name("report.json"), owned_name("spectrum-a.h5-layer_3.svg"), owned_name("notes.txt")
    (True, True, False)
    """
    return _OWNED.fullmatch(name) is not None


def current_umask() -> int:
    """The process's umask (read from ``/proc`` where it can be, without changing it)."""
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def default_mode(directory: bool = False) -> int:
    """The mode ``open`` (0666) or ``mkdir`` (0777) gives a new file under the umask."""
    return (0o777 if directory else 0o666) & ~current_umask()


def write_error(path: Path, exc: OSError, option: str = "--out") -> ReprdiagError:
    """The one-line error for a file that could not be written (a full disk is exit 3)."""
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return ResourceError(f"cannot be written: {exc.strerror}", source=source_label(path),
                             hint=f"free some disk space or pick another {option}")
    return UsageError(f"cannot be written: {exc.strerror or exc}", source=source_label(path),
                      hint=f"pick a writable {option}")


def _nearest_existing(path: Path) -> Path:
    for candidate in (path, *path.parents):
        if os.path.lexists(candidate):
            return candidate
    return Path(".")


def check_writable_file(path: Path, option: str) -> None:
    """Refuse, before any work, an output file (``--junit``, ``extract --out``) that cannot be
    written: a folder at its name, or a parent that is not a folder or is not writable. Creates
    nothing that stays."""
    if path.is_dir():
        raise UsageError("is a folder, not a file", source=source_label(path),
                         hint=f"give {option} a file name")
    _probe(path.parent, option, path, "cannot be written")


def _probe(folder: Path, option: str, named: Path, problem: str) -> None:
    """Create and remove a scratch folder in the nearest existing ancestor of ``folder``."""
    base = _nearest_existing(folder)
    if not base.is_dir():
        raise UsageError(f"{problem} ({base} is not a folder)", source=source_label(named),
                         hint=f"pick another {option}")
    try:
        os.rmdir(tempfile.mkdtemp(prefix=f"{STAGING_TAG}probe-", dir=base))
    except OSError as exc:
        raise UsageError(f"{problem} ({exc.strerror or exc})", source=source_label(named),
                         hint=f"pick a writable {option}") from exc


def check_out_folder(out: Path) -> None:
    """Refuse, before any work, an ``--out`` that cannot hold a run: a file, a folder that
    cannot be written, the current folder (or one holding it), or a folder holding files
    reprdiag did not write (they would be replaced with it). Creates nothing that stays."""
    label = source_label(out)
    if os.path.lexists(out) and not out.is_dir():
        raise UsageError("exists and is not a folder", source=label,
                         hint="pick a folder name for --out")
    _probe(out, "--out", out, "cannot write the output folder")
    if not out.is_dir():
        return
    real, cwd = Path(os.path.realpath(out)), Path.cwd().resolve()
    if real == cwd or real in cwd.parents:
        raise UsageError("is the current folder or holds it; --out replaces the whole folder "
                         "on each run", source=label, hint="pick a new folder, e.g. --out runs/A")
    try:
        foreign = sorted(e.name + ("/" if e.is_dir(follow_symlinks=False) else "")
                         for e in os.scandir(real)
                         if not (owned_name(e.name) and e.is_file(follow_symlinks=False)))
    except OSError as exc:
        raise UsageError(f"cannot be read ({exc.strerror or exc})", source=label,
                         hint="pick a readable --out") from exc
    if foreign:
        shown = ", ".join(foreign[:3]) + (f" and {len(foreign) - 3} more" if foreign[3:] else "")
        raise UsageError(f"holds what reprdiag did not write ({shown}); --out replaces the "
                         "whole folder on each run", source=label,
                         hint="move them away or pick a new --out folder")


@contextlib.contextmanager
def signals_deferred() -> Iterator[None]:
    """Hold SIGINT and SIGTERM back while a few renames must run to completion (delivered
    on exit). Only the main thread's handlers run Python code, so elsewhere this is a no-op."""
    held = {signal.SIGINT, signal.SIGTERM}
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    old = signal.pthread_sigmask(signal.SIG_BLOCK, held)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


class FolderLock:
    """An exclusive ``flock`` on ``.NAME.reprdiag-lock`` beside ``folder`` (the folder itself
    is swapped, so the lock cannot live inside it). The lock file holds the owner's pid and is
    removed on release; a stale one left by a killed process is simply taken over."""

    def __init__(self, folder: Path, wait_s: float | None = None):
        self.folder = folder
        self.path = folder.parent / f".{folder.name}{STAGING_TAG}lock"
        env = os.environ.get("REPRDIAG_LOCK_WAIT_S")
        self.wait_s = wait_s if wait_s is not None else float(env) if env else LOCK_WAIT_S
        self._fd: int | None = None

    def _open(self) -> int:
        try:
            return os.open(self.path, os.O_RDWR | os.O_CREAT, default_mode())
        except OSError as exc:
            raise write_error(self.path, exc) from exc

    def _owner(self) -> str:
        with contextlib.suppress(OSError, ValueError):
            pid = int(self.path.read_text().strip())
            return f" (pid {pid})"
        return ""

    def acquire(self) -> None:
        deadline = time.monotonic() + self.wait_s
        while True:
            fd = self._open()
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                if time.monotonic() >= deadline:
                    raise UsageError(f"is being written by another reprdiag run{self._owner()}",
                                     source=source_label(self.folder),
                                     hint="wait for it to finish or pick another --out"
                                     ) from None
                time.sleep(0.1)
                continue
            try:  # the holder before us may have removed the file we locked: lock the new one
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd

    def release(self) -> None:
        if self._fd is None:
            return
        with contextlib.suppress(OSError):
            os.unlink(self.path)
        os.close(self._fd)
        self._fd = None

    def __enter__(self) -> FolderLock:
        self.acquire()
        return self

    def __exit__(self, *_: object) -> None:
        self.release()


_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths in one ``renameat2(RENAME_EXCHANGE)``; ``False`` where unsupported."""
    libc = ctypes.CDLL(None, use_errno=True)
    func = getattr(libc, "renameat2", None)
    if func is None:
        return False
    rc = func(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE)
    if rc == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP):
        return False
    raise OSError(code, os.strerror(code), str(b))


def _swap_in(staging: Path, out: Path) -> None:
    """Put ``staging`` at ``out``; the old ``out`` (if any) ends up at ``staging``."""
    if not os.path.lexists(out):
        with contextlib.suppress(FileNotFoundError, IsADirectoryError, OSError):
            os.rename(staging, out)  # fails (ENOTEMPTY) if a folder appeared meanwhile
        if not os.path.lexists(staging):
            return
    if _exchange(staging, out):
        return
    old = Path(tempfile.mkdtemp(prefix=f".{out.name}{STAGING_TAG}old-", dir=out.parent))
    os.rmdir(old)
    os.rename(out, old)
    try:
        os.rename(staging, out)
    except BaseException:
        os.rename(old, out)
        raise
    os.rename(old, staging)


def _remove_stale(out: Path) -> None:
    """Staging folders of runs that were killed (SIGKILL) before they could clean up; only
    called under the folder's lock, when no other writer can own one."""
    prefix = f".{out.name}{STAGING_TAG}"
    with contextlib.suppress(OSError):
        for entry in os.scandir(out.parent):
            if entry.name.startswith(prefix) and entry.is_dir(follow_symlinks=False) and \
                    not entry.name.endswith("lock"):
                shutil.rmtree(entry.path, ignore_errors=True)


def _final_name(name: object, staging: Path, out: Path) -> Path:
    """The path a file written in the staging folder will have in ``out``."""
    text = os.fsdecode(name) if isinstance(name, (str, bytes, os.PathLike)) else ""
    for base in (str(staging), os.path.realpath(staging)):
        if text.startswith(base):
            return Path(str(out) + text[len(base):])
    return out


def write_run_folder(out: Path, write: Callable[[Path], object]) -> Path:
    """Make ``out`` hold exactly what ``write(folder)`` writes into an empty folder, all at
    once (see the module docstring); return ``out``. Raises a one-line error, with the old run
    left intact, when ``out`` cannot be written or ``write`` fails."""
    out = Path(out)
    check_out_folder(out)
    real = Path(os.path.realpath(out))
    try:
        real.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"cannot create the output folder ({exc.strerror or exc})",
                         source=source_label(out), hint="pick a writable --out") from exc
    with FolderLock(real):
        _remove_stale(real)
        try:
            staging = Path(tempfile.mkdtemp(prefix=f".{real.name}{STAGING_TAG}new-",
                                            dir=real.parent))
        except OSError as exc:
            raise write_error(out, exc) from exc
        try:
            os.chmod(staging, default_mode(directory=True))
            write(staging)
            with signals_deferred():
                _swap_in(staging, real)
        except OSError as exc:
            raise write_error(_final_name(exc.filename, staging, out), exc) from exc
        except ReprdiagError as exc:  # a writer's own error names the staging folder
            exc.source = exc.source and str(_final_name(exc.source, staging, out))
            exc.args = (exc.one_line(),)
            raise
        finally:
            with signals_deferred():
                shutil.rmtree(staging, ignore_errors=True)
    return out
