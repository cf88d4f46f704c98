"""The new_measurements sensor evaluated through Dagster's test APIs on a real store."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import dagster as dg

from em2q_assets.partitions import chunk_keys
from em2q_assets.sensors import new_measurements
from em2q_resources.metadata import load_schema
from tests.em2q_assets.conftest import CHUNKS, register_copy
from tests.fixtures.documents import measurement

S = load_schema()


def upload(store, index: int, minutes_ago: float, status=None):
    when = datetime.now(UTC) - timedelta(minutes=minutes_ago)
    doc = measurement(
        S, index, status=status or S.MeasurementStatus.UPLOADED,
        uploaded_at=when.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
    )  # fmt: skip
    store.create(doc, refresh=True)
    return doc.id


def evaluate(defs, instance, cursor=None):
    context = dg.build_sensor_context(
        instance=instance, cursor=cursor, resources={"metadata": defs.resources["metadata"]}
    )
    return new_measurements(context), context


def status_of(store, measurement_id):
    return S.MeasurementStatus._VALUES_TO_NAMES[store.get(S.Measurement, measurement_id).doc.status]


def test_sensor_registers_uploads_in_order_and_never_repeats_one(platform):
    defs, instance, store, _ = platform
    first = [upload(store, i, minutes_ago=10 - i) for i in range(3)]
    upload(store, 99, minutes_ago=20, status=S.MeasurementStatus.READY)  # not new
    result, _ = evaluate(defs, instance)
    assert [r.partition_key for r in result.run_requests] == first
    assert [r.run_key for r in result.run_requests] == [f"ingest:{i}" for i in first]
    (request,) = result.dynamic_partitions_requests
    assert list(request.partition_keys) == first
    assert all(status_of(store, i) == "REGISTERED" for i in first)

    # Even if a status update had been lost, the cursor does not hand the same uploads out again.
    doc = store.get(S.Measurement, first[0])
    doc.doc.status = S.MeasurementStatus.UPLOADED
    store.update(doc.doc, doc, refresh=True)
    again, _ = evaluate(defs, instance, cursor=result.cursor)
    assert not again.run_requests

    # A restart resumes from the stored cursor and sees only what is new.
    later = upload(store, 3, minutes_ago=1)
    resumed, _ = evaluate(defs, instance, cursor=result.cursor)
    assert [r.partition_key for r in resumed.run_requests] == [later]


def test_sensor_waits_for_uploads_to_settle_so_none_is_skipped(platform):
    defs, instance, store, _ = platform
    just_now = upload(store, 1, minutes_ago=0)
    result, _ = evaluate(defs, instance)
    assert not result.run_requests  # younger than the visibility lag: next tick
    assert status_of(store, just_now) == "UPLOADED"


def test_each_ingest_gets_one_run_for_all_its_chunks_and_backfills_are_left_alone(platform):
    defs, instance, store, tmp = platform
    sensor = defs.get_sensor_def("ingested_measurements")
    register_copy(store, tmp / "a", "Example_Continuous", "cont")
    register_copy(store, tmp / "b", "Example_Processed", "proc")
    instance.add_dynamic_partitions("measurement", ["cont", "proc"])
    assets = list(defs.assets)
    for measurement_id, tags in (("cont", {}), ("proc", {"dagster/backfill": "wf-1"})):
        assert dg.materialize(
            assets, selection=["raw_measurement"], partition_key=measurement_id,
            instance=instance, resources=defs.resources, tags=tags,
        ).success  # fmt: skip

    result = sensor(dg.build_sensor_context(instance=instance))
    (request,) = result.run_requests  # "proc" was ingested by a backfill, which does its chunks
    last = chunk_keys(CHUNKS)[-1]
    assert request.tags["dagster/asset_partition_range_start"] == f"cont|{chunk_keys(CHUNKS)[0]}"
    assert request.tags["dagster/asset_partition_range_end"] == f"cont|{last}"
    assert {k.path[-1] for k in request.asset_selection} == {
        "spectra_chunks",
        "preprocessed_chunks",
    }
    assert not sensor(dg.build_sensor_context(instance=instance, cursor=result.cursor)).run_requests

    run = dg.materialize(
        assets, selection=[k.path[-1] for k in request.asset_selection], instance=instance,
        resources=defs.resources, tags=request.tags,
    )  # fmt: skip
    materialized = {
        (e.asset_key.path[-1], e.partition) for e in run.get_asset_materialization_events()
    }
    assert len(materialized) == 2 * CHUNKS
