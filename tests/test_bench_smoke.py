"""Every benchmark module runs once on tiny inputs (BENCH_TINY=1), so none can break unnoticed.

Each must exit 0 and print at least one `ratio` line; its figures on tiny inputs mean nothing and are
not checked. New modules (bench/bench_*.py) are picked up by name.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from conftest import REPO

from bench.__main__ import modules

pytestmark = pytest.mark.slow

TINY_TIMEOUT_S = 240


def test_the_known_benchmarks_are_found() -> None:
    assert {"bench.bench_accuracy", "bench.bench_flight", "bench.bench_http", "bench.bench_predict"} <= set(modules())


@pytest.mark.parametrize("module", modules())
def test_benchmark_runs_tiny(module: str) -> None:
    env = {name: value for name, value in os.environ.items() if not name.startswith(("BENCH_", "FLIGHTCAST_"))}
    env["BENCH_TINY"] = "1"
    result = subprocess.run(
        [sys.executable, "-m", module], cwd=REPO, env=env, capture_output=True, text=True,
        timeout=TINY_TIMEOUT_S, stdin=subprocess.DEVNULL,
    )
    output = f"stdout:\n{result.stdout[-5000:]}\nstderr:\n{result.stderr[-5000:]}"
    assert result.returncode == 0, output
    assert "Traceback" not in result.stderr, output
    ratios = [line for line in result.stdout.splitlines() if line.startswith("ratio ")]
    assert ratios, f"{module} printed no ratio line\n{output}"
    assert f"$ .venv/bin/python -m {module}" in result.stdout, f"{module} printed no header\n{output}"
