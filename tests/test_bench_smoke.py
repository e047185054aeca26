"""Every benchmark module runs once on tiny inputs (BENCH_TINY=1), so none can break unnoticed.

Each must exit 0, print its header and at least one `ratio` line; its figures on tiny inputs mean
nothing and are not checked. New modules (bench/bench_*.py) are picked up by name. The modules run
side by side (each mostly waits on its servers), started by the first test that needs one.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import REPO, require_browser

from bench.__main__ import modules
from harness.browser import BrowserMissing, browser_paths

pytestmark = pytest.mark.slow

TINY_TIMEOUT_S = 300
# Modules that drive headless Chromium: without one they skip with the install hint (fail under CI=true).
NEEDS_BROWSER = {"bench.bench_page"}


def has_browser() -> bool:
    try:
        browser_paths()
    except BrowserMissing:
        return False
    return True


class TinyRun:
    def __init__(self, module: str, folder: Path):
        self.module = module
        env = {name: value for name, value in os.environ.items() if not name.startswith(("BENCH_", "FLIGHTCAST_"))}
        env["BENCH_TINY"] = "1"
        self.out, self.err = folder / f"{module}.stdout", folder / f"{module}.stderr"
        with self.out.open("wb") as out, self.err.open("wb") as err:
            self.proc = subprocess.Popen([sys.executable, "-m", module], cwd=REPO, env=env, stdout=out, stderr=err,
                                         stdin=subprocess.DEVNULL)

    def wait(self) -> tuple[int, str, str]:
        code = self.proc.wait(timeout=TINY_TIMEOUT_S)
        return code, self.out.read_text(errors="replace"), self.err.read_text(errors="replace")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture(scope="module")
def tiny_runs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, TinyRun]]:
    folder = tmp_path_factory.mktemp("bench")
    runs = {module: TinyRun(module, folder) for module in modules() if module not in NEEDS_BROWSER or has_browser()}
    try:
        yield runs
    finally:
        for run in runs.values():
            run.stop()


def test_the_known_benchmarks_are_found() -> None:
    assert {"bench.bench_accuracy", "bench.bench_anomalies", "bench.bench_drivers", "bench.bench_drivers_cost",
            "bench.bench_flight", "bench.bench_http", "bench.bench_predict", "bench.bench_serving"} <= set(modules())


@pytest.mark.parametrize("module", modules())
def test_benchmark_runs_tiny(tiny_runs: dict[str, TinyRun], module: str) -> None:
    run = tiny_runs.get(module)
    if run is None:  # only a module that needs a browser is not started without one
        require_browser()  # skips with the install hint (fails under CI=true)
        pytest.fail(f"{module} was not started: there was no browser when the runs began")
    code, stdout, stderr = run.wait()
    output = f"stdout:\n{stdout[-5000:]}\nstderr:\n{stderr[-5000:]}"
    assert code == 0, output
    assert "Traceback" not in stderr, output
    assert f"$ .venv/bin/python -m {module}" in stdout, f"{module} printed no header\n{output}"
    assert any(line.startswith("ratio ") for line in stdout.splitlines()), f"{module} printed no ratio line\n{output}"
