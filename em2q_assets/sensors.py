"""Sensors: the safety net of a measurement's processing chain; a failed run marks its
measurements ``FAILED`` with the root error; a watchdog fails measurements nothing runs for (all
through the lifecycle).

The chain is three runs, one per ``lifecycle.Stage``, each of its stage's job
(``em2q_assets.chain``), each requesting the next itself:

1. ``ingest`` (the catalogue's ingest asset): the upload asks Dagster for it over GraphQL
   (``em2q.dagster_api.DagsterAPI.request_ingest``);
2. ``chunks`` (every chunk of the spectra-level assets, one run) and
3. ``measurement`` (every measurement-level asset, QC verdict included, one run; a failed
   blocking QC check stops the analysis after it inside the run): requested by the run before
   (a success hook, the moment its last step is done).

The sensors request a stage only when that request did not arrive: ``new_measurements`` for an
upload without an ingest run (Dagster was down), ``ingested_measurements`` and
``chunked_measurements`` for a chain run older than ``CHAIN_LAG`` without a successor. Each run
carries ``em2q/measurement`` and ``em2q/stage`` tags (the run queue's concurrency limits read
them, ``em2q.platform``). Dagster's sensor daemon evaluates sensors in a fixed 5-second loop
(``dagster._daemon.sensor.MIN_INTERVAL_LOOP_TIME``, not configurable), which is why no step of
the chain waits for one; the automation sensor (``em2q_automation``) is stopped by default,
because its eager conditions would request the same measurement-level assets a second time.
"""

import time
from datetime import UTC, datetime, timedelta

import dagster as dg

from em2q_assets import chain
from em2q_assets.partitions import measurement_partitions
from em2q_assets.run_failures import (
    MEASUREMENT_TAG,
    last_run,
    measurements_in_flight,
    measurements_of_run,
    run_failure_reason,
)
from em2q_resources import lifecycle
from em2q_resources.catalog import INGEST_ASSET
from em2q_resources.lifecycle import STAGE_TAG, Stage
from em2q_resources.metadata import DocumentNotFound, load_schema
from em2q_resources.metadata.resource import MetadataStoreResource

#: uploads younger than this may still be on their way into Elasticsearch (stamped, not yet
#: indexed) or their upload may still be requesting their ingest run (the GraphQL request
#: gives up after ``em2q.dagster_api.INGEST_REQUEST_TIMEOUT_S``); the sensor refreshes the index
#: and only moves its cursor past older ones, so none is skipped and none is requested twice
VISIBILITY_LAG = timedelta(seconds=5)
BATCH = 100


def ingest_requested(instance: dg.DagsterInstance, measurement_id: str) -> bool:
    """Whether an ingest run of the measurement exists (any status): the upload requested it."""
    return bool(
        instance.get_run_records(
            dg.RunsFilter(tags={MEASUREMENT_TAG: measurement_id, STAGE_TAG: Stage.INGEST.value}),
            limit=1,
        )
    )


def materializations_since_cursor(
    context: dg.SensorEvaluationContext, asset: str
) -> dg.EventRecordsResult:
    """The next ``BATCH`` materializations of ``asset`` after the sensor's cursor, oldest first
    (the cursor is the storage id of the last one handled)."""
    return context.instance.fetch_materializations(
        dg.AssetRecordsFilter(
            asset_key=dg.AssetKey(asset),
            after_storage_id=int(context.cursor) if context.cursor else None,
        ),
        limit=BATCH,
        ascending=True,
    )


def build_new_measurements_sensor(ingest_asset: str) -> dg.SensorDefinition:
    """Registers each new upload as a partition and requests ``ingest_asset`` for it."""

    @dg.sensor(
        name="new_measurements",
        job_name=Stage.INGEST.job,
        minimum_interval_seconds=1,  # the daemon evaluates sensors at most every 5 s anyway
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="Safety net: registers UPLOADED measurements as partitions and starts their "
        "ingest run when the upload could not request it itself.",
    )
    def new_measurements(
        context: dg.SensorEvaluationContext, metadata: MetadataStoreResource
    ) -> dg.SensorResult:
        return register_uploads(context, metadata)

    return new_measurements


