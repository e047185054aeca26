"""Request parameters, checked once at the edge and trusted after: horizon, levels, series, limit, explain,
covariates, and query-string values (each route declares which it takes and how often)."""

from __future__ import annotations

import math
import re
from typing import Any

import tornado.web

from http_api.base import BaseHandler
from pipelines.forecasts import Level
from spicepod import InvalidInput
from spicepod.constants import MAX_SERIES_ID_BYTES

MAX_LEVELS = 5


def parse_horizon(raw: Any, cap: int, text: bool = True) -> int | None:
    """A positive integer up to `cap`: ASCII digits in a query string (`text`), a JSON integer in a body."""
    if raw is None:
        return None
    if isinstance(raw, str) and text:
        # int() alone would also take '1_0', ' 2', '+2' and non-ASCII digits like '२'.
        if not re.fullmatch(r"-?[0-9]{1,18}", raw):
            raise InvalidInput(f"horizon must be a positive integer, got {raw[:40]!r}")
        raw = int(raw)
    if isinstance(raw, bool) or not isinstance(raw, int) or not 1 <= raw <= cap:
        raise InvalidInput(f"horizon must be an integer from 1 to {cap}, got {raw!r}")
    return raw


def parse_levels(raw: list[Any]) -> list[Level]:
    """Interval levels: each a number in (0, 100), at most MAX_LEVELS; labelled as written ("80", "97.5")."""
    if len(raw) > MAX_LEVELS:
        raise InvalidInput(f"level: at most {MAX_LEVELS} levels, got {len(raw)}")
    levels: dict[str, float] = {}
    for item in raw:
        value: Any = item
        if isinstance(item, str):
            try:
                value = float(item) if re.fullmatch(r"[0-9]{1,3}(\.[0-9]{1,6})?", item) else None
            except ValueError:
                value = None
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < 100 or math.isnan(value):
            shown = item[:40] if isinstance(item, str) else item
            raise InvalidInput(f"level must be a number between 0 and 100 (exclusive), got {shown!r}")
        levels[f"{float(value):g}"] = float(value)
    return list(levels.items())


def parse_series(raw: Any) -> str | None:
    if raw is None:
        return None
    if isinstance(raw, int) and not isinstance(raw, bool):
        raw = str(raw)
    if not isinstance(raw, str) or not raw:
        raise InvalidInput("series must be a non-empty series id")
    if len(raw.encode("utf-8")) > MAX_SERIES_ID_BYTES:
        raise InvalidInput(f"series id is longer than {MAX_SERIES_ID_BYTES} bytes")
    return raw


def parse_limit(raw: str | None, maximum: int, default: int | None) -> int | None:
    """`limit`: ASCII digits from 1 to `maximum`; `default` when absent."""
    if raw is None:
        return default
    if not re.fullmatch(r"[0-9]{1,7}", raw) or not 1 <= int(raw) <= maximum:
        raise InvalidInput(f"limit must be an integer from 1 to {maximum}, got {raw[:40]!r}")
    return int(raw)


def parse_explain(raw: Any, text: bool = True) -> bool:
    """`explain`: true or false (a query string's text, a JSON boolean in a body)."""
    if raw is None:
        return False
    if text and raw in ("true", "false", "1", "0"):
        return raw in ("true", "1")
    if not text and isinstance(raw, bool):
        return raw
    raise InvalidInput(f"explain must be true or false, got {str(raw)[:40]!r}")


def parse_covariates(raw: Any) -> dict[str, list[Any]] | None:
    """A POST item's `covariates`: {"timestamps": [...], "<covariate>": [...]} (checked against the model later)."""
    if raw is None:
        return None
    if not isinstance(raw, dict) or not all(isinstance(v, list) for v in raw.values()):
        raise InvalidInput('covariates must be an object of lists: {"timestamps": [...], "<covariate>": [...]}')
    return raw


def query_values(handler: BaseHandler, name: str) -> list[str]:
    if name not in handler.request.query_arguments:  # most requests give few parameters: nothing to decode
        return []
    try:
        return handler.get_query_arguments(name)
    except tornado.web.HTTPError:  # not UTF-8
        raise InvalidInput(f"{name} must be UTF-8 text") from None


def query_value(handler: BaseHandler, name: str) -> str | None:
    values = query_values(handler, name)  # declared ONE: the base handler refused it given twice
    return values[0] if values else None
