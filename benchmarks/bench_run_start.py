"""What every Dagster run pays before its first step: importing the code location.

Each run is a fresh process (``dagster api execute_run``, or the code server's spawned worker)
that imports ``em2q_assets.definitions`` and builds the definitions; so do the webserver, the
daemon and the code server when they (re)load the location. Prints the median over fresh
interpreters of:

1. ``import em2q_assets.definitions`` with the definitions built (target ≤ 1.5 s, issue 13);
2. ``import dagster`` alone: the floor the framework sets, and the ratio of 1 to it;
3. the part that is EM²Q's own (1 − 2), and the heavy libraries the import left unloaded.

A run's full start (queue, launch, process start) is in ``bench_platform --quick``'s timeline.
Run: ``.venv/bin/python -m benchmarks.bench_run_start [--runs 5]``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

from em2q_resources.settings import PROJECT_ROOT

TARGET_S = 1.5
STEP_ONLY = ("numba", "scipy", "pandas", "elasticsearch", "matplotlib", "pyimzml")

_LOCATION = """
import json, sys, warnings
warnings.simplefilter("ignore")
import em2q_assets.definitions as location
location.defs.resolve_asset_graph()
print(json.dumps([m for m in STEP_ONLY if m in sys.modules]))
""".replace("STEP_ONLY", repr(STEP_ONLY))


def timed(code: str) -> tuple[float, str]:
    """Wall time of a fresh interpreter running ``code`` and its last output line."""
    started = time.perf_counter()
    completed = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        encoding="utf-8",
        cwd=PROJECT_ROOT,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
        check=True,
    )
    return time.perf_counter() - started, (completed.stdout.strip().splitlines() or [""])[-1]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args(argv)
    timed(_LOCATION)  # warm the file cache and numba-free bytecode caches
    location, floor, bare, loaded = [], [], [], ""
    for _ in range(args.runs):  # interleaved, so a busy machine slows all three alike
        seconds, loaded = timed(_LOCATION)
        location.append(seconds)
        floor.append(timed("import dagster")[0])
        bare.append(timed("pass")[0])
    location_s, dagster_s = statistics.median(location), statistics.median(floor)
    print(
        f"code location import + definitions: {location_s:.2f} s (target <= {TARGET_S} s) "
        f"{'OK' if location_s <= TARGET_S else 'ABOVE TARGET'}; import dagster alone "
        f"{dagster_s:.2f} s -> {location_s / dagster_s:.2f}x the framework's floor; EM²Q's own "
        f"part {location_s - dagster_s:.2f} s; python -c pass {statistics.median(bare):.2f} s "
        f"(median of {args.runs})"
    )
    print(f"  step libraries loaded by the import: {json.loads(loaded) or 'none'}")


if __name__ == "__main__":
    main()
