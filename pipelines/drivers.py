"""Drivers: what a series follows besides its own past, as feature columns of the one transform.

A model's `Drivers` says which inputs it has (covariates known ahead or only up to now, numeric or
categorical; static attributes of each series; calendar fields; public holidays) and how their raw
values become feature columns. Raw values travel as `DriverValues`: per series, each covariate on the
series' grid from its first observed period to the last period with a stored driver value (future
periods included), and each static attribute. Categories are learnt at training; one never seen then is
missing at forecast time, as LightGBM treats a missing value.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from pipelines.frequency import Frequency
from spicepod import InvalidInput

CALENDAR_FIELDS = ("minute", "hour", "day_of_week", "day_of_month", "day_of_year", "week_of_year", "month", "quarter")
HOLIDAY_REACH_DAYS = 30  # the distance to the nearest holiday is capped here: further is "no holiday near"
_DAY_US = 86_400_000_000
_MINUTE_US = 60_000_000
MEMO_CODES = 10_000  # codes remembered per categorical column (Drivers.encode); past this many, it starts again


@dataclass(frozen=True)
class Covariate:
    column: str
    categorical: bool = False
    known: str = "future"  # future: known ahead of time; past: observed only up to the forecast origin

    def to_json(self) -> dict[str, Any]:
        return {"column": self.column, "categorical": self.categorical, "known": self.known}


@dataclass
class DriverValues:
    """Raw driver values of a batch of series: `covariates[name]` holds one array per series (float64 for
    numeric covariates, object for categorical ones; NaN or None where there is no value), `static[name]`
    one value per series."""

    covariates: dict[str, list[np.ndarray]] = field(default_factory=dict)
    static: dict[str, list[Any]] = field(default_factory=dict)

    def subset(self, indices: Sequence[int]) -> DriverValues:
        return DriverValues({k: [v[i] for i in indices] for k, v in self.covariates.items()},
                            {k: [v[i] for i in indices] for k, v in self.static.items()})

    def shifted(self, lag: int) -> DriverValues:
        """Each series' covariates without their first `lag` periods (aligned with differenced values)."""
        return DriverValues({k: [a[lag:] for a in v] for k, v in self.covariates.items()}, dict(self.static))


@dataclass
class FutureDrivers:
    """Driver inputs of a batch of forecasts: known-future covariates at each of `steps` periods after each
    window (n, steps), known-past covariates at each window's end (n,), static attributes (n,)."""

    future: dict[str, np.ndarray] = field(default_factory=dict)
    past: dict[str, np.ndarray] = field(default_factory=dict)
    static: dict[str, np.ndarray] = field(default_factory=dict)
    # Numeric known-future covariates over each window's periods (n, window), aligned with the window's
    # values (NaN where unknown): what a method with regressors fits on (pipelines/methods.arimax_forecast).
    history: dict[str, np.ndarray] = field(default_factory=dict)

    def rows(self, indices: np.ndarray) -> FutureDrivers:
        return FutureDrivers({k: v[indices] for k, v in self.future.items()},
                             {k: v[indices] for k, v in self.past.items()},
                             {k: v[indices] for k, v in self.static.items()},
                             {k: v[indices] for k, v in self.history.items()})


