"""The one way an instant is written for people and JSON (ISO 8601 in UTC with a `Z`), and read back."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

import numpy as np


def iso_utc(value: Any) -> str | None:
    """ISO 8601 UTC with `Z`, whole seconds unless the instant has a fraction; None stays None.

    Takes a datetime (naive ones are UTC), a numpy datetime64 or anything numpy reads as one.
    """
    if value is None:
        return None
    if isinstance(value, datetime):
        if value.tzinfo is not None:
            value = value.astimezone(timezone.utc).replace(tzinfo=None)
        text = value.isoformat(timespec="microseconds")
    else:
        stamp = np.datetime64(value, "us")
        if np.isnat(stamp):
            return None
        text = str(stamp)
    if text.endswith(".000000"):
        text = text[: -len(".000000")]
    return text + "Z"


def parse_iso(text: str | None) -> np.datetime64 | None:
    """The inverse of iso_utc: ISO 8601 text as a UTC datetime64[us]; None stays None.

    Reads a `Z` or a UTC offset (converted to UTC); text without one is taken as UTC. ValueError otherwise.
    """
    if text is None:
        return None
    stamp = datetime.fromisoformat(text)
    if stamp.tzinfo is not None:
        stamp = stamp.astimezone(timezone.utc).replace(tzinfo=None)
    return np.datetime64(stamp, "us")
