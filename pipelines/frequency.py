"""Series frequencies: parsing, inference from timestamps, seasons and calendar stepping."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from spicepod.constants import FREQUENCY
from spicepod.constants import FREQUENCY_UNITS as UNITS
from spicepod.errors import InvalidInput

_US = np.timedelta64(1, "us")
_DAY_US = 86_400_000_000
# Microseconds per step of the fixed-length units.
_FIXED_US = {"s": 1_000_000, "min": 60_000_000, "h": 3_600_000_000, "d": _DAY_US, "w": 7 * _DAY_US}
# Months per step of the calendar units.
_MONTHS = {"mo": 1, "q": 3, "y": 12}


def _as_us(ts: np.ndarray | np.datetime64) -> np.ndarray:
    return np.asarray(ts).astype("datetime64[us]", copy=False)


@dataclass(frozen=True)
class Frequency:
    """A fixed step: `count` units, where mo/q/y follow the calendar and the others are fixed lengths."""

    unit: str
    count: int = 1

    def __post_init__(self) -> None:
        if self.unit not in UNITS:
            raise InvalidInput(f"unknown frequency unit {self.unit!r}; expected one of {', '.join(UNITS)}")
        if not isinstance(self.count, int) or isinstance(self.count, bool) or self.count < 1:
            raise InvalidInput(f"frequency count must be a positive integer, got {self.count!r}")

    @classmethod
    def parse(cls, text: str) -> Frequency:
        """Parse "15min", "1h", "h", "1mo", "1q", "1y", "30s", ...; the count defaults to 1."""
        match = FREQUENCY.match(text) if isinstance(text, str) else None
        if match is None or (match.group(1) and int(match.group(1)) < 1):
            raise InvalidInput(
                f"invalid frequency {text!r}; expected a positive count and a unit "
                f"({', '.join(UNITS)}), e.g. 15min, 1h, 1d, 1w, 1mo, 1q, 1y"
            )
        return cls(match.group(2), int(match.group(1) or 1))

    def __str__(self) -> str:
        return f"{self.count}{self.unit}"

    @property
    def is_calendar(self) -> bool:
        return self.unit in _MONTHS

    @property
    def months(self) -> int:
        """Months per step (calendar units only)."""
        return _MONTHS[self.unit] * self.count

    @property
    def step_us(self) -> int:
        """Microseconds per step (fixed units only)."""
        return _FIXED_US[self.unit] * self.count

    @property
    def season(self) -> int:
        """Steps in the natural cycle: a day for sub-daily, a week for daily, a year for the rest."""
        if self.unit == "y":
            return 1
        if self.is_calendar:
            cycle = 12 // _MONTHS[self.unit]
        elif self.unit == "w":
            cycle = 52
        elif self.unit == "d":
            cycle = 7
        else:
            cycle = _DAY_US // _FIXED_US[self.unit]
        if cycle % self.count:
            return 1
        season = cycle // self.count
        # A daily cycle of secondly data is too long to learn from; no season then.
        return season if season <= 1440 else 1

    def position(self, ts: np.ndarray | np.datetime64) -> np.ndarray:
        """Position of each timestamp within its season (0 .. season-1), e.g. the month of the year."""
        ts = _as_us(ts)
        season = self.season
        if season == 1:
            return np.zeros(ts.shape, dtype=np.int64)
        if self.is_calendar:
            month = ts.astype("datetime64[M]").astype(np.int64)
            return (month // self.months) % season
        if self.unit == "w":
            # Week of the year rather than weeks since the epoch, so the cycle stays tied to the calendar.
            day_of_year = (ts.astype("datetime64[D]") - ts.astype("datetime64[Y]")).astype(np.int64)
            return np.minimum(day_of_year // 7, season - 1)
        return (ts.astype(np.int64) // self.step_us) % season

    def future_positions(self, last: np.ndarray, horizon: int) -> np.ndarray:
        """`position` of each of the `horizon` periods after each of `last` (n,): (n, horizon)."""
        last = _as_us(last)
        steps = np.arange(1, horizon + 1, dtype=np.int64)
        season = self.season
        if self.is_calendar or self.unit == "w" or season == 1:
            return self.position(np.asarray(self.add(last[:, None], steps[None, :])))
        # A fixed step: the k-th period after t is t + k steps, and floor((t + k step) / step) = floor(t / step) + k.
        step = self.step_us
        return ((last.view(np.int64) // step)[:, None] + steps) % season

    def add(self, ts: np.ndarray | np.datetime64, n: int | np.ndarray) -> np.ndarray | np.datetime64:
        """`ts` plus `n` steps (broadcast); calendar steps move whole months and keep the day of the month
        (a day past the target month's end lands on its last day)."""
        ts = _as_us(ts)
        n = np.asarray(n, dtype=np.int64)
        if not self.is_calendar:
            out = ts + (n * self.step_us) * _US
        else:
            month = ts.astype("datetime64[M]")
            day = ts.astype("datetime64[D]")
            time_of_day = ts - day
            day_offset = day - month.astype("datetime64[D]")
            target = month + n * self.months
            last_day = (target + 1).astype("datetime64[D]") - np.timedelta64(1, "D")
            out = np.minimum(target.astype("datetime64[D]") + day_offset, last_day).astype("datetime64[us]")
            out = out + time_of_day
        return out[()] if out.ndim == 0 else out

    def future(self, last_ts: np.datetime64, horizon: int) -> np.ndarray:
        """The `horizon` timestamps after `last_ts`."""
        return np.atleast_1d(self.add(last_ts, np.arange(1, horizon + 1, dtype=np.int64)))

    def steps_between(self, start: np.datetime64, ts: np.ndarray) -> np.ndarray:
        """Whole steps from `start` to each of `ts` (grid timestamps: exact)."""
        ts = _as_us(ts)
        if self.is_calendar:
            first = _as_us(start).astype("datetime64[M]").astype(np.int64)
            return (ts.astype("datetime64[M]").astype(np.int64) - first) // self.months
        if ts.ndim == 0:
            return (ts - _as_us(start)).astype(np.int64) // self.step_us
        steps = np.subtract(ts.view(np.int64), _as_us(start).astype(np.int64))  # one new array: reads are long
        steps //= self.step_us
        return steps


def _mode(values: np.ndarray) -> tuple[int, int]:
    """The most common value and how often it occurs."""
    uniq, counts = np.unique(values, return_counts=True)
    i = int(np.argmax(counts))
    return int(uniq[i]), int(counts[i])


def infer_frequency(timestamps: np.ndarray, dataset: str) -> Frequency:
    """The series' step: calendar months/quarters/years when the timestamps keep their place in the month,
    else the most common fixed step. It does not check that every step matches: the grid query puts
    each row in its period (aggregating or filling), so an irregular step is never an error."""
    ts = _as_us(timestamps)
    if ts.ndim != 1 or ts.size < 2:
        raise InvalidInput(f"dataset {dataset!r}: need at least 2 timestamps to infer a frequency")
    if np.isnat(ts).any():
        raise InvalidInput(f"dataset {dataset!r}: the time column has missing values")
    diffs = np.diff(ts).astype(np.int64)
    step, _ = _mode(diffs)
    if step <= 0:
        raise InvalidInput(
            f"dataset {dataset!r}: cannot infer a frequency: timestamps are duplicated or not sorted"
        )
    if step >= 28 * _DAY_US:
        # Candidates for calendar steps: the same place in each month (offset from the month start, or
        # the month's last day, with the same time of day).
        month = ts.astype("datetime64[M]")
        day = ts.astype("datetime64[D]")
        offset = (ts - month.astype("datetime64[us]")).astype(np.int64)
        time_of_day = (ts - day.astype("datetime64[us]")).astype(np.int64)
        month_end = (month + 1).astype("datetime64[D]") - day == np.timedelta64(1, "D")
        _, same_offset = _mode(offset)
        same_end = _mode(time_of_day[month_end])[1] if month_end.any() else 0
        if max(same_offset, same_end) * 2 >= ts.size:
            months, _ = _mode(np.diff(month.astype(np.int64)))
            if months > 0:
                if months % 12 == 0:
                    return Frequency("y", months // 12)
                if months % 3 == 0:
                    return Frequency("q", months // 3)
                return Frequency("mo", months)
    for unit in ("w", "d", "h", "min", "s"):
        if step % _FIXED_US[unit] == 0:
            return Frequency(unit, step // _FIXED_US[unit])
    raise InvalidInput(f"dataset {dataset!r}: the step of {step} microseconds is below one second")
