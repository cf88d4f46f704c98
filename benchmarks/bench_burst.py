"""A burst of uploads through the real local platform, against plain ``em2q_msi`` calls.

Starts a real Elasticsearch and ``dagster dev`` (webserver, daemon, sensors, run queue with the
limits of ``Settings``), measures the idle platform's CPU use, then uploads 20 small
measurements (24×16 pixels × 2,000 bins) at once, as 20 people would (each upload requests its
own ingest run), and, at full scale, 5 medium ones (100×100 pixels × 20,000 bins, ~800 MB
each; ``--quick`` skips them). Prints measurements per minute to READY, each run's queueing
(requested → launched) and start (launched → running) delays, and the same work as plain
``em2q_msi`` calls in one process for the ratio. Asserts that no measurement is lost (every one
ends READY) or doubled (exactly one run per stage of its chain).

Targets (issue 13): the 20 small ones all READY ≤ 90 s; none lost or doubled; idle CPU printed.

Run: ``.venv/bin/python -m benchmarks.bench_burst [--quick] [--small 20] [--medium 5]``
(``--quick``: ~3 min on 2 cores, most of it the platform's start and the burst itself).
"""

from __future__ import annotations

import argparse
import resource
import statistics
import tempfile
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from benchmarks.bench_platform import free_port, fresh_platform, plain
from benchmarks.platform_timing import CpuByRole, cores, idle_cpu, listening_process, run_spans
from em2q.dagster_api import DagsterAPI
from em2q.platform import dagster_dev, dagster_home
from em2q.setup_file import read_setup
from em2q.upload import upload_measurement
from em2q_msi.synthetic import write_imzml
from em2q_resources.elasticsearch_server import elasticsearch_url
from em2q_resources.lifecycle import Stage
from em2q_resources.metadata import load_schema
from em2q_resources.settings import PROJECT_ROOT, Settings
from em2q_resources.storage import StorageResource

SMALL = (24, 16, 2_000)
MEDIUM = (100, 100, 20_000)
#: the stages of a measurement's chain, one run each
STAGES = tuple(Stage)


def generate(folder: Path, count: int, shape: tuple[int, int, int], name: str) -> list[str]:
    n_x, n_y, bins = shape
    return [
        write_imzml(folder / f"{name}-{i}", n_x=n_x, n_y=n_y, n_values=bins, seed=1000 + i)
        for i in range(count)
    ]


def burst(files: list[str], work: Path, url: str, idle_s: float) -> dict:
    """Upload ``files`` at once to a fresh local platform; READY times and run spans."""
    schema = load_schema()
    settings, store = fresh_platform(url, work, "bench-burst", chunks=2)
    setup = read_setup(PROJECT_ROOT / "examples" / "setup.yaml")
    home = dagster_home(settings)
    with dagster_dev(settings, url, port=free_port()) as ui:
        with DagsterAPI(ui) as api:
            api.repository()
        time.sleep(10)  # the daemon's first ticks are done: idle
        idle, processes = idle_cpu(home, idle_s)

        def one(index_and_file: tuple[int, str]) -> tuple[str, float]:
            index, imzml = index_and_file
            with DagsterAPI(ui) as api:
                doc = upload_measurement(
                    imzml, setup={**setup, "title": f"burst {index}"}, store=store,
                    storage=StorageResource.from_settings(settings), progress=False,
                    cache_dir=work / "cache" / f"index-{index}", dagster=api,
                )  # fmt: skip
            return doc.id, time.time()

        started = time.time()
        elasticsearch = listening_process(url)
        cpu = CpuByRole(home, others={"elasticsearch": elasticsearch} if elasticsearch else {})
        cpu.__enter__()
        own_before = resource.getrusage(resource.RUSAGE_SELF)
        with ThreadPoolExecutor(len(files)) as pool:
            uploaded = dict(pool.map(one, enumerate(files)))
        ready: dict[str, float] = {}
        statuses: dict[str, str] = {}
        final = {schema.MeasurementStatus.READY, schema.MeasurementStatus.FAILED}
        while len(ready) < len(uploaded):
            if time.time() - started > 1800:
                raise TimeoutError(f"{len(uploaded) - len(ready)} not final after 30 minutes")
            store.refresh(schema.Measurement)
            for doc in store.scan(schema.Measurement):
                if doc.id in uploaded and doc.id not in ready and doc.status in final:
                    ready[doc.id] = time.time()
                    statuses[doc.id] = schema.MeasurementStatus._VALUES_TO_NAMES[doc.status]
            time.sleep(0.25)
        cpu.__exit__(None, None, None)
        own = resource.getrusage(resource.RUSAGE_SELF)
        cpu_s = {
            **cpu.seconds(),
            "uploads (this process)": own.ru_utime
            + own.ru_stime
            - own_before.ru_utime
            - own_before.ru_stime,
        }
        time.sleep(8)  # the chain's last runs end, and any doubled request would show
        spans = {m: run_spans(home, m) for m in uploaded}
    store.drop_all()
    return {
        "started": started, "uploaded": uploaded, "ready": ready, "statuses": statuses,
        "spans": spans, "idle": idle, "processes": processes, "cpu_s": cpu_s,
    }  # fmt: skip


