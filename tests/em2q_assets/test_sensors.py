"""The new_measurements sensor evaluated through Dagster's test APIs on a real store."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import dagster as dg

from em2q_assets.sensors import new_measurements
from em2q_resources.metadata import load_schema
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
