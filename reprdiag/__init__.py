"""reprdiag: representation-quality diagnostics. Did my embeddings collapse?

>>> import torch, reprdiag
>>> report = reprdiag.analyze(torch.eye(3, dtype=torch.float64), metrics=["vne"], device="cpu")
>>> round(report.metrics["vne"], 6)
1.098612

The names below are imported on first use (PEP 562), so ``import reprdiag`` and the CLI's
``--help`` do not import torch, pandas or matplotlib.
"""

from __future__ import annotations

import importlib
import os
import sys
import types
from typing import TYPE_CHECKING, Any

from reprdiag._version import __version__

# OpenMP threads waiting at a barrier sleep instead of spinning (set before torch loads its
# OpenMP runtime; a value the user set wins). Spinning threads fight other processes for the
# cores: on 2 shared cores (load 5) a 384² eigvalsh took 1.3 s spinning and 0.03 s passive,
# `analyze --uncertainty` of 3,000 × 32 rows 11.1 s and 0.75 s (bench/RESULTS.md).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

if TYPE_CHECKING:
    from reprdiag.api import analyze, analyze_model
    from reprdiag.compare import compare
    from reprdiag.gate import gate
    from reprdiag.metrics import METRICS
    from reprdiag.report.read import read_report
    from reprdiag.results import Comparison, GateResult, InputResult, Report, Rule

#: Public name → the module defining it, imported when the name is first read.
_LAZY = {"analyze": "reprdiag.api", "analyze_model": "reprdiag.api",
         "compare": "reprdiag.compare",
         "Comparison": "reprdiag.results", "gate": "reprdiag.gate",
         "GateResult": "reprdiag.results", "Rule": "reprdiag.results",
         "METRICS": "reprdiag.metrics", "InputResult": "reprdiag.results",
         "Report": "reprdiag.results", "read_report": "reprdiag.report.read"}
#: Modules that are also their main function: ``reprdiag.compare`` is the module
#: ``reprdiag.compare`` (``from reprdiag.compare import MATCHES`` and
#: ``import reprdiag.compare as m`` give it), and calling it calls its ``compare``.
_CALLABLE = ("compare", "gate")

__all__ = ["METRICS", "Comparison", "GateResult", "InputResult", "Report", "Rule",
           "__version__", "analyze", "analyze_model", "compare", "gate", "read_report"]


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'reprdiag' has no attribute {name!r}")
    module = importlib.import_module(_LAZY[name])  # binds reprdiag.compare/gate: _Package
    value = module if name in _CALLABLE else getattr(module, name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})


class _CallableModule(types.ModuleType):
    """A module whose call is its function of the same name: ``reprdiag.compare(runs)`` is
    ``reprdiag.compare.compare(runs)``; one object under one name, no function shadowing
    its module."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return getattr(self, self.__name__.rpartition(".")[2])(*args, **kwargs)


class _Package(types.ModuleType):
    """The package object: when the import system binds ``reprdiag.compare`` or
    ``reprdiag.gate`` (however it was imported), the module becomes callable."""

    def __setattr__(self, name: str, value: Any) -> None:
        if name in _CALLABLE and isinstance(value, types.ModuleType):
            value.__class__ = _CallableModule
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package
