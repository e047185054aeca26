"""statsforecast's models without Dask, for the fit server's preload (see fit_process): fits call the model
classes on numpy arrays, never statsforecast's distributed front ends.

statsforecast imports its helpers' Dask DataFrame support whenever Dask is installed (as it is beside
flightcast[dask]): 0.7 of the 1.9 s of CPU its import takes. The fit server imports it once, alone, before any fit, so
importing this module there imports statsforecast with Dask hidden (see lean_imports).
"""

from __future__ import annotations

from pipelines.lean_imports import import_hiding

import_hiding("statsforecast.models", ("dask",))
