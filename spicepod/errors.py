"""The error vocabulary shared by every layer.

Errors are raised where the problem is found and turned into a response in one place: the HTTP base
handler maps `kind` to a status and envelope, the Flight service maps it to a Flight error class.
"""

from __future__ import annotations


class FlightcastError(Exception):
    """Base of all expected errors; `kind` names the family for the transports."""

    kind = "InternalError"

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class InvalidInput(FlightcastError):
    """The caller sent something malformed or not allowed (HTTP 400, Flight INVALID_ARGUMENT)."""

    kind = "InvalidInput"


class NotFound(FlightcastError):
    """A named dataset or model does not exist (Flight NOT_FOUND)."""

    kind = "NotFound"


class NotReady(FlightcastError):
    """The thing exists but cannot serve yet: model training, training failed, too little data."""

    kind = "NotReady"


class Unauthenticated(FlightcastError):
    """Missing or wrong API key (HTTP 401, Flight UNAUTHENTICATED)."""

    kind = "Unauthenticated"


class LimitExceeded(InvalidInput):
    """A request exceeded a configured size or time limit."""


class SpicepodError(FlightcastError):
    """The spicepod is invalid; the message names the file, the entry and the key."""

    kind = "SpicepodError"
