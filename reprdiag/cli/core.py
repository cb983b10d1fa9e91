"""The typer app, error handling and output helpers shared by every command."""

from __future__ import annotations

import functools
import os
import sys
import threading
import time
import warnings
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar, get_args

import typer
import typer.core
from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TextColumn,
    TimeRemainingColumn,
)
from rich.text import Text

from reprdiag._version import __version__
from reprdiag.errors import (
    EXIT_INTERRUPTED,
    EXIT_RESOURCE,
    ReprdiagError,
    ReprdiagWarning,
    first_line,
    interrupted_line,
)

if TYPE_CHECKING:
    from reprdiag.results import InputResult, Report

#: Commands listed first in ``reprdiag --help``, in this order; the others follow as registered.
FIRST_COMMANDS = ("analyze", "compare", "gate")
#: The placeholder of an option's value in help, by its Python type (flags show none).
METAVARS = {"int": "INTEGER", "float": "FLOAT", "str": "TEXT", "Path": "PATH"}


def metavar(param: Any) -> str:
    """The placeholder help shows for a parameter's value, as click names them: ``INTEGER``,
    ``FLOAT``, ``TEXT``, ``PATH``, the choices ``a|b|c``, nothing for a flag; an argument shows
    its name (``FILES...``)."""
    if getattr(param, "is_flag", False):
        return ""
    desc = param.type_descriptor
    if desc.is_choice:
        return "|".join(str(getattr(c, "value", c)) for c in desc.choices or ())
    kind = get_args(desc.annotation)[0] if desc.is_list else desc.annotation
    name = getattr(kind, "__name__", str(kind))
    if isinstance(param, typer.core.TyperArgument):
        return (param.name or name).upper()  # typer adds "..." to a list
    return METAVARS.get(name, name.upper())


def with_metavars(params: list[Any]) -> list[Any]:
    """Give each parameter without an explicit metavar the one :func:`metavar` names (typer
    would show Python types such as ``<list[Path]>``); an argument's name says what it takes,
    so no type is shown beside it."""
    for param in params:
        if param.metavar is None:
            param.metavar = metavar(param)
        if isinstance(param, typer.core.TyperArgument):
            param.display_type_rich = lambda ctx=None: None
    return params


class Command(typer.core.TyperCommand):
    """A command whose help shows metavars, not Python types."""

    def get_params(self, ctx: Any) -> list[Any]:
        return with_metavars(super().get_params(ctx))


class Commands(typer.core.TyperGroup):
    """The command group: the main commands first in help, and help that shows metavars."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        for command in self.commands.values():
            if type(command) is typer.core.TyperCommand:
                command.__class__ = Command

    def get_params(self, ctx: Any) -> list[Any]:
        return with_metavars(super().get_params(ctx))

    def list_commands(self, ctx: Any) -> list[str]:
        names = list(self.commands)
        return [*[n for n in FIRST_COMMANDS if n in names],
                *[n for n in names if n not in FIRST_COMMANDS]]


app = typer.Typer(
    name="reprdiag",
    cls=Commands,
    help="Representation-quality diagnostics: did my embeddings collapse?",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _print_version(value: bool) -> None:
    if value:
        sys.stdout.write(f"reprdiag {__version__}\n")
        raise typer.Exit(0)


@app.callback()
def _main(
    version: Annotated[bool, typer.Option(
        "--version", "-V", help="Print the version and exit.", is_eager=True,
        callback=_print_version)] = False,
) -> None:
    """Representation-quality diagnostics: did my embeddings collapse?"""

stdout = Console(soft_wrap=False)
if not stdout.is_terminal and "COLUMNS" not in os.environ:
    stdout.width = 160  # piped output: tables as wide as a log viewer shows comfortably
stderr = Console(stderr=True, soft_wrap=True, highlight=False)

EXIT_INTERNAL = 70
F = TypeVar("F", bound=Callable[..., Any])


def warn(message: str) -> None:
    """Print ``reprdiag: warning: MESSAGE`` as one line on stderr."""
    sys.stderr.write(f"reprdiag: warning: {' '.join(message.split())}\n")
    sys.stderr.flush()


def warn_report(report: Report) -> None:
    """One warning line per thing the library noted about an input's numbers."""
    warn_results(report.inputs)


def warn_results(results: Iterable[InputResult]) -> None:
    """:func:`warn` each ``NAME: WARNING`` of these results, each distinct line once."""
    for line in dict.fromkeys(f"{r.name}: {w}" for r in results for w in r.warnings):
        warn(line)


def fail(message: str, code: int, quiet: bool = False) -> typer.Exit:
    """Print ``reprdiag: error: MESSAGE`` as one line on stderr (unless ``quiet``) and
    return the exit to raise."""
    if not quiet:
        sys.stderr.write(f"reprdiag: error: {' '.join(message.split())}\n")
        sys.stderr.flush()
    return typer.Exit(code)


