"""The spicepod schema and loader, and the error vocabulary shared by all layers."""

from spicepod.checks import IDENTIFIER, TIME_FORMATS
from spicepod.errors import (
    FlightcastError,
    InvalidInput,
    LimitExceeded,
    NotFound,
    NotReady,
    SpicepodError,
    Unauthenticated,
    Unavailable,
    Unimplemented,
    error_for_flight_code,
)
from spicepod.schema import describe_keys, load_spicepod, parse_spicepod, quote_ident
from spicepod.specs import (
    AGGREGATES,
    FILLS,
    STRATEGIES,
    DatasetSpec,
    Limits,
    ModelSpec,
    RuntimeSpec,
    Spicepod,
    TrainingSpec,
)

__all__ = [
    "AGGREGATES",
    "FILLS",
    "IDENTIFIER",
    "STRATEGIES",
    "TIME_FORMATS",
    "TrainingSpec",
    "Unavailable",
    "Unimplemented",
    "describe_keys",
    "error_for_flight_code",
    "DatasetSpec",
    "FlightcastError",
    "InvalidInput",
    "LimitExceeded",
    "Limits",
    "ModelSpec",
    "NotFound",
    "NotReady",
    "RuntimeSpec",
    "Spicepod",
    "SpicepodError",
    "Unauthenticated",
    "load_spicepod",
    "parse_spicepod",
    "quote_ident",
]
