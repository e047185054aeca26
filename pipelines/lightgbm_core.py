"""LightGBM without its optional scikit-learn and pandas integrations, for the processes flightcast owns that use
only its core API: the runtime `flightcast run` starts (unless it trains on Dask, whose LightGBM estimators need
scikit-learn) and the fit server.

LightGBM imports scikit-learn and pandas whenever they are installed, for its estimator classes and DataFrame
input: 0.6 s of its 1 s import, paid by every such process at start. Models here are trained with
`lightgbm.train` and predict from numpy arrays, so importing this module imports LightGBM with the two hidden
for the length of that import (LightGBM then takes them for not installed); afterwards they import as usual
for anyone else. Where LightGBM is already imported, it changes nothing.
"""

from __future__ import annotations

import importlib
import sys
from typing import Any

OPTIONAL = ("sklearn", "pandas")


class _Hidden:
    """A finder that says the given top-level packages (and their modules) are not installed."""

    def __init__(self, names: tuple[str, ...]):
        self.names = names

    def find_spec(self, name: str, path: Any = None, target: Any = None) -> None:
        if name.partition(".")[0] in self.names:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)


def _import() -> None:
    if "lightgbm" in sys.modules:
        return
    hidden = _Hidden(tuple(name for name in OPTIONAL if name not in sys.modules))  # loaded ones cost nothing
    sys.meta_path.insert(0, hidden)
    try:
        importlib.import_module("lightgbm")
    finally:
        sys.meta_path.remove(hidden)


_import()
