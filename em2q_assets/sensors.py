"""Sensors: new uploads start processing; failed runs mark their measurement ``FAILED``."""

from datetime import UTC, datetime, timedelta

import dagster as dg

from em2q_assets.measurements import raw_measurement
from em2q_assets.partitions import chunk_keys, measurement_partitions, split_key
from em2q_assets.provenance import set_status
from em2q_resources.metadata import DocumentNotFound, load_schema
from em2q_resources.metadata.resource import MetadataStoreResource

#: uploads younger than this may still be on their way into Elasticsearch (stamped, not yet
#: indexed); the sensor refreshes the index and only moves its cursor past older ones, so none
#: is skipped
VISIBILITY_LAG = timedelta(seconds=1)
BATCH = 100


@dg.sensor(
    target=[raw_measurement],
    minimum_interval_seconds=1,  # the daemon evaluates sensors at most every 5 s anyway
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Registers UPLOADED measurements as partitions and starts their ingest run.",
)
def new_measurements(
    context: dg.SensorEvaluationContext, metadata: MetadataStoreResource
) -> dg.SensorResult:
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
    for measurement_id in ids:
        set_status(store, measurement_id, "REGISTERED", "partition created; ingest requested")
    return dg.SensorResult(
        run_requests=[
            dg.RunRequest(run_key=f"ingest:{measurement_id}", partition_key=measurement_id)
            for measurement_id in ids
        ],
        dynamic_partitions_requests=[
            measurement_partitions.build_add_request([i for i in ids if i not in known])
        ],
        cursor=page.cursor,
    )


RANGE_START, RANGE_END = "dagster/asset_partition_range_start", "dagster/asset_partition_range_end"
BACKFILL_TAG = "dagster/backfill"


def build_ingested_measurements_sensor(
    chunk_assets: list[dg.AssetsDefinition], chunk_count: int
) -> dg.SensorDefinition:
    """After each ingest, one run for every chunk of that measurement (a partition range)."""
    first, last = chunk_keys(chunk_count)[0], chunk_keys(chunk_count)[-1]

    @dg.sensor(
        name="ingested_measurements",
        target=chunk_assets,
        minimum_interval_seconds=1,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="Requests one run for all spectra chunks of a newly ingested measurement.",
    )
    def ingested_measurements(context: dg.SensorEvaluationContext) -> dg.SensorResult:
        found = context.instance.fetch_materializations(
            dg.AssetRecordsFilter(
                asset_key=raw_measurement.key,
                after_storage_id=int(context.cursor) if context.cursor else None,
            ),
            limit=BATCH,
            ascending=True,
        )
        if not found.records:
            return dg.SensorResult(skip_reason="no new ingests")
        requests = []
        for record in found.records:
            run = context.instance.get_run_by_id(record.run_id)
            if record.partition_key is None or (run is not None and BACKFILL_TAG in run.tags):
                continue  # a backfill (workflow) materializes the chunks itself
            measurement_id = record.partition_key
            requests.append(
                dg.RunRequest(
                    run_key=f"chunks:{measurement_id}:{record.storage_id}",
                    asset_selection=[a.key for a in chunk_assets],
                    tags={
                        RANGE_START: f"{measurement_id}|{first}",
                        RANGE_END: f"{measurement_id}|{last}",
                    },
                )
            )
        return dg.SensorResult(run_requests=requests, cursor=str(found.records[-1].storage_id))

    return ingested_measurements


@dg.run_failure_sensor(
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="A failed run marks its measurement FAILED with the error.",
)
def failed_measurement_runs(
    context: dg.RunFailureSensorContext, metadata: MetadataStoreResource
) -> None:
    run = context.dagster_run
    partition = run.tags.get("dagster/partition")
    if not partition:
        return
    if "|" in partition or run.tags.get("dagster/partition/measurement"):
        measurement_id = run.tags.get("dagster/partition/measurement") or partition
    else:
        measurement_id = split_key(partition)[0]
    error = context.failure_event.message or "run failed"
    for event in context.get_step_failure_events():
        if event.event_specific_data and event.event_specific_data.error:
            error = event.event_specific_data.error.message.strip().splitlines()[0]
            break
    store = metadata.get_store()
    try:
        set_status(store, measurement_id, "FAILED", f"run {run.run_id}: {error}"[:2000])
    except DocumentNotFound:
        context.log.warning(f"run {run.run_id} failed for unknown measurement {measurement_id}")
