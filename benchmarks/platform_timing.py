"""Where a measurement's time goes on the real platform: its runs' hand-offs and the idle cost.

Shared by ``bench_platform`` and ``bench_burst``. The run records come from the platform's own
Dagster instance (``DAGSTER_HOME`` of ``em2q dev``): when each run was requested (created),
dequeued and launched (``RUN_STARTING``), running with its code location loaded (``RUN_START``)
and ended; the upload's and READY's times come from the benchmark.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

#: a K8sRunLauncher deployment pays a pod per run instead of a local process: schedule, pull or
#: start the image, import Dagster (docs/scaling.md, "When chunk fan-out moves inside one run")
K8S_POD_START_S = (10.0, 30.0)


@dataclass(frozen=True)
class RunSpan:
    """One Dagster run of a measurement (POSIX seconds)."""

    run_id: str
    stage: str
    status: str
    created: float
    launched: float | None
    started: float | None
    ended: float | None
    duplicate_of: str | None = None  # a second request of a step, canceled unrun

    @property
    def queued_s(self) -> float | None:
        """Requested → dequeued and launched (the run queue: limits, dequeue interval)."""
        return None if self.launched is None else self.launched - self.created

    @property
    def start_s(self) -> float | None:
        """Launched → running (a new process imports the code location)."""
        if self.launched is None or self.started is None:
            return None
        return self.started - self.launched


def run_spans(dagster_home: Path, measurement_id: str) -> list[RunSpan]:
    """The runs tagged with ``measurement_id``, in the order they were requested."""
    import dagster as dg
    from dagster._core.events import DagsterEventType

    from em2q_assets.chain import DUPLICATE_OF_TAG
    from em2q_resources.lifecycle import MEASUREMENT_TAG, STAGE_TAG

    instance = dg.DagsterInstance.from_config(str(dagster_home))
    spans = []
    for record in instance.get_run_records(dg.RunsFilter(tags={MEASUREMENT_TAG: measurement_id})):
        run = record.dagster_run
        starting = instance.get_records_for_run(
            run.run_id, of_type=DagsterEventType.RUN_STARTING, limit=1
        ).records
        spans.append(
            RunSpan(
                run.run_id,
                run.tags.get(STAGE_TAG) or run.tags.get("dagster/backfill", "other"),
                run.status.value,
                record.create_timestamp.timestamp(),
                starting[0].timestamp if starting else None,
                record.start_time,
                record.end_time,
                run.tags.get(DUPLICATE_OF_TAG),
            )
        )
    return sorted(spans, key=lambda s: s.created)


def handoffs(
    upload_started: float, uploaded: float, spans: list[RunSpan], ready: float
) -> list[tuple[str, float, float]]:
    """``(event, at s after the upload started, s since the event before)``: the timeline of
    one measurement from upload to READY."""
    events = [("upload started", upload_started), ("upload accepted (registered)", uploaded)]
    for span in spans:
        events.append((f"{span.stage} run requested", span.created))
        if span.launched is not None:
            events.append((f"{span.stage} run dequeued + launched", span.launched))
        if span.started is not None:
            events.append((f"{span.stage} run started (code location loaded)", span.started))
        if span.ended is not None and span.ended <= ready + 60:
            events.append((f"{span.stage} run ended ({span.status})", span.ended))
    events.append(("READY", ready))
    events.sort(key=lambda e: e[1])
    timeline, before = [], upload_started
    for name, at in events:
        timeline.append((name, at - upload_started, at - before))
        before = at
    return timeline


def print_handoffs(timeline: list[tuple[str, float, float]]) -> None:
    for name, at, delta in timeline:
        print(f"    {at:7.2f} s  (+{delta:5.2f} s)  {name}")


def platform_processes(dagster_home: Path) -> list:
    """Every process of the local platform: ``dagster dev``, webserver, daemon, code server and
    run processes all carry its ``DAGSTER_HOME``."""
    import psutil

    found = []
    for process in psutil.process_iter():
        try:
            if process.environ().get("DAGSTER_HOME") == str(dagster_home):
                found.append(process)
        except (psutil.AccessDenied, psutil.NoSuchProcess, psutil.ZombieProcess):
            continue
    return found


def idle_cpu(dagster_home: Path, seconds: float) -> tuple[float, int]:
    """``(CPU seconds per second, process count)`` of the idle platform over ``seconds``."""
    import psutil

    def cpu(processes: list) -> dict[int, float]:
        used = {}
        for process in processes:
            try:
                times = process.cpu_times()
                used[process.pid] = times.user + times.system
            except (psutil.NoSuchProcess, psutil.ZombieProcess):
                continue
        return used

    processes = platform_processes(dagster_home)
    before, started = cpu(processes), time.monotonic()
    time.sleep(seconds)
    after, elapsed = cpu(processes), time.monotonic() - started
    used = sum(after[pid] - before[pid] for pid in after if pid in before)
    return used / elapsed, len(processes)


def cores() -> int:
    return len(os.sched_getaffinity(0))


#: how a platform process is named in the CPU breakdown: the first marker in its command line
PROCESS_ROLES = (
    ("em2q_assets.run_worker", "run workers"),
    ("api execute_run", "run workers"),
    ("dagster_webserver", "webserver"),
    ("dagster._daemon", "daemon"),
    ("code-server start", "code server"),
    ("api grpc", "code server"),
)


def process_role(cmdline: list[str]) -> str:
    """The role of a platform process from its command (its ``--instance-ref`` JSON, which
    names the run launcher's module, is left out)."""
    text = " ".join(cmdline[:5])
    return next((role for marker, role in PROCESS_ROLES if marker in text), "dagster dev")


class CpuByRole:
    """CPU seconds the platform's processes use while the block runs, by role (run workers,
    webserver, daemon, code server), sampled every ``interval_s`` so short-lived run workers
    count too (a worker's last ``interval_s`` before it exits is missed)."""

    def __init__(self, dagster_home: Path, interval_s: float = 0.25, others: dict | None = None):
        self.dagster_home = dagster_home
        self.others = others or {}  # role -> psutil.Process outside the platform (Elasticsearch)
        self.interval_s = interval_s
        self._last: dict[int, tuple[str, float]] = {}
        self._first: dict[int, float] = {}
        self._stop = False

    def _sample(self) -> None:
        import psutil

        named = {process.pid: role for role, process in self.others.items()}
        for process in [*platform_processes(self.dagster_home), *self.others.values()]:
            try:
                times = process.cpu_times()
                used = times.user + times.system
                role = named.get(process.pid) or self._last.get(process.pid, (None,))[0]
                role = role or process_role(process.cmdline())
            except (psutil.NoSuchProcess, psutil.ZombieProcess, psutil.AccessDenied):
                continue
            self._first.setdefault(process.pid, 0.0 if self._started else used)
            self._last[process.pid] = (role, used)

    def __enter__(self) -> CpuByRole:
        import threading

        self._started = False
        self._sample()
        self._started = True
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()
        return self

    def _loop(self) -> None:
        while not self._stop:
            time.sleep(self.interval_s)
            self._sample()

    def __exit__(self, *exc) -> None:
        self._stop = True
        self._thread.join()
        self._sample()

    def seconds(self) -> dict[str, float]:
        by_role: dict[str, float] = {}
        for pid, (role, used) in self._last.items():
            by_role[role] = by_role.get(role, 0.0) + used - self._first[pid]
        return dict(sorted(by_role.items(), key=lambda item: -item[1]))


def listening_process(url: str):
    """The local process listening on ``url``'s port (Elasticsearch), or None."""
    from urllib.parse import urlsplit

    import psutil

    port = urlsplit(url).port
    for connection in psutil.net_connections("tcp"):
        if connection.status == psutil.CONN_LISTEN and connection.laddr.port == port:
            return psutil.Process(connection.pid) if connection.pid else None
    return None
