"""pytest configuration for the whole checkout (the doctest run over reprdiag/ included).

Modules of optional extras import their framework at the top; when it is not installed they
are left out of collection instead of failing it.
"""

from __future__ import annotations

import importlib.util


def _missing(*modules: str) -> bool:
    return all(importlib.util.find_spec(m) is None for m in modules)


collect_ignore: list[str] = []
if _missing("lightning", "pytorch_lightning"):
    collect_ignore.append("reprdiag/integrations/lightning.py")
