"""Real flightcast runtimes for the tests and the benchmarks, and the clients that talk to them.

This package is the one launcher both `tests/` and `bench/` use. It lives at the top of the repository,
outside the installed packages (pyproject lists only the product's), so that the product can never
import it, while tests (pytest's `pythonpath`) and benchmarks (`python -m bench` from the repository
root) both can; and it does not import pytest, so `make bench` needs no test extras.

- `RuntimeProcess`: `python -m flightcast run` as a subprocess on free ports, its log in a file; for
  crash, durability, signal and CLI tests, and for benchmarks (a separate process, like production).
- `InProcessRuntime`: the same composition root (`flightcast.runtime.Runtime`) in this process, its
  IOLoop in a background thread; starts in milliseconds, for tests of the HTTP and Flight surfaces.
- `harness.flight.flight_server`: the Flight data plane alone (store and Flight server) in this process,
  as a context manager (pyarrow's own test idiom), for data-plane tests.
- `harness.browser`: headless Chromium for the page's tests and benchmark, or the install hint.
"""

from harness.client import HeaderMiddlewareFactory, HttpResponse, RuntimeFailure, http_request, write_spicepod
from harness.inprocess import InProcessRuntime
from harness.process import LIVE, RuntimeProcess

__all__ = [
    "LIVE",
    "HeaderMiddlewareFactory",
    "HttpResponse",
    "InProcessRuntime",
    "RuntimeFailure",
    "RuntimeProcess",
    "http_request",
    "write_spicepod",
]
