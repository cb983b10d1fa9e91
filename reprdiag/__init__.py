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
    from reprdiag.compare import Comparison, compare
    from reprdiag.gate import GateResult, Rule, gate
    from reprdiag.metrics import METRICS
    from reprdiag.report.model import InputResult, Report
    from reprdiag.report.read import read_report

#: Public name → the module defining it, imported when the name is first read.
_LAZY = {"analyze": "reprdiag.api", "analyze_model": "reprdiag.api", "compare": "reprdiag.compare",
         "Comparison": "reprdiag.compare", "gate": "reprdiag.gate", "GateResult": "reprdiag.gate",
         "Rule": "reprdiag.gate", "METRICS": "reprdiag.metrics",
         "InputResult": "reprdiag.report.model", "Report": "reprdiag.report.model",
         "read_report": "reprdiag.report.read"}
#: Functions named like their modules: ``reprdiag.compare(...)`` is the function, while
#: ``from reprdiag.compare import Comparison`` still imports from the module.
_SHADOWED = ("compare", "gate")

__all__ = ["METRICS", "Comparison", "GateResult", "InputResult", "Report", "Rule",
           "__version__", "analyze", "analyze_model", "compare", "gate", "read_report"]


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'reprdiag' has no attribute {name!r}")
    value = getattr(importlib.import_module(_LAZY[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})


class _Package(types.ModuleType):
    """The package object: when the import system binds a submodule that a function of the
    same name shadows (``reprdiag.compare``), the function is bound instead."""

    def __setattr__(self, name: str, value: Any) -> None:
        if name in _SHADOWED and isinstance(value, types.ModuleType):
            value = getattr(value, name)
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package
