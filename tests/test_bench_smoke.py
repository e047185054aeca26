"""Every benchmark module runs once on tiny inputs (BENCH_TINY=1), so none can break unnoticed.

Each must exit 0, print its header and at least one `ratio` line; its figures on tiny inputs mean
nothing and are not checked. New modules (bench/bench_*.py) are picked up by name. The modules run a few
at a time, the slowest first, from the first test that needs one on: while the other test worker runs the other
files on the same two cores (fifteen interpreters at once, each with its servers, starved everything else).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import pytest
from conftest import REPO, require_browser

from bench.__main__ import modules
from harness.browser import BrowserMissing, browser_paths

pytestmark = pytest.mark.slow

TINY_TIMEOUT_S = 300  # one module's run, from its start
PARALLEL = 3  # modules running at once
# The slowest tiny runs (about 5 to 15 s of CPU each) start first; the others follow in name order.
SLOWEST_FIRST = ("bench.bench_drivers", "bench.bench_scaleout", "bench.bench_methods", "bench.bench_http",
                 "bench.bench_panel", "bench.bench_serving", "bench.bench_roles", "bench.bench_predict")
# Modules that drive headless Chromium: without one they skip with the install hint (fail under CI=true).
NEEDS_BROWSER = {"bench.bench_page"}


def has_browser() -> bool:
    try:
        browser_paths()
    except BrowserMissing:
        return False
    return True


class TinyRun:
    """`python -m MODULE` with BENCH_TINY=1, its output in two files; `stop()` kills it, or keeps it from starting."""

    def __init__(self, module: str, folder: Path):
        self.module = module
        self.out, self.err = folder / f"{module}.stdout", folder / f"{module}.stderr"
        self.proc: subprocess.Popen | None = None
        self.stopped = False
        self._lock = threading.Lock()  # start and stop come from different threads

    def run(self) -> tuple[int, str, str]:
        """Start, wait for the exit; (exit code, stdout, stderr)."""
        env = {name: value for name, value in os.environ.items() if not name.startswith(("BENCH_", "FLIGHTCAST_"))}
        env["BENCH_TINY"] = "1"
        with self._lock:
            if self.stopped:
                raise RuntimeError(f"{self.module}: stopped before it started")
            with self.out.open("wb") as out, self.err.open("wb") as err:
                # A session of its own: stopping the run stops the runtimes and servers it started as well
                self.proc = subprocess.Popen([sys.executable, "-m", self.module], cwd=REPO, env=env, stdout=out,
                                             stderr=err, stdin=subprocess.DEVNULL, start_new_session=True)
        try:
            code = self.proc.wait(timeout=TINY_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.stop()
            raise
        return code, self.out.read_text(errors="replace"), self.err.read_text(errors="replace")

    def stop(self) -> None:
        with self._lock:
            self.stopped = True
            if self.proc is not None and self.proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()


def launch_order() -> list[str]:
    """Every module, the slowest first: the order the runs start in, and the tests wait on them in."""
    rank = {module: position for position, module in enumerate(SLOWEST_FIRST)}
    return sorted(modules(), key=lambda module: rank.get(module, len(rank)))


@pytest.fixture(scope="module")
def tiny_runs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Future]]:
    """Each module's run as a future of (exit code, stdout, stderr); PARALLEL at a time, the slowest first."""
    folder = tmp_path_factory.mktemp("bench")
    runs = [TinyRun(module, folder) for module in launch_order() if module not in NEEDS_BROWSER or has_browser()]
    pool = ThreadPoolExecutor(max_workers=PARALLEL, thread_name_prefix="tiny-run")
    try:
        yield {run.module: pool.submit(run.run) for run in runs}
    finally:
        for run in runs:
            run.stop()
        pool.shutdown(wait=True, cancel_futures=True)


def test_the_known_benchmarks_are_found() -> None:
    assert {"bench.bench_accuracy", "bench.bench_anomalies", "bench.bench_drivers", "bench.bench_drivers_cost",
            "bench.bench_flight", "bench.bench_http", "bench.bench_predict", "bench.bench_serving"} <= set(modules())


# In launch order: each test waits on a run that began while the one before it ran, never on a whole queue.
@pytest.mark.parametrize("module", launch_order())
def test_benchmark_runs_tiny(tiny_runs: dict[str, Future], module: str) -> None:
    run = tiny_runs.get(module)
    if run is None:  # only a module that needs a browser is not started without one
        require_browser()  # skips with the install hint (fails under CI=true)
        pytest.fail(f"{module} was not started: there was no browser when the runs began")
    code, stdout, stderr = run.result()  # each run is bounded by TINY_TIMEOUT_S from its start
    output = f"stdout:\n{stdout[-5000:]}\nstderr:\n{stderr[-5000:]}"
    assert code == 0, output
    assert "Traceback" not in stderr, output
    assert f"$ .venv/bin/python -m {module}" in stdout, f"{module} printed no header\n{output}"
    assert any(line.startswith("ratio ") for line in stdout.splitlines()), f"{module} printed no ratio line\n{output}"