def register_uploads(
    context: dg.SensorEvaluationContext, metadata: MetadataStoreResource
) -> dg.SensorResult:
    """New uploads become partitions, each with one ingest run request unless its upload
    requested one already (a run tagged with the measurement and the ``ingest`` stage)."""
    schema = load_schema()
    store = metadata.get_store()
    settled = datetime.now(UTC) - VISIBILITY_LAG
    store.refresh(schema.Measurement)
    page = store.search(
        schema.Measurement,
        filters={
            "status": "UPLOADED",
            "uploaded_at": {"lte": settled.isoformat().replace("+00:00", "Z")},
        },
        sort=["uploaded_at"],
        page_size=BATCH,
        page_token=context.cursor or None,
    )
    if not page.hits:
        return dg.SensorResult(skip_reason="no new uploads")
    ids = [m.id for m in page.hits]
    known = set(context.instance.get_dynamic_partitions(measurement_partitions.name))
    wanted = []
    for measurement_id in ids:
        try:
            lifecycle.register(store, measurement_id)
        except lifecycle.IllegalTransition as exc:  # a person started it already
            context.log.info(str(exc))
        if ingest_requested(context.instance, measurement_id):
            context.log.info(f"{measurement_id}: its upload requested the ingest run already")
        else:
            wanted.append(measurement_id)
    return dg.SensorResult(
        run_requests=[
            dg.RunRequest(
                run_key=f"ingest:{measurement_id}",
                job_name=Stage.INGEST.job,
                partition_key=measurement_id,
                tags={MEASUREMENT_TAG: measurement_id, STAGE_TAG: Stage.INGEST.value},
            )
            for measurement_id in wanted
        ],
        dynamic_partitions_requests=[
            measurement_partitions.build_add_request([i for i in ids if i not in known])
        ],
        cursor=page.cursor,
    )


BACKFILL_TAG = "dagster/backfill"
#: how long after a stage's run ended the safety net requests its successor: the run asks for
#: it itself (``em2q_assets.chain``) before it ends, waiting up to
#: ``chain.NEXT_STAGE_TIMEOUT_S`` for the webserver's answer
CHAIN_LAG = timedelta(seconds=5)


def settled_records(context: dg.SensorEvaluationContext, asset: str) -> list[dg.EventLogRecord]:
    """The materializations of ``asset`` after the cursor whose run ended more than
    ``CHAIN_LAG`` ago (the sensor moves its cursor only past those: one whose run is still
    going, its hook perhaps still waiting for the webserver, is looked at again)."""
    settled = time.time() - CHAIN_LAG.total_seconds()
    records = []
    for record in materializations_since_cursor(context, asset).records:
        if record.timestamp > settled:
            break  # looked at again next time
        run = context.instance.get_run_record_by_id(record.run_id)
        if run is not None and not (
            run.dagster_run.is_finished and (run.end_time or 0.0) <= settled
        ):
            break  # its run (and its request of the next stage) is not done yet
        records.append(record)
    return records


def chain_request(
    instance: dg.DagsterInstance, run: dg.DagsterRun | None, stage: Stage, chunk_count: int
) -> dg.RunRequest | None:
    """The safety net's request of the stage after ``run`` (a chain run of ``stage``), unless
    ``run`` requested it itself or it is no step of the chain."""
    if (
        run is None
        or run.tags.get(STAGE_TAG) != stage
        or chain.requested_already(instance, run.run_id)
    ):
        return None
    request = chain.next_stage_request(stage, run.run_id, dict(run.tags), chunk_count)
    if request is None:
        return None
    following, partition, tags = request
    return dg.RunRequest(
        run_key=f"{following}:{run.run_id}",
        job_name=following.job,
        partition_key=partition,
        tags=tags,
    )


def build_safety_net_sensor(
    name: str, stage: Stage, last_asset: str, chunk_count: int, description: str
) -> dg.SensorDefinition:
    """Safety net of the chain: the run after each run of ``stage`` (it has materialized
    ``last_asset``, the stage's last step) that did not request it itself."""

    @dg.sensor(
        name=name,
        job_name=stage.next.job,
        minimum_interval_seconds=1,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description=description,
    )
    def safety_net(context: dg.SensorEvaluationContext) -> dg.SensorResult:
        records = settled_records(context, last_asset)
        if not records:
            return dg.SensorResult(skip_reason=f"no new {stage} runs")
        requests: dict[str, dg.RunRequest] = {}
        for record in records:
            if record.run_id in requests:
                continue  # the K chunks of one run: one request
            run = context.instance.get_run_by_id(record.run_id)
            request = chain_request(context.instance, run, stage, chunk_count)
            if request is not None:
                requests[record.run_id] = request
        return dg.SensorResult(
            run_requests=list(requests.values()), cursor=str(records[-1].storage_id)
        )

    return safety_net


def build_ingested_measurements_sensor(ingest_asset: str, chunk_count: int) -> dg.SensorDefinition:
    """Safety net: the chunks run of an ingest run that did not request it itself."""
    return build_safety_net_sensor(
        "ingested_measurements", Stage.INGEST, ingest_asset, chunk_count,
        "Safety net: requests the chunks run of an ingest run of the chain that could not "
        "request it itself.",
    )  # fmt: skip


