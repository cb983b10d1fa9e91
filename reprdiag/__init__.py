"""reprdiag: representation-quality diagnostics. Did my embeddings collapse?

>>> import torch, reprdiag
>>> report = reprdiag.analyze(torch.eye(3, dtype=torch.float64), metrics=["vne"], device="cpu")
>>> round(report.metrics["vne"], 6)
1.098612
"""

__version__ = "0.1.0"

from reprdiag.api import analyze
from reprdiag.metrics import METRICS
from reprdiag.report.model import InputResult, Report

__all__ = ["METRICS", "InputResult", "Report", "__version__", "analyze"]
