"""The error vocabulary shared by every layer, and the one table that maps it to Arrow Flight.

Errors are raised where the problem is found and turned into a response in one place. Each class carries
its HTTP status (http_api names it from its one status table); `FLIGHT_ERRORS` says how each class travels
over Flight: the gRPC status, the pyarrow exception the server raises for it, which the client receives
and turns back into the same class with `error_from_flight`.
"""

from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa
import pyarrow.flight as flight


class FlightcastError(Exception):
    """Base of all expected errors; an unexpected failure of a known kind (HTTP 500, Flight INTERNAL)."""

    http_status = 500

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message

    @property
    def internal(self) -> bool:
        """Whether this is a server-side failure rather than a problem with the request."""
        return self.http_status >= 500


class InvalidInput(FlightcastError):
    """The caller sent something malformed or not allowed (HTTP 400, Flight INVALID_ARGUMENT)."""

    http_status = 400


class NotFound(FlightcastError):
    """A named dataset or model does not exist (HTTP 404, Flight NOT_FOUND)."""

    http_status = 404


class NotReady(FlightcastError):
    """The thing exists but cannot serve yet: training, failed to train, too little data (HTTP 400, UNAVAILABLE)."""

    http_status = 400


class Unauthenticated(FlightcastError):
    """Missing or wrong API key (HTTP 401, Flight UNAUTHENTICATED)."""

    http_status = 401


class LimitExceeded(InvalidInput):
    """A request exceeded a configured size or time limit (HTTP 400, Flight INVALID_ARGUMENT)."""


class Unavailable(FlightcastError):
    """A service this one depends on (the data node, a training cluster) cannot be reached (HTTP 503)."""

    http_status = 503


class Unimplemented(FlightcastError):
    """A protocol command or action this server does not serve (HTTP 501, Flight UNIMPLEMENTED)."""

    http_status = 501


class SpicepodError(FlightcastError):
    """The spicepod is invalid; the message names the file, the entry and the key (exit code 2)."""

    http_status = 400


@dataclass(frozen=True)
class FlightKind:
    """How one error class travels over Flight."""

    error: type[FlightcastError]
    code: str  # the gRPC status other Flight clients (ADBC, Java, Go) see
    exception: type[Exception]  # what the server raises; a pyarrow client receives the same class
    tagged: bool = False  # shares its exception with another class: its message starts with "<class name>: "


# Every class of the vocabulary, once. A gRPC status has one plain class; the others that travel as it are
# told apart by the class name that starts their message ("NotReady: model 'm' is not trained yet").
FLIGHT_ERRORS: tuple[FlightKind, ...] = (
    FlightKind(FlightcastError, "INTERNAL", flight.FlightInternalError),
    FlightKind(InvalidInput, "INVALID_ARGUMENT", pa.ArrowInvalid),
    FlightKind(LimitExceeded, "INVALID_ARGUMENT", pa.ArrowInvalid, tagged=True),
    FlightKind(SpicepodError, "INVALID_ARGUMENT", pa.ArrowInvalid, tagged=True),
    FlightKind(NotFound, "NOT_FOUND", pa.ArrowKeyError),
    FlightKind(Unauthenticated, "UNAUTHENTICATED", flight.FlightUnauthenticatedError),
    FlightKind(Unavailable, "UNAVAILABLE", flight.FlightUnavailableError),
    FlightKind(NotReady, "UNAVAILABLE", flight.FlightUnavailableError, tagged=True),
    FlightKind(Unimplemented, "UNIMPLEMENTED", pa.ArrowNotImplementedError),
)
_BY_CLASS = {row.error: row for row in FLIGHT_ERRORS}


def flight_kind(exc: FlightcastError) -> FlightKind:
    """The row of the nearest class of `exc` in the table (a subclass travels as its parent)."""
    for cls in type(exc).__mro__:
        if cls in _BY_CLASS:
            return _BY_CLASS[cls]
    raise TypeError(f"{type(exc).__name__} is not a FlightcastError")


def flight_exception(exc: FlightcastError, message: str | None = None) -> Exception:
    """The pyarrow exception a Flight server raises for `exc` (`message` replaces its text, e.g. bounded)."""
    row = flight_kind(exc)
    text = exc.message if message is None else message
    return row.exception(f"{row.error.__name__}: {text}" if row.tagged else text)


def error_from_flight(exc: Exception, message: str) -> FlightcastError:
    """The error a pyarrow Flight exception stands for, given its message without pyarrow's detail.

    A message tagged with the name of a class of the same exception is that class, the tag removed; an
    exception the table does not name is an internal error.
    """
    rows = [row for row in FLIGHT_ERRORS if isinstance(exc, row.exception)]
    for row in rows:
        tag = f"{row.error.__name__}: "
        if row.tagged and message.startswith(tag):
            return row.error(message[len(tag):])
    plain = next((row.error for row in rows if not row.tagged), FlightcastError)
    return plain(message)
