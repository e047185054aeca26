"""RuntimeProcess: `python -m flightcast run` as a subprocess on free ports, its stderr in a log file."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path

from harness.client import START_TIMEOUT_S, STOP_TIMEOUT_S, RuntimeEndpoints, RuntimeFailure

HTTP_LINE = re.compile(r"flightcast: http listening on (?P<host>[^\s:]+|\[[^\]]+\]):(?P<port>\d+)")
FLIGHT_LINE = re.compile(r"flightcast: flight listening on grpc://(?P<host>[^\s:]+|\[[^\]]+\]):(?P<port>\d+)")

# Runtimes started and not yet stopped; a test that fails gets their logs in its report (tests/conftest.py).
LIVE: list[RuntimeProcess] = []


class RuntimeProcess(RuntimeEndpoints):
    """A `flightcast run` subprocess on free ports; `stop()` (SIGTERM) or `kill()` (SIGKILL) ends it."""

    start_timeout = START_TIMEOUT_S

    def __init__(
        self, spicepod: Path, data_dir: Path, *, api_key: str | None = None,
        env: Mapping[str, str] | None = None, extra_args: list[str] | None = None,
        log_path: Path | None = None,
    ):
        super().__init__()
        self.spicepod = Path(spicepod)
        self.data_dir = Path(data_dir)
        self.api_key = api_key
        self.env_extra = dict(env or {})
        self.extra_args = list(extra_args or [])
        stem = f"flightcast-{int(time.time() * 1000) % 10**8}-{os.getpid()}-{id(self) % 10**6}"
        self.log_path = Path(log_path) if log_path else self.spicepod.parent / f"{stem}.log"
        self.stdout_path = self.log_path.with_suffix(".stdout")
        self.proc: subprocess.Popen | None = None
        self.http_port: int | None = None
        self.flight_port: int | None = None
        self.returncode: int | None = None

    @property
    def command(self) -> list[str]:
        cmd = [
            sys.executable, "-m", "flightcast", "run", "--spicepod", str(self.spicepod),
            "--http", "127.0.0.1:0", "--flight", "127.0.0.1:0", "--data-dir", str(self.data_dir),
        ]
        if self.api_key is not None:
            cmd += ["--api-key", self.api_key]
        return cmd + self.extra_args

    def start(self, timeout: float | None = None) -> RuntimeProcess:
        """Start and wait until its ports are logged (not until models are trained: see wait_ready)."""
        timeout = self.start_timeout if timeout is None else timeout
        env = {name: value for name, value in os.environ.items() if not name.startswith("FLIGHTCAST_")}
        env["PYTHONUNBUFFERED"] = "1"
        env.update(self.env_extra)
        with open(self.log_path, "ab") as err, open(self.stdout_path, "ab") as out:
            self.proc = subprocess.Popen(
                self.command, stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                cwd=self.spicepod.parent, env=env,
            )
        LIVE.append(self)
        deadline = time.monotonic() + timeout
        role = self.extra_args[self.extra_args.index("--role") + 1] if "--role" in self.extra_args else "all"
        while True:
            text = self.log_text()
            http_match, flight_match = HTTP_LINE.search(text), FLIGHT_LINE.search(text)
            # A data node serves Flight only, a serve node HTTP only.
            if (http_match or role == "data") and (flight_match or role == "serve"):
                self.http_port = int(http_match["port"]) if http_match else None
                self.flight_port = int(flight_match["port"]) if flight_match else None
                return self
            code = self.proc.poll()
            if code is not None:
                self.returncode = code
                self._forget()
                raise RuntimeFailure(f"flightcast exited with code {code} before listening; log:\n{text}")
            if time.monotonic() > deadline:
                self.kill()
                raise RuntimeFailure(f"flightcast did not log its ports within {timeout:.0f} s; log:\n{text}")
            time.sleep(0.05)

    def wait_ready(self, timeout: float | None = None) -> RuntimeProcess:
        return super().wait_ready(self.start_timeout if timeout is None else timeout)

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout: float = STOP_TIMEOUT_S, expect_code: int | None = 0) -> int:
        """SIGTERM, wait for the exit, and check the exit code (0 by default)."""
        assert self.proc is not None, "runtime not started"
        self._close_clients()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                self._forget()
                raise RuntimeFailure(f"flightcast did not exit within {timeout:.0f} s of SIGTERM; log:\n"
                                     f"{self.log_text()}") from None
        self.returncode = self.proc.returncode
        self._forget()
        if expect_code is not None and self.returncode != expect_code:
            raise RuntimeFailure(f"flightcast exited with {self.returncode}, expected {expect_code}; log:\n"
                                 f"{self.log_text()}")
        return self.returncode

    def kill(self) -> None:
        """SIGKILL (kill -9) and reap."""
        self._close_clients()
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.kill()
            self.proc.wait()
            self.returncode = self.proc.returncode
        self._forget()

    def cleanup(self) -> None:
        """Teardown that never raises: SIGTERM, then SIGKILL if it does not go."""
        self._close_clients()
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc is not None:
            self.returncode = self.proc.returncode
        self._forget()

    def __enter__(self) -> RuntimeProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.cleanup()

    def _forget(self) -> None:
        if self in LIVE:
            LIVE.remove(self)

    def log_text(self) -> str:
        """The runtime's stderr so far (its log)."""
        try:
            return self.log_path.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return ""

    def stdout_text(self) -> str:
        try:
            return self.stdout_path.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return ""
