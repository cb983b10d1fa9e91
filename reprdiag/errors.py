"""Error types: each carries its exit code and renders as one line.

The CLI prints ``reprdiag: error: SOURCE: what is wrong; what to do`` and exits with
:attr:`ReprdiagError.exit_code`. Library users catch the exceptions directly.

Exit codes (docs/design.md §2): 0 ok, 1 gate failed, 2 bad usage or input, 3 resource failure.
"""

from __future__ import annotations

import difflib
import signal
import threading
from collections.abc import Iterable

EXIT_OK = 0
EXIT_GATE_FAILED = 1
EXIT_BAD_INPUT = 2
EXIT_RESOURCE = 3
EXIT_INTERRUPTED = 130  # SIGINT (Ctrl-C): 128 + 2
EXIT_TERMINATED = 143  # SIGTERM: 128 + 15 (SIGHUP: 129)


class ReprdiagError(Exception):
    """Base class of every error reprdiag raises on purpose.

    ``source`` names the file and key (``FILE[KEY]``), ``problem`` says what is wrong and
    ``hint`` what to do about it.

    >>> str(InputError("contains 3 rows with NaN", source="a.npy", hint="use --nan drop"))
    'a.npy: contains 3 rows with NaN; use --nan drop'
    """

    exit_code: int = EXIT_BAD_INPUT

    def __init__(self, problem: str, *, source: str | None = None, hint: str | None = None):
        self.problem = problem
        self.source = source
        self.hint = hint
        super().__init__(self.one_line())

    def one_line(self) -> str:
        text = f"{self.source}: {self.problem}" if self.source else self.problem
        if self.hint:
            text += f"; {self.hint}"
        return " ".join(text.split())


class InputError(ReprdiagError):
    """The input file or tensor cannot be analyzed as given (exit 2)."""


class UsageError(ReprdiagError):
    """An option or argument is invalid (exit 2)."""


class ConfigError(ReprdiagError):
    """A gate configuration is malformed (exit 2)."""


class ResourceError(ReprdiagError):
    """Out of memory or another resource failure after every fallback (exit 3)."""

    exit_code = EXIT_RESOURCE


def source_label(path: object, key: str | None = None) -> str:
    """Format ``FILE[KEY]`` the way every message names an input.

    >>> source_label("emb.h5", "layer_6")
    'emb.h5[layer_6]'
    >>> source_label("emb.npy")
    'emb.npy'
    """
    return f"{path}[{key}]" if key else str(path)


def check_choice(value: object, choices: tuple[str, ...], what: str) -> None:
    """Raise :class:`UsageError` unless ``value`` is one of ``choices``.

    >>> check_choice("drop", ("error", "drop"), "NaN policy")
    >>> check_choice("zap", ("error", "drop"), "NaN policy")
    Traceback (most recent call last):
    ...
    reprdiag.errors.UsageError: unknown NaN policy 'zap'; use one of error, drop
    """
    if value not in choices:
        raise UsageError(f"unknown {what} {value!r}", hint=f"use one of {', '.join(choices)}")


def did_you_mean(name: str, valid: Iterable[str], n: int = 1, cutoff: float = 0.6) -> str:
    """The start of a hint naming the ``n`` valid names closest to a mistyped ``name``
    (difflib's similarity ≥ ``cutoff``), or ``""`` when none is close.

    >>> did_you_mean("rankmee", ["rankme", "vne"]), did_you_mean("zzz", ["rankme"])
    ("did you mean 'rankme'? ", '')
    >>> did_you_mean("layer.1", ["layer.0", "layer.10", "head"], n=3, cutoff=0.5)
    "did you mean 'layer.10', 'layer.0'? "
    """
    close = difflib.get_close_matches(name, list(valid), n=n, cutoff=cutoff)
    return f"did you mean {', '.join(repr(c) for c in close)}? " if close else ""


def first_line(exc: BaseException, limit: int | None = 300, empty: str | None = None) -> str:
    """The first line of an exception's message, cut to ``limit`` characters, for a one-line
    error that quotes it; ``empty`` (by default the exception's type name) when it says
    nothing.

    >>> first_line(ValueError("  bad header\\n  at byte 12  ")), first_line(OSError())
    ('bad header', 'OSError')
    >>> first_line(ValueError(""), empty="(no message)"), first_line(ValueError("x" * 9), limit=3)
    ('(no message)', 'xxx')
    """
    lines = str(exc).strip().splitlines()
    if not lines:
        return type(exc).__name__ if empty is None else empty
    return lines[0][:limit]


class ReprdiagWarning(UserWarning):
    """Something the user should know that does not stop the run (the CLI prints one line)."""


class Terminated(KeyboardInterrupt):
    """SIGTERM or SIGHUP, raised like Ctrl-C's KeyboardInterrupt so that every ``finally``
    and cleanup runs (temporary files removed, the old ``--out`` run left intact); the CLI
    exits with 128 + the signal number."""

    def __init__(self, signum: int):
        self.signum = signum
        self.name = signal.Signals(signum).name
        super().__init__(self.name)

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


def _raise_terminated(signum: int, _frame: object) -> None:
    raise Terminated(signum)


def raise_on_termination() -> None:
    """Make SIGTERM and SIGHUP raise :class:`Terminated` (the CLI's entry point calls this
    first; the default action kills the process without any cleanup). SIGINT keeps Python's
    KeyboardInterrupt. Only the main thread may install handlers; elsewhere this does nothing."""
    if threading.current_thread() is not threading.main_thread():
        return
    for signum in (signal.SIGTERM, getattr(signal, "SIGHUP", None)):
        if signum is not None and signal.getsignal(signum) is not signal.SIG_IGN:
            signal.signal(signum, _raise_terminated)


def interrupted_line(exc: KeyboardInterrupt) -> tuple[str, int]:
    """The one line and exit code of an interruption: 130 for Ctrl-C, 128 + N for signal N.

    >>> interrupted_line(KeyboardInterrupt())
    ('interrupted; no report was written', 130)
    >>> interrupted_line(Terminated(signal.SIGTERM))
    ('terminated by SIGTERM; no report was written', 143)
    """
    if isinstance(exc, Terminated):
        return f"terminated by {exc.name}; no report was written", exc.exit_code
    return "interrupted; no report was written", EXIT_INTERRUPTED
