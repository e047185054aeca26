"""The error vocabulary shared by every layer, and the one table that maps it to the transports.

Errors are raised where the problem is found and turned into a response in one place. Each class
carries its HTTP status, the `status` name of the JSON envelope, and the Flight status code it travels
as (`flight_code`); `http_api` and `flight_server` read these attributes and nothing else, and a Flight
client turns a status code back into the class with `error_for_flight_code`.
"""

from __future__ import annotations


class FlightcastError(Exception):
    """Base of all expected errors; an unexpected failure of a known kind (HTTP 500, Flight INTERNAL)."""

    http_status = 500
    status_name = "InternalError"
    flight_code = "internal"

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
    status_name = "BadRequest"
    flight_code = "invalid_argument"


class NotFound(FlightcastError):
    """A named dataset or model does not exist (HTTP 404, Flight NOT_FOUND)."""

    http_status = 404
    status_name = "NotFound"
    flight_code = "not_found"


class NotReady(FlightcastError):
    """The thing exists but cannot serve yet: training, failed to train, too little data (HTTP 400, UNAVAILABLE)."""

    http_status = 400
    status_name = "BadRequest"
    flight_code = "unavailable"


class Unauthenticated(FlightcastError):
    """Missing or wrong API key (HTTP 401, Flight UNAUTHENTICATED)."""

    http_status = 401
    status_name = "Unauthorized"
    flight_code = "unauthenticated"


class LimitExceeded(InvalidInput):
    """A request exceeded a configured size or time limit (HTTP 400, Flight INVALID_ARGUMENT)."""


class Unavailable(FlightcastError):
    """A service this one depends on (the data node, a training cluster) cannot be reached (HTTP 503)."""

    http_status = 503
    status_name = "Unavailable"
    flight_code = "unavailable"


class Unimplemented(FlightcastError):
    """A protocol command or action this server does not serve (HTTP 501, Flight UNIMPLEMENTED)."""

    http_status = 501
    status_name = "NotImplemented"
    flight_code = "unimplemented"


class SpicepodError(FlightcastError):
    """The spicepod is invalid; the message names the file, the entry and the key (exit code 2)."""

    http_status = 400
    status_name = "BadRequest"
    flight_code = "invalid_argument"


# The class a Flight status code turns back into on the client side.
_BY_FLIGHT_CODE: dict[str, type[FlightcastError]] = {
    "invalid_argument": InvalidInput,
    "not_found": NotFound,
    "unauthenticated": Unauthenticated,
    "unimplemented": Unimplemented,
    "unavailable": Unavailable,
    "internal": FlightcastError,
}


def error_for_flight_code(code: str) -> type[FlightcastError]:
    """The error class a Flight status code stands for (unknown codes are internal errors)."""
    return _BY_FLIGHT_CODE.get(code, FlightcastError)
