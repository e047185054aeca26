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

from pipelines.lean_imports import import_hiding

import_hiding("lightgbm", ("sklearn", "pandas"))
