"""Local forecasting methods: each fits one series' recent history and forecasts `h` steps after it.

They compete with the global LightGBM model in a model's portfolio (pipelines/portfolio.py). The simple
ones (naive, seasonal naive) are a line of numpy; the statistical ones come from statsforecast, which is
imported only when a model first trains or forecasts with them:
- `ets`: exponential smoothing with additive errors, the trend and season chosen by AICc (statsforecast
  AutoETS);
  seasons longer than 24 steps are left to `mstl`, as AutoETS itself cannot fit them;
- `theta`: the standard theta method on seasonally adjusted data (statsforecast Theta), the strong simple
  method of the M3 competition;
- `mstl`: a seasonal-trend decomposition by LOESS whose trend is forecast by non-seasonal ETS, for
  seasons longer than 24 steps (weekly data with a yearly season, half-hourly data with a daily one);
- `croston`: Croston's method with an optimised smoothing for intermittent series (mostly zeros);
- `arimax`: for models with numeric covariates known ahead, AutoARIMA with them as regressors (statsforecast
  AutoARIMA with X): a linear effect of a driver extrapolates where trees cannot (a price beyond any seen).
"""

from __future__ import annotations

import logging
import threading
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from spicepod import LOCAL_METHODS

log = logging.getLogger("flightcast.methods")

ETS_MAX_SEASON = 24  # AutoETS refuses longer seasons; mstl forecasts those
INTERMITTENT_ZEROS = 0.3  # a series with at least this share of zero values is intermittent
HISTORY_SEASONS = 8  # a local method fits on about this many seasons of history
MIN_HISTORY, MAX_HISTORY = 60, 1000


def history_length(season: int) -> int:
    """Values a local method fits on: enough seasons to estimate a season, bounded so a fit stays quick."""
    return int(np.clip(HISTORY_SEASONS * max(season, 1), MIN_HISTORY, MAX_HISTORY))


@dataclass(frozen=True)
class LocalMethod:
    """A named method for one series: whether it applies to a history, and its forecast after it."""

    name: str
    applies: Callable[[np.ndarray, int], bool]
    forecast: Callable[[np.ndarray, int, int, bool], np.ndarray]  # (history, h, season, quick) -> (h,)
    library: bool = False  # statsforecast's


def naive(y: np.ndarray, h: int, season: int, quick: bool = False) -> np.ndarray:
    return np.full(h, y[-1], dtype=np.float64)


def seasonal_naive(y: np.ndarray, h: int, season: int, quick: bool = False) -> np.ndarray:
    """Each step repeats the value one season before it (the last value when the history is shorter)."""
    if season <= 1 or y.size < season:
        return naive(y, h, season)
    last = y[-season:]
    return np.asarray(last[np.arange(h) % season], dtype=np.float64)


_statsforecast_lock = threading.Lock()
_statsforecast = None


def _models():
    """statsforecast.models, imported once (about a second: pandas and statsmodels come with it)."""
    global _statsforecast
    with _statsforecast_lock:
        if _statsforecast is None:
            import statsforecast.models as models

            _statsforecast = models
    return _statsforecast


def _library(build: Callable[..., object]) -> Callable[[np.ndarray, int, int, bool], np.ndarray]:
    def forecast(y: np.ndarray, h: int, season: int, quick: bool = False) -> np.ndarray:
        model = build(_models(), season, quick)
        with warnings.catch_warnings(), np.errstate(all="ignore"):
            warnings.simplefilter("ignore")
            out = model.forecast(y=np.asarray(y, dtype=np.float64), h=h)["mean"]
        return np.asarray(out, dtype=np.float64)

    return forecast


def _ets(models, season: int, quick: bool):
    # Additive errors only: a third of the full search's time, for a mean held-out MASE over the 14 sample
    # series of 1.030 against 1.011 with the full search. Quick (models of many series): no trend either (a
    # fifth of the full search's time); trends are left to theta's drift and to LightGBM.
    return models.AutoETS(season_length=season if 1 < season <= ETS_MAX_SEASON else 1,
                          model="ZNZ" if quick else "AZZ")


def _theta(models, season: int, quick: bool):
    return models.Theta(season_length=max(season, 1))


def _mstl(models, season: int, quick: bool):
    return models.MSTL(season_length=season, trend_forecaster=models.AutoETS(model="ZZN"))


def _croston(models, season: int, quick: bool):
    return models.CrostonOptimized()


def _intermittent(y: np.ndarray) -> bool:
    return y.size >= 4 and bool(np.all(y >= 0)) and float(np.mean(y == 0)) >= INTERMITTENT_ZEROS


