"""The checks a spicepod value passes: each takes the value and its key, returns the value to keep, or
raises Invalid with a message that names the key and what was expected."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from spicepod.addresses import parse_host_port
from spicepod.constants import FREQUENCY, FREQUENCY_UNITS

IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
SIZE = re.compile(r"^\d+(\.\d+)?\s*(B|KB|MB|GB|TB|KiB|MiB|GiB|TiB)$", re.IGNORECASE)
TIME_FORMATS = ("timestamp", "timestamptz", "unix_seconds", "unix_millis", "ISO8601")

Check = Callable[[Any, str], Any]


class Invalid(Exception):
    """Raised by checks; turned into a SpicepodError with the file and entry prefixed."""


def string(value: Any, key: str) -> str:
    if not isinstance(value, str) or not value:
        raise Invalid(f"'{key}' must be a non-empty string, got {value!r}")
    return value


def identifier(value: Any, key: str) -> str:
    value = string(value, key)
    if not IDENTIFIER.match(value):
        raise Invalid(f"'{key}' must be an SQL identifier ([A-Za-z_][A-Za-z0-9_]*), got {value!r}")
    return value


def secret(value: Any, key: str) -> str:
    """A non-empty string whose value never appears in a message (it may be a key)."""
    if not isinstance(value, str) or not value:
        shown = "''" if value == "" else f"a {type(value).__name__} (quote the key in YAML)"
        raise Invalid(f"'{key}' must be a non-empty string, got {shown}")
    return value


def one_of(*choices: str) -> Check:
    def check(value: Any, key: str) -> str:
        if value not in choices:
            raise Invalid(f"'{key}' must be one of {', '.join(choices)}, got {value!r}")
        return value

    return check


def positive_int(value: Any, key: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise Invalid(f"'{key}' must be a positive integer, got {value!r}")
    return value


def int_range(low: int, high: int) -> Check:
    def check(value: Any, key: str) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise Invalid(f"'{key}' must be an integer from {low} to {high}, got {value!r}")
        return value

    return check


def open_range(low: float, high: float) -> Check:
    """A number strictly between `low` and `high` (a percentage level: 0 and 100 mean nothing)."""
    def check(value: Any, key: str) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not low < value < high:
            raise Invalid(f"'{key}' must be a number between {low:g} and {high:g} (exclusive), got {value!r}")
        return float(value)

    return check


def non_negative_int(value: Any, key: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise Invalid(f"'{key}' must be an integer >= 0, got {value!r}")
    return value


def boolean(value: Any, key: str) -> bool:
    if not isinstance(value, bool):
        raise Invalid(f"'{key}' must be true or false, got {value!r}")
    return value


def positive_number(value: Any, key: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
        raise Invalid(f"'{key}' must be a positive number, got {value!r}")
    return float(value)


def time_format(value: Any, key: str) -> str:
    """A named format, or a strptime pattern (anything with a %)."""
    if value in TIME_FORMATS:
        return value
    if isinstance(value, str) and "%" in value:
        return value
    raise Invalid(
        f"'{key}' must be one of {', '.join(TIME_FORMATS)} or a strptime pattern with a % "
        f"(e.g. '%Y', '%d/%m/%Y %H:%M'), got {value!r}"
    )


def host_port(value: Any, key: str) -> str:
    value = string(value, key)
    try:
        parse_host_port(value)
    except ValueError:
        raise Invalid(f"'{key}' must be HOST:PORT with a port from 0 to 65535, got {value!r}") from None
    return value


def scheduler(value: Any, key: str) -> str:
    value = string(value, key)
    try:
        if not value.startswith("tcp://"):
            raise ValueError(value)
        parse_host_port(value[len("tcp://"):])
    except ValueError:
        raise Invalid(f"'{key}' must be tcp://HOST:PORT, got {value!r}") from None
    return value


def frequency(value: Any, key: str) -> str:
    value = string(value, key)
    match = FREQUENCY.match(value)
    if not match or (match[1] and int(match[1]) == 0):
        raise Invalid(
            f"'{key}' must be a step like 15min, 1h, 1d, 1w, 1mo, 1q or 1y "
            f"(units {', '.join(FREQUENCY_UNITS)}), got {value!r}"
        )
    return value


def size(value: Any, key: str) -> str:
    value = string(value, key)
    if not SIZE.match(value):
        raise Invalid(f"'{key}' must be a size like 512MB or 4GB, got {value!r}")
    return value


def string_list(value: Any, key: str) -> tuple[str, ...]:
    """A list of names; a single name is a list of one."""
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not value or not all(isinstance(v, str) and v for v in value):
        raise Invalid(f"'{key}' must be a non-empty list of names, got {value!r}")
    return tuple(value)


def scalar_mapping(value: Any, key: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise Invalid(f"'{key}' must be a mapping, got {value!r}")
    for name, item in value.items():
        if not isinstance(name, str) or not (item is None or isinstance(item, (str, int, float, bool))):
            raise Invalid(f"'{key}.{name}' must be a string, number or boolean, got {item!r}")
    return dict(value)


def anything(value: Any, key: str) -> Any:
    """No check here: the loader reads the value on its own (runtime, datasets, models)."""
    return value


def bounds(value: Any, key: str) -> str | tuple[float | None, float | None]:
    """auto, none, or [low, high] with either side null (and low below high)."""
    if value in ("auto", "none"):
        return value
    numbers = (int, float)
    if (isinstance(value, list) and len(value) == 2
            and all(v is None or (isinstance(v, numbers) and not isinstance(v, bool)) for v in value)):
        low, high = value
        if low is None or high is None or low < high:
            return (None if low is None else float(low), None if high is None else float(high))
    raise Invalid(f"'{key}' must be auto, none or [low, high] (either may be null, low below high), got {value!r}")


CALENDAR_FIELDS = ("minute", "hour", "day_of_week", "day_of_month", "day_of_year", "week_of_year", "month", "quarter")
COVARIATE_TYPES = ("numeric", "categorical")
COVARIATE_KNOWN = ("future", "past")


def identifier_list(value: Any, key: str) -> tuple[str, ...]:
    """A list of distinct column names; a single name is a list of one."""
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list):
        raise Invalid(f"'{key}' must be a list of column names, got {value!r}")
    names = tuple(identifier(v, f"{key}[{i}]") for i, v in enumerate(value))
    if len(set(names)) < len(names):
        raise Invalid(f"'{key}' names a column twice: {', '.join(names)}")
    return names


def covariates(value: Any, key: str) -> tuple[dict[str, str], ...]:
    """Covariates: a column name, or {column, type: numeric|categorical, known: future|past}."""
    if not isinstance(value, list):
        raise Invalid(f"'{key}' must be a list of columns ({{column, type, known}} or a name), got {value!r}")
    out = []
    for i, item in enumerate(value):
        where = f"{key}[{i}]"
        if isinstance(item, str):
            item = {"column": item}
        if not isinstance(item, dict) or "column" not in item:
            raise Invalid(f"'{where}' must be a column name or a mapping with 'column', got {item!r}")
        unknown = sorted(set(item) - {"column", "type", "known"})
        if unknown:
            raise Invalid(f"'{where}' has unknown key '{unknown[0]}' (expected column, type, known)")
        entry = {"column": identifier(item["column"], f"{where}.column"),
                 "type": one_of(*COVARIATE_TYPES)(item.get("type", "numeric"), f"{where}.type"),
                 "known": one_of(*COVARIATE_KNOWN)(item.get("known", "future"), f"{where}.known")}
        if any(e["column"] == entry["column"] for e in out):
            raise Invalid(f"'{key}' names column '{entry['column']}' twice")
        out.append(entry)
    return tuple(out)


def calendar_fields(value: Any, key: str) -> tuple[str, ...]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise Invalid(f"'{key}' must be a list of calendar fields ({', '.join(CALENDAR_FIELDS)}), got {value!r}")
    for v in value:
        if v not in CALENDAR_FIELDS:
            raise Invalid(f"'{key}' has unknown calendar field {v!r}; expected any of {', '.join(CALENDAR_FIELDS)}")
    return tuple(dict.fromkeys(value))


def holidays(value: Any, key: str) -> dict[str, str | None]:
    """{country: CC, subdivision: SUB} (or the country code alone); the country and subdivision must be known
    to the `holidays` package."""
    if isinstance(value, str):
        value = {"country": value}
    if not isinstance(value, dict) or not isinstance(value.get("country"), str):
        raise Invalid(f"'{key}' must be {{country: CODE, subdivision: CODE}} or a country code, got {value!r}")
    unknown = sorted(set(value) - {"country", "subdivision"})
    if unknown:
        raise Invalid(f"'{key}' has unknown key '{unknown[0]}' (expected country, subdivision)")
    country, subdivision = value["country"], value.get("subdivision")
    if subdivision is not None and not isinstance(subdivision, str):
        raise Invalid(f"'{key}.subdivision' must be a string, got {subdivision!r}")
    import holidays as package  # a runtime dependency; only a spicepod that asks for holidays loads it

    if country not in package.list_supported_countries():
        raise Invalid(f"'{key}.country': unknown country {country!r} (the `holidays` package's ISO 3166 codes, "
                      "e.g. US, GB, DE, AU)")
    known = package.list_supported_countries()[country]
    if subdivision is not None and subdivision not in known:
        shown = ", ".join(known[:12]) + (", ..." if len(known) > 12 else "")
        raise Invalid(f"'{key}.subdivision': country {country} has no subdivision {subdivision!r} "
                      f"(it has: {shown or 'none'})")
    return {"country": country, "subdivision": subdivision}
