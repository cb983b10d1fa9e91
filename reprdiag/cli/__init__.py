"""The ``reprdiag`` command line: a thin typer layer over the library API.

Each command lives in its own module and is registered on :data:`app` here. No metric math
happens in this package: commands parse options, call the API and render the result.
"""

from __future__ import annotations

from reprdiag.cli import analyze as _analyze  # noqa: F401  (registers the command)
from reprdiag.cli import compare as _compare  # noqa: F401
from reprdiag.cli import extract as _extract  # noqa: F401  (registers the command)
from reprdiag.cli import gate as _gate  # noqa: F401
from reprdiag.cli import history as _history  # noqa: F401  (registers the command)
from reprdiag.cli import list_metrics as _list_metrics  # noqa: F401
from reprdiag.cli import similarity as _similarity  # noqa: F401
from reprdiag.cli.app import app, main

__all__ = ["app", "main"]