def _warn_one_line(message: Warning | str, category: type[Warning], *_: Any,
                   **__: Any) -> None:
    """Show a warning as ``reprdiag: warning: MESSAGE``, one line on stderr (under
    ``torchrun``, on rank 0 only: every rank meets the same warnings)."""
    from reprdiag.distributed import is_main_process

    if not is_main_process():
        return
    sys.stderr.write(f"reprdiag: warning: {' '.join(str(message).split())}\n")
    sys.stderr.flush()


def handle_errors(func: F) -> F:
    """Turn every failure of a command into one stderr line and its exit code."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("always", ReprdiagWarning)
                warnings.showwarning = _warn_one_line
                return func(*args, **kwargs)
        except (typer.Exit, typer.Abort):
            raise
        except ReprdiagError as exc:  # torchrun: rank 0 prints shared errors
            from reprdiag.distributed import printed_by_rank0

            raise fail(exc.one_line(), exc.exit_code, quiet=printed_by_rank0(exc)) from None
        except KeyboardInterrupt as exc:  # Ctrl-C, or SIGTERM/SIGHUP (errors.Terminated)
            raise fail(*interrupted_line(exc)) from None
        except MemoryError:
            raise fail("out of memory; try a smaller --chunk-size or --sample-size",
                       EXIT_RESOURCE) from None
        except Exception as exc:  # a bug: still one line, but say how to get the traceback
            if os.environ.get("REPRDIAG_DEBUG"):
                raise
            name = type(exc).__name__
            if "out of memory" in str(exc).lower():
                raise fail(f"out of memory ({name}); try --device cpu or a smaller "
                           "--chunk-size", EXIT_RESOURCE) from None
            first = first_line(exc, empty="")
            raise fail(f"internal error ({name}: {first}); set REPRDIAG_DEBUG=1 for the "
                       "traceback and please report it", EXIT_INTERNAL) from None

    return wrapper  # type: ignore[return-value]


class RateColumn(ProgressColumn):
    """Throughput of a task: ``12.3 batches/s``."""

    def __init__(self, unit: str):
        super().__init__()
        self.unit = unit

    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        return Text(f"{si(speed)} {self.unit}/s" if speed else "", style="cyan")


def si(value: float) -> str:
    """A rate in three significant digits with an SI prefix: ``980``, ``12.3k``, ``1.5M``.

    >>> si(980.4), si(12_345.0), si(1_500_000.0), si(4.2e10)
    ('980', '12.3k', '1.5M', '42G')
    """
    for prefix in ("", "k", "M"):
        if abs(value) < 999.5:
            return f"{value:.3g}{prefix}"
        value /= 1000
    return f"{value:.3g}G"


def short_label(label: str, width: int) -> str:
    """An input's name cut to ``width`` characters for a progress line: the file name (not
    its folders) and key, then an ellipsis in the middle.

    >>> short_label("runs/sample/minilm.safetensors[embeddings] · jackknife", 80)
    'minilm.safetensors[embeddings] · jackknife'
    >>> short_label("data/a_very_long_file_name_of_embeddings.safetensors[emb]", 24)
    'a_very_long…tensors[emb]'
    """
    base, sep, rest = label.partition("[")
    text = base.rsplit("/", 1)[-1] + sep + rest
    if len(text) <= width:
        return text
    half = (width - 1) // 2
    return text[:half] + "…" + text[len(text) - (width - 1 - half):]


class RichProgress:
    """The engine's progress sink, on stderr.

    On a terminal: a bar while a pass reads (shown once it has taken more than half a second)
    and a status line with a spinner for each later phase (spectra, metrics, jackknife).
    Elsewhere (CI logs): a plain line every :attr:`EVERY_S` seconds while something runs, so a
    long run is never silent; a run shorter than that prints nothing. ``unit`` names what
    ``advance`` counts (rows of a file, batches of a model run); a total of 0 means unknown.
    """

    DELAY_S = 0.5
    #: Seconds between plain lines; ``REPRDIAG_PROGRESS_S`` overrides it.
    EVERY_S = 10.0

    def __init__(self, enabled: bool = True, unit: str = "rows"):
        self.live = enabled and stderr.is_terminal
        self.plain = enabled and not stderr.is_terminal
        self.enabled = self.live  # kept for callers that ask whether a bar can show
        self.unit = unit
        self._bar: Progress | None = None
        self._status: Any = None
        self._label, self._total, self._done, self._t0 = "", 0, 0, 0.0
        self._unit = unit
        self._phase: str | None = None
        self._timer: threading.Timer | None = None
        self._lock = threading.Lock()
        self._begun = time.perf_counter()
        self.every_s = float(os.environ.get("REPRDIAG_PROGRESS_S") or self.EVERY_S)

    def start(self, label: str, total: int, unit: str | None = None) -> None:
        """Begin a bar; ``unit`` overrides the constructor's for this bar (e.g. ``blocks``)."""
        self._stop_status()
        with self._lock:
            self._label, self._total, self._done = label, total, 0
            self._t0 = time.perf_counter()
            self._unit = unit or self.unit
            self._phase = None
        self._arm()

    def phase(self, label: str | None) -> None:
        """A step without a count (``FILE[KEY] · spectra``) begins; ``None``: none runs."""
        self.finish()
        with self._lock:
            self._phase, self._label, self._total = label, "", 0
            self._t0 = time.perf_counter()
        if label is None:
            self._disarm()
            return
        if self.live:
            self._status = stderr.status(escape(short_label(label, max(20, stderr.width - 4)))
                                         + " …", spinner="dots")
            self._status.start()
        self._arm()

    def advance(self, rows: int) -> None:
        with self._lock:
            self._done += rows
        if not self.live:
            return
        if self._bar is None and time.perf_counter() - self._t0 > self.DELAY_S:
            # the label gets what the bar, counts, rate and time left do not need
            label = short_label(self._label, max(12, stderr.width - 60))
            self._bar = Progress(TextColumn("[bold]{task.description}"),
                                 BarColumn(bar_width=20), MofNCompleteColumn(),
                                 TextColumn(self._unit), RateColumn(self._unit),
                                 TimeRemainingColumn(), console=stderr, transient=True)
            self._bar.start()
            self._task = self._bar.add_task(escape(label), total=self._total or None)
        if self._bar is not None:
            self._bar.update(self._task, completed=self._done)

    def finish(self) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None
        self._stop_status()
        with self._lock:
            self._label, self._phase = "", None
        self._disarm()

    def line(self) -> str:
        """The plain progress line: elapsed time, what runs, how far it got."""
        with self._lock:
            elapsed = time.perf_counter() - self._begun
            if self._phase is not None:
                what = f"{self._phase} …"
            elif self._label:
                rate = self._done / max(time.perf_counter() - self._t0, 1e-9)
                count = (f"{self._done:,} of {self._total:,} {self._unit} "
                         f"({100 * self._done / self._total:.0f}%)" if self._total
                         else f"{self._done:,} {self._unit}")
                what = f"{self._label}: {count}, {rate:,.0f} {self._unit}/s"
            else:
                return ""
        return f"reprdiag: [{elapsed:,.0f} s] {what}"

    def _tick(self) -> None:
        text = self.line()
        if text:
            sys.stderr.write(text + "\n")
            sys.stderr.flush()
        with self._lock:
            self._timer = None
        if text:
            self._arm()

    def _arm(self) -> None:
        """Plain mode: a line in EVERY_S seconds (unless one is due already)."""
        if not self.plain:
            return
        with self._lock:
            if self._timer is None:
                self._timer = threading.Timer(self.every_s, self._tick)
                self._timer.daemon = True
                self._timer.start()

    def _disarm(self) -> None:
        with self._lock:
            timer, self._timer = self._timer, None
        if timer is not None:
            timer.cancel()

    def _stop_status(self) -> None:
        if self._status is not None:
            self._status.stop()
            self._status = None