def build_chunked_measurements_sensor(
    last_chunk_asset: str, chunk_count: int
) -> dg.SensorDefinition:
    """Safety net: the measurement-level run of a chunks run that did not request it itself."""
    return build_safety_net_sensor(
        "chunked_measurements", Stage.CHUNKS, last_chunk_asset, chunk_count,
        "Safety net: requests the measurement-level run (mean spectrum, TIC, QC, peaks, ion "
        "images) of a chunks run of the chain that could not request it itself.",
    )  # fmt: skip


def last_recorded_step(store, measurement_id: str) -> float:
    """When the measurement's newest ``WorkflowRun`` record finished (POSIX s; 0 if none)."""
    schema = load_schema()
    page = store.search(
        schema.WorkflowRun,
        filters={"measurement_id": measurement_id},
        sort=[("finished_at", True)],
        page_size=1,
    )
    finished = page.hits[0].finished_at if page.hits else None
    return lifecycle.since_iso(finished) if finished else 0.0


def build_lifecycle_sensors(dagster_url: str, stalled_after_s: float) -> list:
    """The run-failure sensor and the stalled watchdog; run links point at ``dagster_url``."""

    def run_url(run_id: str) -> str:
        return f"{dagster_url.rstrip('/')}/runs/{run_id}"

    @dg.run_failure_sensor(
        name="failed_measurement_runs",
        minimum_interval_seconds=1,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="A failed run (ingest, chunk range, measurement-level, backfill, killed or "
        "not launched) marks its measurements FAILED with the root error.",
    )
    def failed_measurement_runs(
        context: dg.RunFailureSensorContext, metadata: MetadataStoreResource
    ) -> None:
        run = context.dagster_run
        measurement_ids = measurements_of_run(run.tags)
        if not measurement_ids:
            return
        reason = run_failure_reason(
            context.instance, run, context.failure_event.message, run_url(run.run_id)
        )
        record = context.instance.get_run_record_by_id(run.run_id)
        ended = record.end_time if record is not None and record.end_time else time.time()
        store = metadata.get_store()
        for measurement_id in measurement_ids:
            try:
                done = lifecycle.fail(
                    store, measurement_id, reason, actor=lifecycle.Actor.WATCHER,
                    not_after=lifecycle.iso(ended),
                )  # fmt: skip
                context.log.info(f"{measurement_id}: {done.status} ({done.reason.summary()})")
            except DocumentNotFound:
                context.log.warning(f"run {run.run_id} failed for unknown {measurement_id}")

    @dg.sensor(
        name="stalled_measurements",
        # a stall is minutes (EM2Q_STALLED_AFTER_S): checking twice a minute is plenty, and
        # each check queries Elasticsearch and the run storage (idle cost)
        minimum_interval_seconds=30,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description=f"Fails measurements that are not READY/FAILED and had no queued or running "
        f"run for {stalled_after_s:g} s (EM2Q_STALLED_AFTER_S).",
    )
    def stalled_measurements(
        context: dg.SensorEvaluationContext, metadata: MetadataStoreResource
    ) -> dg.SkipReason:
        store = metadata.get_store()
        candidates = lifecycle.unfinished(store, older_than_s=stalled_after_s)
        if not candidates:
            return dg.SkipReason("no measurement waits longer than the stall time")
        busy = measurements_in_flight(context.instance)
        failed = []
        for doc in candidates:
            if doc.id in busy:
                continue
            newest = last_run(context.instance, doc.id)
            quiet_since = max(
                lifecycle.since(doc),
                newest.update_timestamp.timestamp() if newest else 0.0,
                last_recorded_step(store, doc.id),  # steps run outside Dagster (Argo) count too
            )
            if time.time() - quiet_since < stalled_after_s:
                continue
            status = lifecycle.status_of(doc)
            last = (
                f"last run {newest.dagster_run.run_id} {newest.dagster_run.status.value}"
                if newest else "no run ever started for it"
            )  # fmt: skip
            reason = lifecycle.Reason(
                lifecycle.Kind.STALLED,
                f"stalled: {status} for {time.time() - lifecycle.since(doc):.0f} s with no queued "
                f"or running run; {last}",
                run_id=newest.dagster_run.run_id if newest else None,
                run_url=run_url(newest.dagster_run.run_id) if newest else None,
            )
            try:
                lifecycle.fail(store, doc.id, reason, actor=lifecycle.Actor.WATCHER)
                failed.append(doc.id)
            except (DocumentNotFound, lifecycle.IllegalTransition) as exc:
                context.log.info(str(exc))
        return dg.SkipReason(f"marked stalled: {', '.join(failed) or 'none'}")

    return [failed_measurement_runs, stalled_measurements]


#: the sensor of the platform's catalogue (``build_definitions`` builds its own from the
#: catalogue it is given)
new_measurements = build_new_measurements_sensor(INGEST_ASSET)
