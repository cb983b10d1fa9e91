"""The ``reprdiag`` command line: a thin typer layer over the library API.

Each command lives in its own module and is registered on :data:`app` here. No metric math
happens in this package: commands parse options, call the API and render the result.

Importing this package imports nothing else: :func:`main` first makes SIGTERM/SIGHUP raise
(so that cleanup runs), then imports typer, rich and the commands inside its own error
handling, so that a Ctrl-C even during start-up is one line and exit 130, never a traceback.
``app`` is imported on first use.
"""

from __future__ import annotations

import sys
from typing import Any


def _load_app() -> Any:
    from reprdiag.cli import analyze as _analyze  # noqa: F401  (registers the command)
    from reprdiag.cli import compare as _compare  # noqa: F401
    from reprdiag.cli import extract as _extract  # noqa: F401
    from reprdiag.cli import gate as _gate  # noqa: F401
    from reprdiag.cli import history as _history  # noqa: F401
    from reprdiag.cli import list_metrics as _list_metrics  # noqa: F401
    from reprdiag.cli import similarity as _similarity  # noqa: F401
    from reprdiag.cli.core import app

    globals()["app"] = app  # cached: later lookups skip __getattr__
    return app


def __getattr__(name: str) -> Any:
    if name == "app":
        return _load_app()
    raise AttributeError(f"module 'reprdiag.cli' has no attribute {name!r}")


def main(args: list[str] | None = None) -> None:
    """Console-script entry point (see :func:`reprdiag.cli.core.main`)."""
    from reprdiag.errors import interrupted_line, raise_on_termination

    raise_on_termination()
    try:
        _load_app()
        from reprdiag.cli.core import main as run
    except KeyboardInterrupt as exc:  # Ctrl-C or SIGTERM while the CLI is being imported
        line, code = interrupted_line(exc)
        sys.stderr.write(f"reprdiag: error: {line}\n")
        raise SystemExit(code) from None
    run(args)


__all__ = ["app", "main"]
