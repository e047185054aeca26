"""SeriesSet: the series a model trains on, each on its regular grid (oldest first, no gaps, no NaN)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from pipelines.drivers import DriverValues


@dataclass
class SeriesSet:
    """Parallel lists: a series id (None for a single-series model), its grid timestamps and values; and,
    for a model with drivers, their raw values (each series' covariates start at its first period and may
    run past its last value, into the periods a forecast needs)."""

    ids: list[str | None] = field(default_factory=list)
    times: list[np.ndarray] = field(default_factory=list)
    values: list[np.ndarray] = field(default_factory=list)
    drivers: DriverValues | None = None

    @classmethod
    def single(cls, times: np.ndarray, values: np.ndarray) -> SeriesSet:
        return cls([None], [np.asarray(times).astype("datetime64[us]")], [np.asarray(values, dtype=np.float64)])

    def __len__(self) -> int:
        return len(self.ids)

    def lengths(self) -> np.ndarray:
        return np.array([v.size for v in self.values], dtype=np.int64)

    def subset(self, indices: list[int] | np.ndarray) -> SeriesSet:
        return SeriesSet([self.ids[i] for i in indices], [self.times[i] for i in indices],
                         [self.values[i] for i in indices],
                         None if self.drivers is None else self.drivers.subset(list(indices)))

    def joined(self, other: SeriesSet) -> SeriesSet:
        """These series, then `other`'s (sets read without drivers)."""
        if self.drivers is not None or other.drivers is not None:
            raise ValueError("series sets with drivers are not joined")
        return SeriesSet(self.ids + other.ids, self.times + other.times, self.values + other.values)

    def truncated(self, cuts: np.ndarray) -> SeriesSet:
        """Each series cut to its first cuts[i] points (drivers kept whole: a backtest forecast from a cut
        uses the drivers' actual values after it)."""
        return SeriesSet(list(self.ids), [t[:c] for t, c in zip(self.times, cuts, strict=True)],
                         [v[:c] for v, c in zip(self.values, cuts, strict=True)], self.drivers)

    @property
    def rows(self) -> int:
        return int(self.lengths().sum())

    def newest(self) -> int | None:
        """The newest period of any series, in microseconds (UTC); None without a period."""
        lasts = [t[-1] for t in self.times if t.size]
        return int(np.max(np.asarray(lasts, dtype="datetime64[us]")).astype(np.int64)) if lasts else None
