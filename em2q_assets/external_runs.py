"""Results computed outside Dagster (an Argo workflow from ``argo_bridge``, or
``python -m em2q_assets.step`` in a shell) appear in Dagster's lineage as runless
materializations: the step wrote its ``WorkflowRun`` document, this sensor reports it.
"""

from datetime import UTC, datetime, timedelta

import dagster as dg

from em2q_assets.partitions import measurement_partitions
from em2q_resources.metadata import load_schema
from em2q_resources.metadata.resource import MetadataStoreResource

#: WorkflowRun documents reported per evaluation; the rest on the next tick
BATCH = 200
#: a step stamps ``finished_at`` before its document is written and searchable (Elasticsearch
#: refreshes every second); the cursor only moves past documents older than this, so a slow
#: write is not skipped. Lineage a few seconds late costs nothing.
SETTLE_TIME = timedelta(seconds=10)


def external_engines() -> list[str]:
    """Every run engine but Dagster's own (its runs materialize their assets themselves)."""
    names = load_schema().RunEngine._VALUES_TO_NAMES.values()
    return sorted(name for name in names if name != "DAGSTER")


def materialization_of(run) -> dg.AssetMaterialization:
    """The runless materialization a succeeded external ``WorkflowRun`` stands for."""
    schema = load_schema()
    metadata: dict = {
        "engine": schema.RunEngine._VALUES_TO_NAMES[run.engine],
        "run id": run.run_id,
        "workflow run": run.id,
        "outputs": dg.MetadataValue.json({o.name: o.uri for o in run.outputs or []}),
    }
    if run.parameter_set_id:
        metadata["parameter set"] = run.parameter_set_id
        metadata["parameter hash"] = run.parameter_set_hash or ""
    if run.code_version:
        metadata["code version"] = run.code_version
    if run.duration_s is not None:
        metadata["seconds"] = round(float(run.duration_s), 3)
    if run.finished_at:
        metadata["finished at"] = run.finished_at
    return dg.AssetMaterialization(
        asset_key=dg.AssetKey(run.workflow),
        partition=run.partition,
        description=f"computed outside Dagster by {metadata['engine']} run {run.run_id}",
        metadata=metadata,
    )


@dg.sensor(
    minimum_interval_seconds=30,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Reports results of Argo workflows and shell steps (their WorkflowRun "
    "documents) as materializations, so lineage shows every computed partition.",
)
def external_materializations(
    context: dg.SensorEvaluationContext, metadata: MetadataStoreResource
) -> dg.SensorResult:
    schema = load_schema()
    store = metadata.get_store()
    settled = datetime.now(UTC) - SETTLE_TIME
    page = store.search(
        schema.WorkflowRun,
        filters={
            "engine": external_engines(),
            "status": "SUCCEEDED",
            "finished_at": {"lte": settled.isoformat().replace("+00:00", "Z")},
        },
        sort=["finished_at"],
        page_size=BATCH,
        page_token=context.cursor or None,
    )
    if not page.hits:
        return dg.SensorResult(skip_reason="no new results from outside Dagster")
    known_assets = _asset_names(context)
    runs = [r for r in page.hits if known_assets is None or r.workflow in known_assets]
    for skipped in sorted({r.workflow for r in page.hits} - {r.workflow for r in runs}):
        context.log.warning(f"WorkflowRun documents for unknown asset {skipped!r} not reported")
    measurements = sorted({r.measurement_id for r in runs if r.measurement_id})
    known = set(context.instance.get_dynamic_partitions(measurement_partitions.name))
    missing = [m for m in measurements if m not in known]
    return dg.SensorResult(
        asset_events=[materialization_of(run) for run in runs],
        dynamic_partitions_requests=[measurement_partitions.build_add_request(missing)]
        if missing
        else [],
        cursor=page.cursor,
    )


def _asset_names(context: dg.SensorEvaluationContext) -> set[str] | None:
    """Names of the code location's assets, when the sensor knows its definitions."""
    repository = getattr(context, "repository_def", None)
    if repository is None:
        return None
    return {key.path[-1] for key in repository.asset_graph.get_all_asset_keys()}
