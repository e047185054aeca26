"""InProcessRuntime: flightcast's composition root in this process, its IOLoop in a background thread.

The same `flightcast.runtime.Runtime` the CLI runs (store, Flight server on a free port, pipelines, HTTP
on a free port), entered with `Runtime.running()` on an asyncio loop of its own thread and left when
`stop()` sets the loop's stop event: every part is stopped by the runtime's own stop steps. No signals,
no new interpreter: it starts in milliseconds. Log records of `flightcast.*` are kept for `log_text()`.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from harness.client import START_TIMEOUT_S, STOP_TIMEOUT_S, RuntimeEndpoints, RuntimeFailure

if TYPE_CHECKING:
    from flightcast.runtime import Runtime


class _Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.setFormatter(logging.Formatter("%(name)s: %(message)s"))
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


class InProcessRuntime(RuntimeEndpoints):
    """`start()` returns once both servers listen; `stop()` stops every part and re-raises a crash of the loop."""

    def __init__(self, spicepod: Path, data_dir: Path, *, api_key: str | None = None, grace_s: float = 5.0):
        super().__init__()
        self.spicepod = Path(spicepod)
        self.data_dir = Path(data_dir)
        self.api_key = api_key
        self.grace_s = grace_s
        self.http_port: int | None = None
        self.flight_port: int | None = None
        self._started = threading.Event()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop_event: asyncio.Event | None = None
        self._error: BaseException | None = None
        self._stopping = False
        self._log = _Lines()

    def start(self, timeout: float = START_TIMEOUT_S) -> InProcessRuntime:
        # Imported here: the product is loaded only by those who run it (the subprocess launcher never does).
        from flightcast.runtime import Runtime
        from spicepod import load_spicepod

        pod = load_spicepod(self.spicepod)
        runtime = replace(pod.runtime, http="127.0.0.1:0", flight="127.0.0.1:0", data_dir=self.data_dir.resolve())
        if self.api_key is not None:
            runtime = replace(runtime, api_key=self.api_key)
        self.api_key = runtime.api_key
        pod = replace(pod, runtime=runtime)

        logger = logging.getLogger("flightcast")
        self._previous_level = logger.level
        logger.setLevel(logging.INFO)
        logger.addHandler(self._log)
        self._thread = threading.Thread(target=self._run, args=(Runtime(pod, grace_s=self.grace_s),),
                                        name="flightcast-inprocess", daemon=True)
        self._thread.start()
        if not self._started.wait(timeout):
            self.stop()
            raise RuntimeFailure(f"flightcast did not start within {timeout:.0f} s; log:\n{self.log_text()}")
        if self._error is not None:  # it stopped on its way up (StartError, a bad spicepod): raise it once
            self._detach_log()
            error, self._error = self._error, None
            raise error
        return self

    def _run(self, runtime: Runtime) -> None:
        try:
            asyncio.run(self._serve(runtime))
        except BaseException as exc:  # handed to the thread that called start() or stop()
            self._error = exc
        finally:
            self._started.set()

    async def _serve(self, runtime: Runtime) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop_event = asyncio.Event()
        async with runtime.running():
            self.http_port, self.flight_port = runtime.http_port, runtime.flight_port
            self._started.set()
            await self._stop_event.wait()

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive() and not self._stopping

    def stop(self, timeout: float = STOP_TIMEOUT_S) -> None:
        """Stop every part (the runtime's own stop steps) and wait for it; raises what the loop raised."""
        self._close_clients()
        thread = self._thread
        if thread is None:
            return
        self._stopping = True
        loop, event = self._loop, self._stop_event
        if loop is not None and event is not None and thread.is_alive():
            try:
                loop.call_soon_threadsafe(event.set)
            except RuntimeError:  # the loop already closed
                pass
        thread.join(timeout)
        self._detach_log()
        if thread.is_alive():
            raise RuntimeFailure(f"flightcast did not stop within {timeout:.0f} s; log:\n{self.log_text()}")
        if self._error is not None:
            error, self._error = self._error, None
            raise error

    def cleanup(self) -> None:
        """Fixture teardown: the same as stop(); a runtime that does not stop cleanly fails the teardown."""
        self.stop()

    def __enter__(self) -> InProcessRuntime:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _detach_log(self) -> None:
        logger = logging.getLogger("flightcast")
        if self._log in logger.handlers:
            logger.removeHandler(self._log)
            logger.setLevel(self._previous_level)

    def log_text(self) -> str:
        return "\n".join(self._log.lines) + ("\n" if self._log.lines else "")
