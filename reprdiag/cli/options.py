"""Options shared by the commands that analyze embeddings: ``analyze``, ``compare``, ``gate``.

They are declared once here, their defaults read from :class:`~reprdiag.config.AnalysisConfig`
(the analysis settings) and :class:`AnalysisOptions` (where to run).
:func:`with_analysis_options` appends them to a command's signature (typer reads the
signature) and hands the command one :class:`AnalysisOptions` as its ``analysis`` argument,
so every command accepts exactly ``analyze``'s options.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields, replace
from enum import Enum
from typing import Annotated, Any, TypeVar

import typer

from reprdiag.cli.core import RichProgress
from reprdiag.cli.extract import POOL_HELP
from reprdiag.config import AnalysisConfig

F = TypeVar("F", bound=Callable[..., Any])


class Format(str, Enum):
    """The form of stdout."""

    table = "table"
    json = "json"
    csv = "csv"
    markdown = "markdown"


FormatOption = Annotated[Format, typer.Option("--format", "-f", help="Form of stdout.")]


class PlotFormat(str, Enum):
    """The file format of plots written with --out."""

    png = "png"
    svg = "svg"
    pdf = "pdf"


PlotFormatOption = Annotated[PlotFormat, typer.Option("--plot-format",
                                                      help="File format of the plots.")]


@dataclass(frozen=True)
class AnalysisOptions:
    """What ``reprdiag analyze`` reads from its command line besides the files: where to run
    (``key``, ``device``, ``backend``, ``quiet``) and ``settings``, the options of
    :class:`~reprdiag.config.AnalysisConfig` given as flags (named as its fields)."""

    key: list[str] | None = None
    device: str = "auto"
    backend: str = "auto"
    quiet: bool = False
    settings: Mapping[str, Any] = field(default_factory=dict)

    def config(self, **more: Any) -> AnalysisConfig:
        """The checked analysis config of these flags and ``more`` (``metrics``, ...)."""
        return AnalysisConfig(**{**self.settings, **more})

    def with_settings(self, **more: Any) -> AnalysisOptions:
        """The same flags with some settings changed."""
        return replace(self, settings={**self.settings, **more})

    def api_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of :func:`reprdiag.analyze` (keys, progress bar included).

        >>> AnalysisOptions(key=["a"], quiet=True).api_kwargs()["keys"]
        ['a']
        """
        return {**self.settings, "keys": self.key or None, "device": self.device,
                "backend": self.backend, "progress": RichProgress(enabled=not self.quiet)}


#: The flags that are not analysis settings.
_RUN_FLAGS = tuple(f.name for f in fields(AnalysisOptions) if f.name != "settings")


def _option(name: str, annotation: Any, *decls: str, help: str, metavar: str | None = None
            ) -> inspect.Parameter:
    owner = AnalysisOptions if name in _RUN_FLAGS else AnalysisConfig
    default = owner.__dataclass_fields__[name].default
    option = typer.Option(*decls, help=help, metavar=metavar)
    return inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default,
                             annotation=Annotated[annotation, option])


_PARAMETERS = (
    _option("key", list[str] | None, "--key", "-k", metavar="KEY",
            help="Tensor/dataset to analyze (repeatable); default: every 2-D array."),
    _option("pool", str | None, "--pool", help=POOL_HELP, metavar="MODE"),
    _option("device", str, "--device", help="auto|cpu|cuda|cuda:N|mps.", metavar="DEVICE"),
    _option("precision", str, "--precision", metavar="auto|float32|float64",
            help="auto (fp32 products for fp32/16 data, fp64 for fp64)|float32|float64."),
    _option("chunk_rows", int | None, "--chunk-size", help="Rows per chunk (default: ~64 MiB).",
            metavar="ROWS"),
    _option("sample_size", int, "--sample-size", help="Rows sampled for pairwise metrics.",
            metavar="ROWS"),
    _option("seed", int, "--seed", help="Seed of the row sample."),
    _option("kappa", float, "--kappa", help="vMF concentration κ of er_entropy."),
    _option("er_estimator", str, "--er-estimator", help="The entropy estimator.",
            metavar="plugin|joe"),
    _option("er_compat", str, "--er-compat", metavar="exact|reference",
            help="exact|reference (the official code's float arithmetic)."),
    _option("nan", str, "--nan", help="Rows holding NaN/Inf: an error, or dropped.",
            metavar="error|drop"),
    _option("uncertainty", bool, "--uncertainty",
            help="Jackknife standard errors, bias and 95% intervals of every metric."),
    _option("blocks", int, "--blocks", metavar="K", help="Jackknife blocks K (≥ 5; costs K more "
            "metric evaluations and K×2 d×d moment matrices)."),
    _option("jackknife", str, "--jackknife", metavar="auto|first-order|exact",
            help="Deleted spectra: first-order updates of the full decompositions, or exact "
            "(K eigendecompositions); auto = first-order when N/K ≥ d."),
    _option("backend", str, "--backend", metavar="auto|nccl|gloo", help="Under torchrun: "
            "auto is NCCL when every rank has a GPU, else gloo."),
    _option("labels", str | None, "--labels", metavar="KEY|PATH[:KEY]", help="Class ids, one "
            "per row (a key of the same file, or another file; with --model also batch: the "
            "labels the batches carry); adds nc1, lidar, NC2 and per-class metrics."),
    _option("pair", str | None, "--pair", metavar="KEY|PATH[:KEY]", help="A second, "
            "row-aligned view; adds alignment, Barlow Twins terms and CKA between the views."),
    _option("quiet", bool, "--quiet", "-q", help="No progress bar."),
)


def with_analysis_options(func: F) -> F:
    """Give a command ``analyze``'s reading and analysis options.

    The command declares a parameter ``analysis: AnalysisOptions``; the options are appended
    to its CLI signature and collected into that one argument.
    """
    signature = inspect.signature(func, eval_str=True)
    own = [p for p in signature.parameters.values() if p.name != "analysis"]
    names = [p.name for p in _PARAMETERS]

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        given = {n: kwargs.pop(n) for n in names if n in kwargs}
        options = AnalysisOptions(**{n: given.pop(n) for n in _RUN_FLAGS if n in given},
                                  settings=given)
        return func(*args, analysis=options, **kwargs)

    wrapper.__signature__ = signature.replace(parameters=[*own, *_PARAMETERS])  # type: ignore[attr-defined]
    wrapper.__annotations__ = {p.name: p.annotation for p in [*own, *_PARAMETERS]}
    return wrapper  # type: ignore[return-value]
