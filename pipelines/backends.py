"""Where a model's series are while it trains: a `SeriesBackend` holds them in chunks, maps per-chunk work
over them and fits LightGBM on the rows the chunks build. `LocalBackend` keeps one chunk in this process;
the Dask backend (pipelines/dask_engine.py) keeps chunks on workers. pipelines/training.py and
pipelines/portfolio_training.py run on either without change.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from pipelines.series import SeriesSet

if TYPE_CHECKING:
    import lightgbm as lgb


class SeriesBackend(Protocol):
    def map(self, fn: Callable[..., Any], *args: Any) -> list[Any]:
        """fn(chunk, *args) for every chunk, results in chunk order."""

    def fit(self, params: dict[str, Any], rounds: int, rows: Callable[..., Any], *args: Any) -> lgb.Booster:
        """A booster fit on the rows (x, y, w) that rows(chunk, *args) builds from every chunk."""


class LocalBackend:
    """The series in this process, one chunk; fits by lightgbm.train."""

    def __init__(self, series: SeriesSet):
        self.chunks = [series]

    def map(self, fn: Callable[..., Any], *args: Any) -> list[Any]:
        return [fn(chunk, *args) for chunk in self.chunks]

    def fit(self, params: dict[str, Any], rounds: int, rows: Callable[..., Any], *args: Any) -> lgb.Booster:
        parts = self.map(rows, *args)
        x, y, w = (np.concatenate([p[k] for p in parts]) for k in range(3))
        return fit_rows(params, rounds, x, y, w)


def fit_rows(params: dict[str, Any], rounds: int, x: np.ndarray, y: np.ndarray, w: np.ndarray) -> lgb.Booster:
    """lightgbm.train on rows held in one place, weights over their mean (how every backend fits one part)."""
    import lightgbm as lgb  # on first use: a runtime without models (a data node) never loads it

    params = dict(params)
    categorical = params.pop("categorical_feature", "auto")  # a Dataset argument, not a training parameter
    data = lgb.Dataset(x, y, weight=w / w.mean() if w.size else w, params=params, free_raw_data=True,
                       categorical_feature=categorical)
    return lgb.train(params, data, num_boost_round=rounds)
