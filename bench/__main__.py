"""`make bench`: every benchmark in order, each printing its table and its ratios against a same-run baseline.

Run: .venv/bin/python -m bench   (BENCH_HTTP_SECONDS=5 shortens the HTTP load runs)
"""

from __future__ import annotations

import importlib
import sys
import time
import traceback

MODULES = [
    "bench.bench_flight", "bench.bench_flight_sql", "bench.bench_predict", "bench.bench_http", "bench.bench_accuracy",
    "bench.bench_scaleout",
]


def main() -> int:
    started = time.perf_counter()
    failed = []
    for name in MODULES:
        t0 = time.perf_counter()
        if name == "bench.bench_accuracy":  # prints its own table, without our header
            print("\n" + "=" * 100)
            print(f"$ .venv/bin/python -m {name}    # forecast accuracy against seasonal naive and naive")
            print("=" * 100, flush=True)
        try:
            importlib.import_module(name).main()
        except Exception:  # noqa: BLE001 - one failing benchmark must not hide the others' figures
            traceback.print_exc()
            failed.append(name)
        print(f"({name}: {time.perf_counter() - t0:.1f} s)", flush=True)
    print(f"\nall benchmarks: {time.perf_counter() - started:.1f} s"
          + (f"; FAILED: {', '.join(failed)}" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
