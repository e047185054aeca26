"""HTTP and Flight clients of a running runtime, shared by both launchers."""

from __future__ import annotations

import json
import textwrap
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pyarrow.flight as flight

START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 30.0
HTTP_TIMEOUT_S = 30.0


class RuntimeFailure(AssertionError):
    """A runtime did not start, died, or did not stop; the message carries its log."""


@dataclass
class HttpResponse:
    status: int
    headers: Mapping[str, str]
    body: bytes

    @property
    def text(self) -> str:
        return self.body.decode("utf-8")

    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def content_type(self) -> str:
        return self.headers.get("Content-Type", "")


def http_request(
    url: str, method: str = "GET", body: bytes | str | Mapping | list | None = None,
    headers: Mapping[str, str] | None = None, timeout: float = HTTP_TIMEOUT_S,
) -> HttpResponse:
    """One HTTP request with urllib; non-2xx answers are returned, not raised."""
    data: bytes | None
    hdrs = dict(headers or {})
    if isinstance(body, (dict, list)):
        data = json.dumps(body).encode()
        hdrs.setdefault("Content-Type", "application/json")
    elif isinstance(body, str):
        data = body.encode()
    else:
        data = body
    request = urllib.request.Request(url, data=data, method=method, headers=hdrs)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return HttpResponse(response.status, dict(response.headers.items()), response.read())
    except urllib.error.HTTPError as err:
        with err:
            return HttpResponse(err.code, dict(err.headers.items()), err.read())


class _HeaderMiddleware(flight.ClientMiddleware):
    def __init__(self, headers: Mapping[str, str]):
        self._headers = headers

    def sending_headers(self) -> dict[str, str]:
        return dict(self._headers)


class HeaderMiddlewareFactory(flight.ClientMiddlewareFactory):
    """Adds fixed headers (e.g. `authorization: Bearer KEY`) to every call of a client."""

    def __init__(self, headers: Mapping[str, str]):
        self._headers = dict(headers)

    def start_call(self, info: flight.CallInfo) -> _HeaderMiddleware:
        return _HeaderMiddleware(self._headers)


def write_spicepod(folder: Path, text: str, name: str = "spicepod.yaml") -> Path:
    """Write (dedented) spicepod text into `folder` and return its path."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
    return path


R = TypeVar("R", bound="RuntimeEndpoints")


class RuntimeEndpoints:
    """What a started runtime offers its callers, whichever way it runs: URLs, clients, readiness."""

    api_key: str | None
    http_port: int | None
    flight_port: int | None

    def __init__(self) -> None:
        self._clients: list[flight.FlightClient] = []

    @property
    def running(self) -> bool:
        raise NotImplementedError

    def log_text(self) -> str:
        raise NotImplementedError

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def flight_location(self) -> str:
        return f"grpc://127.0.0.1:{self.flight_port}"

    def flight_client(self, api_key: str | None = None, headers: Mapping[str, str] | None = None,
                      ) -> flight.FlightClient:
        """A Flight client, closed with the runtime; with `api_key` every call carries `authorization: Bearer KEY`."""
        hdrs = dict(headers or {})
        if api_key is not None:
            hdrs["authorization"] = f"Bearer {api_key}"
        middleware = [HeaderMiddlewareFactory(hdrs)] if hdrs else None
        # no wait_for_available(): it probes with ListFlights, which an API key refuses; the server
        # was listening before its port was known
        client = flight.FlightClient(self.flight_location, middleware=middleware)
        self._clients.append(client)
        return client

    def _close_clients(self) -> None:
        for client in self._clients:
            try:
                client.close()
            except Exception:  # closing a client of a dead server may fail; irrelevant
                pass
        self._clients.clear()

    def _api_headers(self, headers: Mapping[str, str] | None, auth: bool) -> dict[str, str]:
        hdrs = dict(headers or {})
        if auth and self.api_key is not None:
            hdrs.setdefault("X-API-Key", self.api_key)
        return hdrs

    def get(self, path: str, headers: Mapping[str, str] | None = None, auth: bool = True,
            timeout: float = HTTP_TIMEOUT_S) -> HttpResponse:
        """GET on the HTTP API; sends the runtime's API key unless auth=False or overridden."""
        return http_request(self.http_url + path, "GET", None, self._api_headers(headers, auth), timeout)

    def post(self, path: str, body: bytes | str | Mapping | list | None = None,
             headers: Mapping[str, str] | None = None, auth: bool = True,
             timeout: float = HTTP_TIMEOUT_S) -> HttpResponse:
        return http_request(self.http_url + path, "POST", body if body is not None else b"",
                            self._api_headers(headers, auth), timeout)

    def get_json(self, path: str, expect_status: int = 200, **kwargs: Any) -> Any:
        response = self.get(path, **kwargs)
        assert response.status == expect_status, (path, response.status, response.body[:2000])
        return response.json()

    def wait_ready(self: R, timeout: float = START_TIMEOUT_S) -> R:
        """Poll GET /v1/ready until 200; fail with the log if the runtime dies or it takes too long."""
        deadline = time.monotonic() + timeout
        last: Any = None
        while time.monotonic() < deadline:
            if not self.running:
                raise RuntimeFailure(f"flightcast stopped while waiting for ready; log:\n{self.log_text()}")
            try:
                last = self.get("/v1/ready", timeout=5)
                if last.status == 200:
                    return self
            except OSError as exc:
                last = exc
            time.sleep(0.05)
        raise RuntimeFailure(f"/v1/ready not 200 within {timeout:.0f} s (last: {last!r}); log:\n{self.log_text()}")