METHODS: dict[str, LocalMethod] = {  # in spicepod's LOCAL_METHODS order
    m.name: m
    for m in (
        LocalMethod("naive", lambda y, s: y.size >= 1, naive),
        LocalMethod("seasonal_naive", lambda y, s: s > 1 and y.size >= s, seasonal_naive),
        LocalMethod("ets", lambda y, s: y.size >= max(2 * s, 8) if 1 < s <= ETS_MAX_SEASON else y.size >= 8,
                    _library(_ets), library=True),
        LocalMethod("theta", lambda y, s: y.size >= max(2 * s, 8), _library(_theta), library=True),
        LocalMethod("mstl", lambda y, s: s > ETS_MAX_SEASON and y.size >= 2 * s + 2, _library(_mstl), library=True),
        LocalMethod("croston", lambda y, s: _intermittent(y), _library(_croston), library=True),
    )
}
assert tuple(METHODS) == LOCAL_METHODS, "every local method the spicepod names has an implementation"


def uses_library(method: str) -> bool:
    """Whether fits of a model of `method` may call statsforecast: the portfolios (auto, ensemble) try every method."""
    return method in ("auto", "ensemble") or (method in METHODS and METHODS[method].library)


def local_forecast(name: str, history: np.ndarray, h: int, season: int, quick: bool = False) -> np.ndarray | None:
    """`name`'s forecast after `history` (finite values, oldest first); None where it does not apply or fails.
    `quick` trades a little accuracy for speed where a method can (models of many series)."""
    method = METHODS[name]
    if not method.applies(history, season):
        return None
    try:
        out = method.forecast(history, h, season, quick)
    except Exception as exc:  # a method that cannot fit a series just does not compete there
        log.debug("method %s failed on a series of %d values: %s: %s", name, history.size, type(exc).__name__, exc)
        return None
    if out.shape != (h,) or not np.all(np.isfinite(out)):
        return None
    return out


ARIMAX = "arimax"  # a candidate of models with numeric covariates known ahead (not a method a spicepod names)
ARIMAX_MIN_HISTORY = 16


def independent_columns(x: np.ndarray) -> list[int]:
    """Columns of `x` that are neither constant nor a combination of earlier ones (AutoARIMA refuses a
    rank-deficient regressor matrix: a flag never set in the history, say)."""
    keep: list[int] = []
    for j in range(x.shape[1]):
        trial = np.column_stack([np.ones(x.shape[0]), x[:, keep + [j]]])
        if np.linalg.matrix_rank(trial) == trial.shape[1]:
            keep.append(j)
    return keep


def arimax_forecast(y: np.ndarray, x: np.ndarray, x_future: np.ndarray, season: int) -> np.ndarray | None:
    """AutoARIMA's forecast of `x_future.shape[0]` steps after `y` with the regressors `x` (aligned with `y`)
    and their future values; None where it cannot fit (too short, a regressor missing, a failed fit)."""
    h = x_future.shape[0]
    if y.size < ARIMAX_MIN_HISTORY or x.shape[0] != y.size:
        return None
    if not (np.isfinite(x).all() and np.isfinite(x_future).all()):
        return None
    keep = independent_columns(x)
    try:
        with warnings.catch_warnings(), np.errstate(all="ignore"):
            warnings.simplefilter("ignore")
            # The stepwise search with the approximate likelihood and at most one seasonal AR and MA term:
            # about half the time of the full search for the same accuracy (UK Seatbelts, 8 origins: mean
            # MASE 0.831 against 0.828).
            model = _models().AutoARIMA(season_length=season if 1 < season <= ETS_MAX_SEASON else 1,
                                        approximation=True, max_P=1, max_Q=1)
            if keep:
                out = model.forecast(y=np.asarray(y, dtype=np.float64), h=h, X=x[:, keep], X_future=x_future[:, keep])
            else:
                out = model.forecast(y=np.asarray(y, dtype=np.float64), h=h)
    except Exception as exc:  # a series it cannot fit is forecast by the other candidates
        log.debug("arimax failed on a series of %d values: %s: %s", y.size, type(exc).__name__, exc)
        return None
    out = np.asarray(out["mean"], dtype=np.float64)
    return out if out.shape == (h,) and np.all(np.isfinite(out)) else None


def fallback_forecast(history: np.ndarray, h: int, season: int) -> tuple[str, np.ndarray]:
    """The forecast of a series nothing better was chosen for: seasonal naive, or naive when too short."""
    if METHODS["seasonal_naive"].applies(history, season):
        return "seasonal_naive", seasonal_naive(history, h, season)
    return "naive", naive(history, h, season)


def finite_tail(row: np.ndarray) -> np.ndarray:
    """A left-padded window row without its padding (NaN before the series starts)."""
    finite = np.isfinite(row)
    if finite.all():
        return row
    start = int(np.argmax(finite)) if finite.any() else row.size
    return row[start:]
