"""Flight SQL on the wire: a `google.protobuf.Any` around one of the messages of Arrow's FlightSql.proto.

It comes in a descriptor command, a ticket or an action body. `unpack` tells it apart from plain Flight's
UTF-8 SQL or dataset name; the rest open, wrap and refuse messages.
"""

from __future__ import annotations

from typing import Any

from google.protobuf import any_pb2
from google.protobuf.message import DecodeError, Message

from spicepod import InvalidInput, Unimplemented

TYPE_PREFIX = "type.googleapis.com/"
PACKAGE = "arrow.flight.protocol.sql."


def unpack(raw: bytes) -> any_pb2.Any | None:
    """The Flight SQL message in `raw`, or None when `raw` is not one (plain Flight's UTF-8 SQL or name)."""
    # A serialized Any starts with field 1 (type_url, length-delimited): tag byte 0x0A. SQL text that
    # happens to start with a newline parses as an Any too, but never with a type URL.
    if not raw.startswith(b"\n"):
        return None
    message = any_pb2.Any()
    try:
        message.ParseFromString(raw)
    except DecodeError:
        return None
    if not message.type_url.startswith(TYPE_PREFIX) or len(message.type_url) <= len(TYPE_PREFIX):
        return None
    return message


def message_name(message: any_pb2.Any) -> str:
    """The message's name without the protocol's package (`CommandGetTables`); other packages in full."""
    full = message.type_url[len(TYPE_PREFIX):]
    return full[len(PACKAGE):] if full.startswith(PACKAGE) else full


def decode(message: any_pb2.Any, cls: type[Message]) -> Any:
    out = cls()
    if not message.Unpack(out):
        raise InvalidInput(f"malformed Flight SQL message {message_name(message)}")
    return out


def pack(message: Message) -> bytes:
    wrapped = any_pb2.Any()
    wrapped.Pack(message)
    return wrapped.SerializeToString()


def action_body(raw: bytes, cls: type[Message]) -> Any:
    """An action body: the request wrapped in an Any, as the protocol says (a bare message is accepted too)."""
    wrapped = unpack(raw)
    out = cls()
    try:
        if wrapped is not None and message_name(wrapped) == cls.DESCRIPTOR.name:
            wrapped.Unpack(out)
        else:
            out.ParseFromString(raw)
    except DecodeError:
        raise InvalidInput(f"malformed {cls.DESCRIPTOR.name}") from None
    return out


def optional(message: Message, name: str) -> str | None:
    """An optional string field: None when the client left it out."""
    return getattr(message, name) if message.HasField(name) else None


def unimplemented(what: str) -> Unimplemented:
    return Unimplemented(f"Flight SQL {what} is not implemented by flightcast")


def refuse_transaction(message: Message) -> None:
    if message.HasField("transaction_id"):
        raise unimplemented(f"transactions (transaction_id in {type(message).__name__})")