class HolidayCalendar:
    """Public holidays of a country (and subdivision) from the `holidays` package, as sorted day numbers."""

    def __init__(self, country: str, subdivision: str | None = None):
        import holidays  # a runtime dependency, imported where used

        try:
            holidays.country_holidays(country, subdiv=subdivision, years=[2000])
        except NotImplementedError as exc:
            what = f"subdivision '{subdivision}' of country '{country}'" if subdivision else f"country '{country}'"
            raise InvalidInput(f"holidays: unknown {what} ({exc})") from None
        self.country = country
        self.subdivision = subdivision

    @functools.lru_cache(maxsize=16)  # noqa: B019 (one calendar per model, a few year ranges each)
    def days(self, first_year: int, last_year: int) -> np.ndarray:
        import holidays

        table = holidays.country_holidays(self.country, subdiv=self.subdivision,
                                          years=range(first_year, last_year + 1))
        dates = np.array(sorted(table.keys()), dtype="datetime64[D]")
        return dates.astype(np.int64)

    def features(self, starts: np.ndarray, ends: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Holidays inside each period [start, end) and the signed days from each period's start to the
        nearest holiday (positive: ahead), capped at HOLIDAY_REACH_DAYS."""
        first = starts.astype("datetime64[D]").astype(np.int64)
        last = np.maximum(ends.astype("datetime64[D]").astype(np.int64), first + 1)
        if first.size == 0:
            return np.zeros(0), np.zeros(0)
        years = first.astype("datetime64[D]").astype("datetime64[Y]").astype(np.int64) + 1970
        days = self.days(int(years.min()) - 1, int(years.max()) + 1)
        count = (np.searchsorted(days, last) - np.searchsorted(days, first)).astype(np.float64)
        at = np.searchsorted(days, first)
        ahead = np.where(at < days.size, days[np.minimum(at, days.size - 1)] - first, HOLIDAY_REACH_DAYS)
        behind = np.where(at > 0, first - days[np.maximum(at - 1, 0)], HOLIDAY_REACH_DAYS)
        distance = np.where(ahead <= behind, ahead, -behind).astype(np.float64)
        return count, np.clip(distance, -HOLIDAY_REACH_DAYS, HOLIDAY_REACH_DAYS)


def calendar_field(name: str, ts: np.ndarray) -> np.ndarray:
    """One calendar field of each timestamp (datetime64[us]), as numbers."""
    us = ts.astype("datetime64[us]").astype(np.int64)
    days = us // _DAY_US
    if name == "minute":
        return ((us // _MINUTE_US) % 60).astype(np.float64)
    if name == "hour":
        return ((us // (60 * _MINUTE_US)) % 24).astype(np.float64)
    if name == "day_of_week":
        return ((days + 3) % 7).astype(np.float64)  # Monday 0 (1970-01-01 was a Thursday)
    dates = days.astype("datetime64[D]")
    months = dates.astype("datetime64[M]")
    if name == "day_of_month":
        return (dates - months).astype(np.int64).astype(np.float64) + 1
    if name == "day_of_year":
        return (dates - dates.astype("datetime64[Y]")).astype(np.int64).astype(np.float64) + 1
    if name == "week_of_year":  # ISO 8601: the week holding the year's first Thursday is week 1
        thursday = days - (days + 3) % 7 + 3
        year_start = thursday.astype("datetime64[D]").astype("datetime64[Y]").astype("datetime64[D]").astype(np.int64)
        return ((thursday - year_start) // 7 + 1).astype(np.float64)
    month = months.astype(np.int64) % 12
    if name == "month":
        return (month + 1).astype(np.float64)
    if name == "quarter":
        return (month // 3 + 1).astype(np.float64)
    raise InvalidInput(f"unknown calendar field {name!r}; expected one of {', '.join(CALENDAR_FIELDS)}")


class Drivers:
    """A model's driver inputs and the feature columns they become (appended to the window's columns)."""

    def __init__(
        self, covariates: Sequence[Covariate] = (), static: Sequence[str] = (), calendar: Sequence[str] = (),
        holidays: HolidayCalendar | None = None, categories: dict[str, list[str]] | None = None,
    ):
        self.covariates = list(covariates)
        self.static = list(static)
        self.calendar = list(calendar)
        self.holidays = holidays
        self.categories = {k: list(v) for k, v in (categories or {}).items()}
        self._codes = {k: {c: float(i) for i, c in enumerate(v)} for k, v in self.categories.items()}
        self._memo: dict[str, dict[tuple[type, Any], float]] = {}  # see encode
        self.future = [c for c in self.covariates if c.known == "future"]
        self.past = [c for c in self.covariates if c.known == "past"]
        self._categorical = frozenset(self.static) | {c.column for c in self.covariates if c.categorical}
        self._width = len(self.names())

    def __bool__(self) -> bool:
        return bool(self.covariates or self.static or self.calendar or self.holidays)

    @property
    def columns(self) -> list[str]:
        """Covariate and static columns as read from the data (what a grid query selects)."""
        return [c.column for c in self.covariates] + self.static

    def categorical(self, name: str) -> bool:
        return name in self._categorical

    # --- feature columns ---------------------------------------------------------------------------

    def names(self) -> list[str]:
        names = [c.column for c in self.future] + [f"{c.column}_latest" for c in self.past]
        names += [f"static_{s}" for s in self.static] + [f"calendar_{f}" for f in self.calendar]
        if self.holidays is not None:
            names += ["holiday_count", "holiday_distance"]
        return names

    def groups(self) -> list[str]:
        """The input group of each column: its covariate, static attribute, `calendar` or `holidays`."""
        groups = [c.column for c in self.future] + [c.column for c in self.past] + list(self.static)
        groups += ["calendar"] * len(self.calendar)
        return groups + (["holidays", "holidays"] if self.holidays is not None else [])

    @property
    def width(self) -> int:
        return self._width

    def categorical_positions(self) -> list[int]:
        """Positions (among the driver columns) of the columns LightGBM treats as categories."""
        flags = [c.categorical for c in self.future] + [c.categorical for c in self.past] + [True] * len(self.static)
        return [i for i, flag in enumerate(flags) if flag]

    def learn(self, values: DriverValues) -> None:
        """Remember the categories of every categorical column seen in `values` (sorted, so codes are stable)."""
        for name in self.columns:
            if not self.categorical(name):
                continue
            seen: set[str] = set(self.categories.get(name, []))
            for v in values.static.get(name, []):
                seen.add(category(v))
            for array in values.covariates.get(name, []):
                seen.update(category(v) for v in array.tolist())
            seen.discard(None)
            self.categories[name] = sorted(seen)
            self._codes[name] = {c: float(i) for i, c in enumerate(self.categories[name])}
            self._memo.pop(name, None)

    def encode(self, name: str, raw: np.ndarray) -> np.ndarray:
        """Raw values of a column as feature numbers: numeric as float, categories as their codes (NaN when
        missing or never seen at training)."""
        raw = np.asarray(raw)
        if not self.categorical(name):
            return raw.astype(np.float64)
        # A forecast encodes its steps' categories at every call, a few distinct values many times over: each
        # value's code is remembered by its type and value, where those alone decide its category (see _MEMO).
        memo = self._memo.get(name)
        if memo is None or len(memo) > MEMO_CODES:
            memo = self._memo[name] = {}
        flat = raw.ravel().tolist()
        try:
            found = [memo.get((v.__class__, v)) for v in flat]
        except TypeError:  # an unhashable value (a list, say): each is looked at on its own
            found = [None] * len(flat)
        if None in found:  # codes are floats: None is a value not remembered
            codes = self._codes.get(name, {})
            for i, v in enumerate(flat):
                if found[i] is None:
                    code = found[i] = codes.get(category(v), np.nan)
                    if v.__class__ in _MEMO and v == v:  # NaN: a new key each time, never found
                        memo[(v.__class__, v)] = code
        return np.array(found, dtype=np.float64).reshape(raw.shape)

    def block(
        self, targets: np.ndarray, ends: np.ndarray, freq: Frequency, future: dict[str, np.ndarray],
        past: dict[str, np.ndarray], static: dict[str, np.ndarray],
    ) -> np.ndarray:
        """Driver columns (m, width) of m feature rows: `targets` are the target periods' starts, `future`
        the encoded known-future covariates at them, `past` the encoded known-past covariates at each
        window's end, `static` each row's encoded attributes. `ends` are the target periods' ends."""
        m = targets.shape[0]
        out = np.empty((m, self.width), dtype=np.float64)
        col = 0
        for c in self.future:
            out[:, col] = future[c.column]
            col += 1
        for c in self.past:
            out[:, col] = past[c.column]
            col += 1
        for s in self.static:
            out[:, col] = static[s]
            col += 1
        for f in self.calendar:
            out[:, col] = calendar_field(f, targets)
            col += 1
        if self.holidays is not None:
            out[:, col], out[:, col + 1] = self.holidays.features(targets, ends)
        return out

    def series_block(
        self, times: np.ndarray, encoded: dict[str, np.ndarray], attributes: dict[str, float], targets: np.ndarray,
        step: int, freq: Frequency,
    ) -> np.ndarray:
        """Driver columns of a training series' rows predicting the values at indices `targets`, `step`
        periods after each window's end (the covariates as encoded by `encode_series`)."""
        ends_at = targets - step
        future = {c.column: _at(encoded[c.column], targets) for c in self.future}
        past = {c.column: _at(encoded[c.column], ends_at) for c in self.past}
        static = {s: np.full(targets.size, attributes[s]) for s in self.static}
        when = times[targets]
        return self.block(when, np.asarray(freq.add(when, 1)), freq, future, past, static)

    def encode_series(self, values: DriverValues, i: int) -> tuple[dict[str, np.ndarray], dict[str, float]]:
        """Series i's covariates and static attributes, encoded."""
        encoded = {c.column: self.encode(c.column, values.covariates[c.column][i]) for c in self.covariates}
        attributes = {s: float(self.encode(s, np.array([values.static[s][i]], dtype=object))[0]) for s in self.static}
        return encoded, attributes

    def forecast_steps(
        self, inputs: FutureDrivers, last_times: np.ndarray, horizon: int, freq: Frequency,
    ) -> np.ndarray:
        """Driver columns (n, horizon, width) for predicting each of the steps 1..horizon after each window of a
        batch, built in one pass: a forecast's steps differ only in their target periods and known-future values
        (which cover the horizon: see check_future), and numpy's cost per call is most of a step's columns."""
        last_times = np.asarray(last_times)
        n, k = last_times.shape[0], horizon
        offsets = np.arange(1, k + 1, dtype=np.int64)
        targets = np.asarray(freq.add(last_times.astype("datetime64[us]")[:, None], offsets[None, :]))
        targets = targets.astype("datetime64[us]").ravel()
        future = {c.column: self.encode(c.column, inputs.future[c.column][:, :k]).ravel() for c in self.future}
        past = {c.column: np.repeat(self.encode(c.column, inputs.past[c.column]), k) for c in self.past}
        static = {s: np.repeat(self.encode(s, inputs.static[s]), k) for s in self.static}
        out = self.block(targets, np.asarray(freq.add(targets, 1)), freq, future, past, static)
        return out.reshape(n, k, self.width)

    # --- persistence -------------------------------------------------------------------------------

    def to_json(self) -> dict[str, Any]:
        return {
            "covariates": [c.to_json() for c in self.covariates],
            "static": self.static,
            "calendar": self.calendar,
            "holidays": None if self.holidays is None else {"country": self.holidays.country,
                                                             "subdivision": self.holidays.subdivision},
            "categories": self.categories,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any] | None) -> Drivers:
        if not data:
            return cls()
        holidays = data.get("holidays")
        return cls(
            [Covariate(c["column"], bool(c["categorical"]), c["known"]) for c in data.get("covariates", [])],
            data.get("static", []), data.get("calendar", []),
            HolidayCalendar(holidays["country"], holidays.get("subdivision")) if holidays else None,
            data.get("categories", {}),
        )


# Types whose equal values always have one category (Decimal("1") == Decimal("1.0"), whose categories differ, is
# not among them; True == 1 are told apart by their types).
_MEMO = frozenset({str, int, float, bool, type(None)})


def category(value: Any) -> str | None:
    """A category's name: the same for 1, 1.0 and "1" (from the data, a request or a file); None when missing."""
    if value is None or isinstance(value, float) and value != value:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float, np.integer, np.floating)):
        return str(int(value)) if float(value).is_integer() else repr(float(value))
    return str(value)


def _at(values: np.ndarray, index: np.ndarray) -> np.ndarray:
    """values[index], NaN where the index falls outside the array."""
    inside = (index >= 0) & (index < values.size)
    return np.where(inside, values[np.clip(index, 0, max(values.size - 1, 0))] if values.size else np.nan, np.nan)
