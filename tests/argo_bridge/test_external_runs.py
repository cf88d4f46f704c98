"""Results of Argo workflows reach Dagster's lineage: the sensor reports succeeded external
``WorkflowRun`` documents as runless materializations, each once."""

import warnings
from datetime import UTC, datetime, timedelta

import dagster as dg
import pytest

from em2q_assets.external_runs import external_materializations
from em2q_resources.metadata import load_schema
from em2q_resources.settings import Settings

S = load_schema()


def iso(moment: datetime) -> str:
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def workflow_run(store, *, engine="ARGO", status="SUCCEEDED", workflow, partition, age_s=30):
    finished = datetime.now(UTC) - timedelta(seconds=age_s)
    run_id = f"em2q-measurement-{workflow[:4]}{age_s}"
    measurement = partition.split("|")[0]
    doc = S.WorkflowRun(
        id=f"{run_id}:{workflow}:{partition}",
        engine=S.RunEngine._NAMES_TO_VALUES[engine],
        run_id=run_id,
        workflow=workflow,
        measurement_id=measurement,
        partition=partition,
        parameter_set_id="default@v1",
        parameter_set_hash="ab" * 32,
        code_version="0.1.0",
        outputs=[
            S.ResultLocation(name="qc", uri=f"s3://em2q/results/{measurement}/{workflow}/x.json")
        ],
        status=S.RunStatus._NAMES_TO_VALUES[status],
        started_at=iso(finished - timedelta(seconds=2)),
        finished_at=iso(finished),
        duration_s=2.0,
    )
    store.update(doc, None)
    return doc


@pytest.fixture
def definitions(metadata_store, elasticsearch_url):
    from em2q_assets.definitions import build_definitions

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", dg.BetaWarning)
        return build_definitions(
            Settings(
                elasticsearch_url=elasticsearch_url,
                index_prefix=metadata_store.prefix,
                spectra_chunks=3,
            )
        )


def evaluate(definitions, instance, cursor):
    context = dg.build_sensor_context(
        instance=instance,
        cursor=cursor,
        resources={"metadata": definitions.resources["metadata"]},
        definitions=definitions,
    )
    return external_materializations(context)


def test_argo_results_are_reported_once_as_materializations(metadata_store, definitions):
    store = metadata_store
    qc = workflow_run(store, workflow="qc_report", partition="m1", age_s=40)
    chunk = workflow_run(store, engine="LOCAL", workflow="spectra_chunks", partition="m1|2")
    workflow_run(store, engine="ARGO", status="FAILED", workflow="tic_image", partition="m1")
    workflow_run(store, engine="DAGSTER", workflow="mean_spectrum", partition="m1")
    # finished "now" (by a clock running ahead): maybe not searchable yet, left for later
    workflow_run(store, workflow="tic_image", partition="m1", age_s=-600)
    workflow_run(store, workflow="not_an_asset", partition="m1")
    store.refresh()
    instance = dg.DagsterInstance.ephemeral()

    result = evaluate(definitions, instance, None)
    events = {(e.asset_key.path[-1], e.partition): e for e in result.asset_events}
    assert set(events) == {("qc_report", "m1"), ("spectra_chunks", "m1|2")}
    metadata = events[("qc_report", "m1")].metadata
    assert metadata["run id"].value == qc.run_id
    assert metadata["engine"].value == "ARGO"
    assert metadata["outputs"].value == {"qc": qc.outputs[0].uri}
    assert metadata["parameter set"].value == "default@v1"
    assert events[("spectra_chunks", "m1|2")].metadata["workflow run"].value == chunk.id
    (request,) = result.dynamic_partitions_requests
    assert request.partitions_def_name == "measurement"
    assert list(request.partition_keys) == ["m1"]
    assert result.cursor

    # Dagster records them: lineage shows the Argo result of the partition
    instance.add_dynamic_partitions("measurement", ["m1"])
    for event in result.asset_events:
        instance.report_runless_asset_event(event)
    latest = instance.get_latest_materialization_event(dg.AssetKey("qc_report"))
    assert latest.asset_materialization.partition == "m1"
    assert latest.asset_materialization.metadata["run id"].value == qc.run_id

    again = evaluate(definitions, instance, result.cursor)
    assert not again.asset_events  # no repeats from the cursor on
    later = workflow_run(store, workflow="ion_images", partition="m1", age_s=20)
    store.refresh()
    third = evaluate(definitions, instance, again.cursor or result.cursor)
    assert [
        (e.asset_key.path[-1], e.metadata["workflow run"].value) for e in third.asset_events
    ] == [("ion_images", later.id)]
    assert not third.dynamic_partitions_requests  # m1 is known now
