"""What a Dagster run did to its measurements: which measurements it touched, and the root
error when it failed (the first step failure's original exception, its step and chunk; or the
crash of the run's process; or why it never started), never a downstream symptom.

The run-failure sensor and the stalled watchdog (``em2q_assets.sensors``) turn these into
lifecycle transitions (``em2q_resources.lifecycle``).
"""

from __future__ import annotations

import re
from collections.abc import Iterable

import dagster as dg

from em2q_resources.lifecycle import MEASUREMENT_TAG, Kind, Reason

PARTITION_TAG = "dagster/partition"
RANGE_START, RANGE_END = "dagster/asset_partition_range_start", "dagster/asset_partition_range_end"
#: a note ``run_step`` adds to an exception raised for one partition of a range run
PARTITION_NOTE = "em2q partition: "
_WRAPPERS = ("Dagster", "Failure")
#: what Dagster's code server, run coordinator or run monitoring write when a run's process died
#: (before or after it started) or never started
_CRASH = re.compile(
    r"Run execution process for \S+ (?:was terminated by signal \d+ \(\w+\)|unexpectedly exited "
    r"with code -?\d+)|Subprocess for \S+ terminated unexpectedly with exit code -?\d+|"
    r"Detected run worker status [^\n]*"
)
_START_TIMEOUT = re.compile(r"Run timed out due to taking longer than \d+ seconds to start")


def measurements_of_run(tags: dict[str, str]) -> list[str]:
    """Measurement ids a run works on, from its tags: a measurement partition, a chunk
    ``M|i``, a partition range ``M|0 … M|K-1`` or the ``em2q/measurement`` tag."""
    found: list[str] = []
    for name in (MEASUREMENT_TAG, "dagster/partition/measurement", PARTITION_TAG, RANGE_START,
                 RANGE_END):  # fmt: skip
        value = tags.get(name)
        if value:
            measurement_id = value.split("|", 1)[0]
            if measurement_id not in found:
                found.append(measurement_id)
    return found


def _strip_class(cls_name: str, message: str) -> str:
    """``'pkg.ValueError: bad\\n'`` → ``'bad'`` (notes removed)."""
    first, _, rest = message.partition(": ")
    text = rest if first.split(".")[-1] == cls_name else message
    lines = [line for line in text.strip().splitlines() if not line.startswith(PARTITION_NOTE)]
    return "\n".join(lines).strip()


def _chain(error) -> list:
    chain = []
    while error is not None:
        chain.append(error)
        error = error.cause
    return chain


def step_failure_reason(event: dg.EventLogEntry, run: dg.DagsterRun, run_url: str) -> Reason:
    """The root error of one step failure: the original exception of its cause chain."""
    dagster_event = event.dagster_event
    error = dagster_event.event_specific_data.error
    chain = [e for e in _chain(error) if not e.cls_name.startswith(_WRAPPERS)] or _chain(error)
    raised, root = chain[0], chain[-1]
    partition = None
    for item in _chain(error):
        for line in item.message.splitlines():
            if line.startswith(PARTITION_NOTE):
                partition = line[len(PARTITION_NOTE) :].strip()
    partition = partition or run.tags.get(PARTITION_TAG)
    if partition is None and run.tags.get(RANGE_START):
        partition = f"{run.tags[RANGE_START]}…{run.tags.get(RANGE_END, '')}"
    step = dagster_event.step_key
    root_message = _strip_class(root.cls_name, root.message)
    if raised is not root:
        root_message += (
            f" (raised as {raised.cls_name}: {_strip_class(raised.cls_name, raised.message)})"
        )
    return Reason(
        Kind.RUN_FAILED,
        f"{step} failed: {root.cls_name}: {_strip_class(root.cls_name, root.message)}"[:500],
        error_type=root.cls_name,
        error_message=root_message,
        asset=step,
        partition=partition,
        run_id=run.run_id,
        run_url=run_url,
    )


