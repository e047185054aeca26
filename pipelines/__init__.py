"""Forecasting: window queries over Flight, frequencies, LightGBM models, the registry and the prediction service."""

import os

# LightGBM's OpenMP threads wait for work by spinning for a while unless told otherwise; on a machine with
# more busy threads than cores (other processes, or the requests this process serves) a spinning thread takes
# the core from the thread it waits for. Passive threads sleep instead. Measured on 2 cores, training a
# 200-series panel: 14.5 s passive against 15.0 s by default with one core busy, 29.0 s against 30.1 s with
# three busy processes. Set before LightGBM's OpenMP runtime is first loaded (only pipelines modules load
# LightGBM); a value in the environment wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