def check_none_lost_or_doubled(result: dict) -> None:
    lost = {m: s for m, s in result["statuses"].items() if s != "READY"}
    assert not lost, f"not READY: {lost}"
    for measurement_id, spans in result["spans"].items():
        stages = Counter(span.stage for span in spans if span.duplicate_of is None)
        assert stages == Counter(STAGES), f"{measurement_id}: runs per stage {dict(stages)}"


def report(name: str, result: dict, plain_s: float, target_s: float | None) -> None:
    started = result["started"]
    to_ready = sorted(t - started for t in result["ready"].values())
    count = len(to_ready)
    per_minute = 60 * count / to_ready[-1]
    runs = [s for spans in result["spans"].values() for s in spans if s.start_s is not None]
    duplicates = [s for spans in result["spans"].values() for s in spans if s.duplicate_of]
    queued = [s.queued_s for s in runs]
    start = [s.start_s for s in runs]
    chains = [[s for s in spans if s.duplicate_of is None] for spans in result["spans"].values()]
    chained = [
        later.created - earlier.ended
        for spans in chains
        for earlier, later in zip(spans, spans[1:], strict=False)
        if earlier.ended is not None
    ]
    target = f" (target <= {target_s:.0f} s)" if target_s else ""
    print(
        f"{name}: {count} uploaded at once, all READY after {to_ready[-1]:.1f} s{target}; "
        f"first after {to_ready[0]:.1f} s, median {statistics.median(to_ready):.1f} s; "
        f"{per_minute:.1f} measurements/min to READY; none lost or doubled "
        f"({len(runs)} runs, one per stage; {len(duplicates)} requests made twice under load "
        "were canceled unrun as duplicates)"
    )
    print(
        f"  runs: queued (requested → launched) median {statistics.median(queued):.1f} s, max "
        f"{max(queued):.1f} s; start (launched → running) median {statistics.median(start):.1f}"
        f" s, max {max(start):.1f} s; next stage requested after the run before ended: median "
        f"{statistics.median(chained):.1f} s, max {max(chained):.1f} s"
    )
    cpu_s = result["cpu_s"]
    print(
        f"  CPU seconds until the last READY ({sum(cpu_s.values()):.0f} s on {cores()} cores): "
        + ", ".join(f"{role} {seconds:.0f}" for role, seconds in cpu_s.items())
    )
    print(
        f"  plain em2q_msi, same files one after the other in one process: {plain_s:.1f} s; "
        f"platform / plain = {to_ready[-1] / plain_s:.1f}x"
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="skip the medium measurements")
    parser.add_argument("--small", type=int, default=20)
    parser.add_argument("--medium", type=int, default=5)
    parser.add_argument("--idle-seconds", type=float, default=30.0)
    args = parser.parse_args(argv)
    if args.quick:
        args.medium, args.idle_seconds = 0, 15.0
    with tempfile.TemporaryDirectory(prefix="em2q-bench-burst-") as folder:
        work = Path(folder)
        (work / "data").mkdir()
        print(f"generating {args.small} small and {args.medium} medium measurements …", flush=True)
        small = generate(work / "data", args.small, SMALL, "small")
        medium = generate(work / "data", args.medium, MEDIUM, "medium")
        plain_small = sum(plain(f, work / "plain-cache") for f in small)
        plain_medium = sum(plain(f, work / "plain-cache") for f in medium)
        with elasticsearch_url(Settings.from_env()) as url:
            result = burst(small, work / "small", url, args.idle_seconds)
            print(
                f"idle platform ({result['processes']} processes of `dagster dev`): "
                f"{100 * result['idle']:.1f} % of one core over {args.idle_seconds:.0f} s "
                f"({cores()} cores here; issue 13 measured 25 % before)",
                flush=True,
            )
            check_none_lost_or_doubled(result)
            report("small (24×16 px)", result, plain_small, 90.0)
            if medium:
                result = burst(medium, work / "medium", url, 5.0)
                check_none_lost_or_doubled(result)
                report("medium (100×100 px × 20,000 bins)", result, plain_medium, None)


if __name__ == "__main__":
    main()