def run_failure_reason(
    instance: dg.DagsterInstance, run: dg.DagsterRun, failure_message: str | None, run_url: str
) -> Reason:
    """Why ``run`` failed: its first step failure's root error; else its process's crash; else
    Dagster's own message (a run that could not launch, a code location that did not load)."""
    steps = sorted(
        instance.all_logs(run.run_id, of_type=dg.DagsterEventType.STEP_FAILURE),
        key=lambda e: e.timestamp,
    )
    if steps:
        return step_failure_reason(steps[0], run, run_url)
    crash = _crash(instance, run, failure_message)
    if crash is not None:
        kind = Kind.LAUNCH_FAILED if _START_TIMEOUT.search(crash) else Kind.KILLED
        return Reason(
            kind,
            f"the run's process ended without finishing: {crash}"[:500],
            error_type="RunProcessDied" if kind == Kind.KILLED else "RunStartTimeout",
            error_message=crash,
            partition=_partition(run),
            run_id=run.run_id,
            run_url=run_url,
        )
    error_type, error_message = None, failure_message
    for of_type in (dg.DagsterEventType.RUN_FAILURE, dg.DagsterEventType.ENGINE_EVENT):
        for entry in instance.all_logs(run.run_id, of_type=of_type):
            error = getattr(entry.dagster_event.event_specific_data, "error", None)
            if error is not None and error_type is None:  # e.g. a dequeue or launch error
                root = _chain(error)[-1]
                error_type = root.cls_name
                error_message = _strip_class(root.cls_name, root.message)
    started = any(instance.all_logs(run.run_id, of_type=dg.DagsterEventType.RUN_START))
    return Reason(
        Kind.RUN_FAILED if started else Kind.LAUNCH_FAILED,
        f"the run {'failed' if started else 'could not start'}: "
        f"{error_message or failure_message or 'no error recorded'}"[:500],
        error_type=error_type,
        error_message=error_message,
        partition=_partition(run),
        run_id=run.run_id,
        run_url=run_url,
    )


def _crash(
    instance: dg.DagsterInstance, run: dg.DagsterRun, failure_message: str | None
) -> str | None:
    """The sentence saying that the run's process died or never started, if Dagster wrote one
    (in an engine event, its error, or the run failure's message)."""
    texts = [failure_message or ""]
    for of_type in (dg.DagsterEventType.ENGINE_EVENT, dg.DagsterEventType.RUN_FAILURE):
        for entry in instance.all_logs(run.run_id, of_type=of_type):
            texts.append(entry.message or "")
            data = entry.dagster_event.event_specific_data
            texts.extend(e.message for e in _chain(getattr(data, "error", None)))
    for text in texts:
        found = _CRASH.search(text) or _START_TIMEOUT.search(text)
        if found:
            return found.group(0)
    return None


def _partition(run: dg.DagsterRun) -> str | None:
    if run.tags.get(PARTITION_TAG):
        return run.tags[PARTITION_TAG]
    if run.tags.get(RANGE_START):
        return f"{run.tags[RANGE_START]}…{run.tags.get(RANGE_END, '')}"
    return None


IN_FLIGHT = [
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
    dg.DagsterRunStatus.CANCELING,
]


def measurements_in_flight(instance: dg.DagsterInstance) -> set[str]:
    """Measurements with a queued or running run, or a backfill still creating runs."""
    busy: set[str] = set()
    for run in instance.get_runs(filters=dg.RunsFilter(statuses=IN_FLIGHT)):
        busy.update(measurements_of_run(run.tags))
    from dagster._core.execution.backfill import BulkActionStatus

    for backfill in instance.get_backfills(status=BulkActionStatus.REQUESTED):
        busy.update(measurements_of_run(backfill.tags))
    return busy


def last_run(instance: dg.DagsterInstance, measurement_id: str) -> dg.RunRecord | None:
    """The newest run record tagged with the measurement (partition or em2q/measurement)."""
    found: Iterable[dg.RunRecord] = [
        record
        for tag in (MEASUREMENT_TAG, PARTITION_TAG)
        for record in instance.get_run_records(
            filters=dg.RunsFilter(tags={tag: measurement_id}), limit=1
        )
    ]
    return max(found, key=lambda r: r.update_timestamp, default=None)
