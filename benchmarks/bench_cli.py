"""How long people wait for the ``em2q`` command line (issue 13, target 1).

Wall time (median of N runs, each a fresh interpreter: ``python -m em2q.cli …``) of

* ``em2q --help`` (target ≤ 0.5 s),
* ``em2q search`` against a real Elasticsearch holding a few measurements (target ≤ 1.5 s),
* ``em2q upload`` of an invalid file, refused (target ≤ 2 s),

each next to its target and as a ratio to a bare ``python -c pass`` started the same way (the
interpreter's floor); ``python -c 'import elasticsearch'`` is printed too, the floor of a
command that asks Elasticsearch (the client imports its async transports, aiohttp and httpx). Elasticsearch is ``EM2Q_ELASTICSEARCH_URL`` or a local one started here
(a few seconds more). Takes well under a minute.

Run: ``.venv/bin/python -m benchmarks.bench_cli [--runs N] [--quick]``.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from em2q_resources.connections import set_up_metadata_store
from em2q_resources.elasticsearch_server import elasticsearch_url
from em2q_resources.metadata import MetadataStore, load_schema
from em2q_resources.metadata.synthetic import measurement
from em2q_resources.settings import PROJECT_ROOT, Settings

EXAMPLE_SETUP = PROJECT_ROOT / "examples" / "setup.yaml"


def wall_s(command: list[str], env: dict[str, str], runs: int, expect: int) -> float:
    """Median wall time of ``command`` over ``runs`` runs; each must exit with ``expect``."""
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        done = subprocess.run(command, env=env, capture_output=True, text=True)
        times.append(time.perf_counter() - started)
        if done.returncode != expect:
            raise SystemExit(
                f"{' '.join(command)} exited {done.returncode}, not {expect}:\n{done.stderr}"
            )
    return statistics.median(times)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7, help="runs per command (median)")
    parser.add_argument("--quick", action="store_true", help="3 runs per command")
    args = parser.parse_args(argv)
    runs = 3 if args.quick else args.runs

    with elasticsearch_url(Settings.from_env()) as url, tempfile.TemporaryDirectory() as tmp:
        store = MetadataStore.connect(url, index_prefix=f"bench-cli-{uuid.uuid4().hex[:8]}")
        try:
            set_up_metadata_store(store)
            rng = random.Random(7)
            assert store.bulk_put([measurement(load_schema(), i, rng) for i in range(50)]).ok
            store.refresh()
            broken = Path(tmp) / "broken.imzML"
            broken.write_text("not an imzML")
            broken.with_suffix(".ibd").write_bytes(b"\0" * 16)
            env = {
                **os.environ,
                "PYTHONPATH": str(PROJECT_ROOT),
                "EM2Q_ELASTICSEARCH_URL": url,
                "EM2Q_INDEX_PREFIX": store.prefix,
                "EM2Q_STORAGE": str(Path(tmp) / "storage"),
                "EM2Q_CACHE_DIR": str(Path(tmp) / "cache"),
            }
            em2q = [sys.executable, "-m", "em2q.cli"]
            floor = wall_s([sys.executable, "-c", "pass"], env, runs, 0)
            print(f"python -c pass: {floor:.3f} s (the interpreter's floor; median of {runs})")
            client = wall_s([sys.executable, "-c", "import elasticsearch"], env, runs, 0)
            print(
                f"python -c 'import elasticsearch': {client:.3f} s "
                "(the floor of any command that asks Elasticsearch)",
                flush=True,
            )
            cases = [
                ("em2q --help", [*em2q, "--help"], 0, 0.5),
                ("em2q search", [*em2q, "search", "--limit", "5"], 0, 1.5),
                (
                    "em2q upload (invalid file, refused)",
                    [*em2q, "upload", str(broken), "--setup", str(EXAMPLE_SETUP)],
                    1,
                    2.0,
                ),
            ]
            for name, command, expect, target_s in cases:
                took = wall_s(command, env, runs, expect)
                verdict = "met" if took <= target_s else "NOT met"
                print(
                    f"{name}: {took:.3f} s (target <= {target_s} s, {verdict}), "
                    f"{took / floor:.1f}x python -c pass",
                    flush=True,
                )
        finally:
            store.drop_all()
    return 0


if __name__ == "__main__":
    sys.exit(main())
