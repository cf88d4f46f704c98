"""``python -m benchmarks``: run every ``benchmarks/bench_*.py`` in turn, each in its own process.

Extra arguments after ``--only NAME[,NAME]`` pick modules (e.g. ``--only bench_reader``).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    only: set[str] | None = None
    if len(argv) >= 2 and argv[0] == "--only":
        only = set(argv[1].split(","))
    names = sorted(p.stem for p in Path(__file__).parent.glob("bench_*.py"))
    failed = []
    for name in names:
        if only is not None and name not in only:
            continue
        print(f"== {name} ==", flush=True)
        status = subprocess.call([sys.executable, "-m", f"benchmarks.{name}"])
        if status:
            failed.append(name)
    if failed:
        print(f"failed: {', '.join(failed)}", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
