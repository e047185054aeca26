"""SeriesBrowser: what a person looks through before forecasting: a model's series, and a series' history."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from pipelines.flight_client import FlightDataClient
from pipelines.forecast_cache import ForecastCache
from pipelines.forecasts import History, SeriesEntry
from pipelines.grid_setup import bucket
from pipelines.portfolio import MIN_PERIODS, PortfolioModel
from pipelines.state import ModelState, check_series, find_model
from spicepod import InvalidInput
from spicepod.timestamps import iso_utc


class SeriesBrowser:
    def __init__(self, states: Mapping[str, ModelState], client: FlightDataClient, cache: ForecastCache):
        self._states = states
        self._client = client
        self._cache = cache

    def series_matching(
        self, name: str, text: str | None = None, limit: int | None = None,
    ) -> tuple[int, list[SeriesEntry]]:
        """(how many ids contain `text`, any case; the first `limit` of those entries), by id.

        Only the entries returned are built, and the per-series stats are kept until the model's data or
        version changes, so a search box over 10,000 series stays quick.
        """
        state = find_model(self._states, name)
        served = state.served()
        grid, spec = served.grid, state.spec
        stats = self._cache.series_stats(served)
        if text:
            needle = text.casefold()
            stats = [row for row in stats if row[0] is not None and needle in row[0].casefold()]
        # A portfolio forecasts any series of two periods; LightGBM alone needs its window and horizon.
        need = MIN_PERIODS if isinstance(served.model, PortfolioModel) else spec.lookback + spec.horizon
        entries = []
        for sid, rows, first, last in stats if limit is None else stats[:limit]:
            periods = int(grid.freq.steps_between(bucket(first, grid.freq, grid.origin),
                                                  np.asarray([bucket(last, grid.freq, grid.origin)]))[0]) + 1
            entries.append(SeriesEntry(sid, rows, iso_utc(first), iso_utc(last),
                                       "ready" if periods >= need else "too_short"))
        return len(stats), entries

    def history(self, name: str, series: str | None = None, limit: int = 200) -> History:
        """The latest `limit` points of a series exactly as the model sees it (on its grid, filled)."""
        state = find_model(self._states, name)
        served = state.served()
        check_series(state, served, series)
        found = served.grid.history(self._client, limit, ids=[series] if served.panel else None)
        if not len(found):
            if served.panel:
                raise InvalidInput(f"series '{series}' not found in model '{state.name}'")
            return History(None, [], [])
        return History(series, [iso_utc(t) for t in found.times[0]], found.values[0].tolist())
