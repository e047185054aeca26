"""`make bench`: every benchmark module in turn, each printing its tables and its ratios against a baseline
measured in the same run.

Run: .venv/bin/python -m bench [--tiny] [bench_flight ...]
     (--tiny, or BENCH_TINY=1: tiny inputs, seconds per module; BENCH_HTTP_SECONDS=5 shortens the HTTP runs)

A benchmark module is `bench/bench_<what>.py` with:
- `main()`, which prints `common.header(...)`, its tables (`common.table`), and one `common.ratio_line(...)`
  per figure that matters: a ratio against a baseline of the same run, with its target. Assert what must
  hold (a wrong answer is a failure, not a slow figure).
- sizes taken through `common.size(full, tiny)` (rows, runs, seconds), so that under BENCH_TINY=1 the
  whole code path runs in a few seconds.
- a `__main__` block calling `main()`.
Nothing else: it is found by its file name, run here, and run once tiny by tests/test_bench_smoke.py
inside `make test`, which checks that it exits 0 and prints at least one `ratio` line. A benchmark never
skips: a missing requirement (a peer, ADBC, Dask, selenium, the browser) raises with its install hint,
and `make bench` reports the module as FAILED. The kit is bench/common.py; BENCH_TINY=1 the one tiny
switch. To add a benchmark to an existing module, call it from that module's `main()`.
"""

from __future__ import annotations

import importlib
import os
import sys
import time
import traceback
from pathlib import Path


def modules() -> list[str]:
    """Every benchmark module, by file name."""
    return sorted(f"bench.{path.stem}" for path in Path(__file__).parent.glob("bench_*.py"))


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if "--tiny" in args:
        args.remove("--tiny")
        os.environ["BENCH_TINY"] = "1"  # the same switch: read by bench.common at import, below
    chosen = modules() if not args else [name if name.startswith("bench.") else f"bench.{name}" for name in args]
    started = time.perf_counter()
    failed = []
    for name in chosen:
        t0 = time.perf_counter()
        try:
            importlib.import_module(name).main()
        except Exception:  # one failing benchmark must not hide the others' figures
            traceback.print_exc()
            failed.append(name)
        print(f"({name}: {time.perf_counter() - t0:.1f} s)", flush=True)
    print(f"\nall benchmarks: {time.perf_counter() - started:.1f} s"
          + (f"; FAILED: {', '.join(failed)}" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
