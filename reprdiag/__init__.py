"""reprdiag: representation-quality diagnostics. Did my embeddings collapse?

>>> import torch, reprdiag
>>> report = reprdiag.analyze(torch.eye(3, dtype=torch.float64), metrics=["vne"], device="cpu")
>>> round(report.metrics["vne"], 6)
1.098612
"""

from reprdiag._version import __version__

# ``compare`` and ``gate`` are functions that shadow their modules' names as package
# attributes: ``reprdiag.compare(...)`` is the function, while
# ``from reprdiag.compare import Comparison`` still imports from the module.
from reprdiag.api import analyze
from reprdiag.compare import Comparison, compare
from reprdiag.gate import GateResult, Rule, gate
from reprdiag.metrics import METRICS
from reprdiag.report.model import InputResult, Report

__all__ = ["METRICS", "Comparison", "GateResult", "InputResult", "Report", "Rule",
           "__version__", "analyze", "compare", "gate"]
