"""API-key authentication for Flight: a bearer header, or a basic-auth handshake that returns a token.

Without a key every call passes and a handshake with any credentials succeeds: clients that always
authenticate (ADBC with a username and password, pyarrow's `authenticate_basic_token`) work unchanged
against an open runtime.

Tokens are stateless: `nonce.hmac(key, nonce)`, so any number of clients can hold one and a restart
with the same key keeps them valid. Keys and tokens are compared in constant time and never logged.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets

import pyarrow.flight as flight


class ApiKey:
    """One API key: checks bearer values and issues handshake tokens."""

    def __init__(self, key: str):
        self._key = key.encode()

    def __repr__(self) -> str:  # never show the key
        return "ApiKey(***)"

    def matches(self, candidate: str) -> bool:
        return hmac.compare_digest(candidate.encode(), self._key)

    def issue_token(self) -> str:
        nonce = secrets.token_hex(16)
        return f"{nonce}.{self._sign(nonce)}"

    def accepts_bearer(self, value: str) -> bool:
        """A bearer value is the key itself or a token this key issued."""
        nonce, dot, signature = value.partition(".")
        token_ok = bool(dot) and hmac.compare_digest(signature.encode(), self._sign(nonce).encode())
        return self.matches(value) | token_ok

    def _sign(self, nonce: str) -> str:
        return hmac.new(self._key, nonce.encode(), hashlib.sha256).hexdigest()


class _IssueToken(flight.ServerMiddleware):
    def __init__(self, token: str):
        self._token = token

    def sending_headers(self) -> dict[str, str]:
        return {"authorization": f"Bearer {self._token}"}


class ApiKeyMiddlewareFactory(flight.ServerMiddlewareFactory):
    """Rejects every call without the key; answers a basic-auth handshake with a bearer token."""

    def __init__(self, key: ApiKey):
        super().__init__()
        self._key = key

    def start_call(self, info: flight.CallInfo, headers: dict) -> flight.ServerMiddleware | None:
        values = headers.get("authorization") or []
        value = values[0] if values else ""
        scheme, _, credential = value.partition(" ")
        scheme = scheme.lower()
        if info.method == flight.FlightMethod.HANDSHAKE and scheme == "basic":
            try:
                padded = credential.strip() + "=" * (-len(credential.strip()) % 4)  # Go clients send no padding
                _, _, password = base64.b64decode(padded, validate=True).decode().partition(":")
            except (ValueError, UnicodeDecodeError):
                raise flight.FlightUnauthenticatedError("malformed basic credentials") from None
            if self._key.matches(password):
                return _IssueToken(self._key.issue_token())
            raise flight.FlightUnauthenticatedError("invalid API key")
        if scheme == "bearer" and self._key.accepts_bearer(credential.strip()):
            return None
        if not value:
            raise flight.FlightUnauthenticatedError(
                "missing credentials: send 'authorization: Bearer <key>' or handshake with basic auth"
            )
        raise flight.FlightUnauthenticatedError("invalid API key")


class OpenMiddlewareFactory(flight.ServerMiddlewareFactory):
    """No key: every call passes; a handshake gets a bearer token, which is never checked."""

    def start_call(self, info: flight.CallInfo, headers: dict) -> flight.ServerMiddleware | None:
        # The clients read the token from the handshake's response headers and fail without one.
        if info.method == flight.FlightMethod.HANDSHAKE:
            return _IssueToken(secrets.token_hex(16))
        return None


def access_middleware(api_key: str | None) -> flight.ServerMiddlewareFactory:
    """The middleware that decides who may call: the key's, or the open one when there is no key."""
    return ApiKeyMiddlewareFactory(ApiKey(api_key)) if api_key else OpenMiddlewareFactory()


class HandshakeAuthHandler(flight.ServerAuthHandler):
    """Lets the Handshake RPC through (without an auth handler pyarrow answers it UNIMPLEMENTED); the
    middleware above does the authentication."""

    def authenticate(self, outgoing: flight.ServerAuthSender, incoming: flight.ServerAuthReader) -> None:
        return None

    def is_valid(self, token: bytes) -> bytes:
        return b""
