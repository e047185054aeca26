"""The spicepod schema and loader, and the error vocabulary shared by all layers."""

from spicepod.errors import (
    FlightcastError,
    InvalidInput,
    LimitExceeded,
    NotFound,
    NotReady,
    SpicepodError,
    Unauthenticated,
)
from spicepod.schema import (
    IDENTIFIER,
    DatasetSpec,
    Limits,
    ModelSpec,
    RuntimeSpec,
    Spicepod,
    load_spicepod,
    parse_spicepod,
    quote_ident,
)

__all__ = [
    "IDENTIFIER",
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