def wrote_line(folder: Path, names: Iterable[str]) -> str:
    """``wrote runs/A/: report.json, metrics.csv, summary.md and 3 plots (png)``.

    >>> wrote_line(Path("runs/A"), ["report.json", "summary.md", "a.png", "b.png"])
    'wrote runs/A/: report.json, summary.md and 2 plots (png)'
    """
    names = list(names)
    plots = [n for n in names if n.rsplit(".", 1)[-1] in ("png", "svg", "pdf")]
    files = [n for n in names if n not in plots]
    kinds = ", ".join(sorted({n.rsplit(".", 1)[-1] for n in plots}))
    what = ", ".join(files) + (f" and {len(plots)} plot{'s' * (len(plots) != 1)} ({kinds})"
                               if plots else "")
    return f"wrote {str(folder).rstrip('/')}/: {what}"


def emit(text: str) -> None:
    """Write machine-readable output (json/csv/markdown) to stdout unchanged."""
    sys.stdout.write(text if text.endswith("\n") else text + "\n")
    sys.stdout.flush()


def usage_error_line(exc: Exception) -> str:
    """A parsing error (bad option, value or command) as one line with a hint."""
    fmt = getattr(exc, "format_message", None)
    text = (fmt() if callable(fmt) else str(exc)).replace("Value error, ", "").rstrip(". ")
    ctx = getattr(exc, "ctx", None)
    path = ctx.command_path if ctx is not None else "reprdiag"
    return f"{text}; see '{path} --help'"


def main(args: list[str] | None = None) -> None:
    """Console-script entry point: even a usage error is one line on stderr (exit 2)."""
    try:
        code = app(args=args, prog_name="reprdiag", standalone_mode=False)
    except KeyboardInterrupt as exc:  # outside a command: while parsing, or in typer
        raise SystemExit(fail(*interrupted_line(exc)).exit_code) from None
    except typer.Abort:
        raise SystemExit(fail("aborted", EXIT_INTERRUPTED).exit_code) from None
    except typer.TyperException as exc:  # click's parsing errors, vendored by typer
        if type(exc).__name__ == "NoArgsIsHelpError":  # bare ``reprdiag``: show the help
            exc.show()  # type: ignore[attr-defined]
            raise SystemExit(getattr(exc, "exit_code", 2)) from None
        code = getattr(exc, "exit_code", 2)
        raise SystemExit(fail(usage_error_line(exc), code).exit_code) from None
    raise SystemExit(code if isinstance(code, int) else 0)
