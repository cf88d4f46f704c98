"""The new_measurements sensor evaluated through Dagster's test APIs on a real store."""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime, timedelta

import dagster as dg

from em2q_assets import sensors
from em2q_assets.chain import REQUESTED_BY_TAG
from em2q_assets.partitions import chunk_keys
from em2q_assets.sensors import build_lifecycle_sensors, new_measurements
from em2q_resources import lifecycle
from em2q_resources.catalog import CATALOG
from em2q_resources.lifecycle import MEASUREMENT_TAG, STAGE_TAG, Stage
from em2q_resources.metadata import load_schema
from em2q_resources.metadata.synthetic import measurement
from tests.em2q_assets.conftest import CHUNKS, register_copy

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


def ingest(defs, instance, measurement_id: str, tags: dict[str, str]) -> str:
    """Materialize the ingest of ``measurement_id`` in a run with ``tags``; the run id."""
    result = dg.materialize(
        list(defs.assets), selection=["raw_measurement"], partition_key=measurement_id,
        instance=instance, resources=defs.resources, tags=tags,
    )  # fmt: skip
    assert result.success
    return result.run_id


def test_an_ingest_run_without_its_successor_gets_one_chunks_run_and_others_none(
    platform, monkeypatch
):
    defs, instance, store, tmp = platform
    sensor = defs.get_sensor_def("ingested_measurements")
    names = ("lost", "asked", "backfill")
    for name in names:
        register_copy(store, tmp / name, "Example_Continuous", name)
    instance.add_dynamic_partitions("measurement", list(names))
    chain_tags = {STAGE_TAG: "ingest"}
    lost = ingest(defs, instance, "lost", {MEASUREMENT_TAG: "lost", **chain_tags})
    asked = ingest(defs, instance, "asked", {MEASUREMENT_TAG: "asked", **chain_tags})
    ingest(defs, instance, "backfill", {"dagster/backfill": "wf-1"})  # does its chunks itself
    # "asked" requested its chunks run itself (the chain's hook): a run tagged as its successor
    instance.add_run(dg.DagsterRun(job_name="em2q_chunks", run_id="successor",
                                   tags={REQUESTED_BY_TAG: asked}))  # fmt: skip

    # younger than the lag: the run may still be asking; nothing requested, the cursor stays
    young = sensor(dg.build_sensor_context(instance=instance))
    assert not young.run_requests and young.cursor is None

    monkeypatch.setattr(sensors, "CHAIN_LAG", timedelta(0))
    result = sensor(dg.build_sensor_context(instance=instance))
    (request,) = result.run_requests
    first, last = chunk_keys(CHUNKS)[0], chunk_keys(CHUNKS)[-1]
    assert request.job_name == "em2q_chunks"
    assert request.tags == {
        MEASUREMENT_TAG: "lost", STAGE_TAG: "chunks", REQUESTED_BY_TAG: lost,
        "dagster/asset_partition_range_start": f"lost|{first}",
        "dagster/asset_partition_range_end": f"lost|{last}",
    }  # fmt: skip
    assert not sensor(dg.build_sensor_context(instance=instance, cursor=result.cursor)).run_requests

    run = dg.materialize(
        list(defs.assets), selection=list(CATALOG.stage_assets[Stage.CHUNKS]), instance=instance,
        resources=defs.resources, tags=request.tags,
    )  # fmt: skip
    materialized = {
        (e.asset_key.path[-1], e.partition) for e in run.get_asset_materialization_events()
    }
    assert len(materialized) == 2 * CHUNKS


def test_a_run_that_has_not_ended_gets_no_successor_from_the_safety_net(platform, monkeypatch):
    """Its hook may still be waiting for the webserver to take the successor it asked for."""
    defs, instance, store, tmp = platform
    sensor = defs.get_sensor_def("ingested_measurements")
    register_copy(store, tmp / "ending", "Example_Continuous", "ending")
    instance.add_dynamic_partitions("measurement", ["ending"])
    tags = {MEASUREMENT_TAG: "ending", STAGE_TAG: "ingest"}
    run_id = ingest(defs, instance, "ending", tags)
    monkeypatch.setattr(sensors, "CHAIN_LAG", timedelta(0))
    record = instance.get_run_record_by_id(run_id)
    # the same run as seen while its last step's hook still runs: STARTED, no end time
    monkeypatch.setattr(
        instance, "get_run_record_by_id",
        lambda rid: record._replace(
            dagster_run=record.dagster_run.with_status(dg.DagsterRunStatus.STARTED),
            end_time=None,
        ) if rid == run_id else None,
    )  # fmt: skip
    going = sensor(dg.build_sensor_context(instance=instance))
    assert not going.run_requests and going.cursor is None  # looked at again next tick
    monkeypatch.undo()
    monkeypatch.setattr(sensors, "CHAIN_LAG", timedelta(0))
    (request,) = sensor(dg.build_sensor_context(instance=instance)).run_requests
    assert request.tags[REQUESTED_BY_TAG] == run_id


def stalled_sensor(defs):
    (sensor,) = [s for s in build_lifecycle_sensors("http://dagster", 60.0)
                 if s.name == "stalled_measurements"]  # fmt: skip
    return lambda instance: sensor(
        dg.build_sensor_context(
            instance=instance, resources={"metadata": defs.resources["metadata"]}
        )
    )


def processing_since(store, index: int, seconds_ago: float) -> str:
    """A measurement that entered PROCESSING ``seconds_ago``."""
    doc = measurement(S, index, status=S.MeasurementStatus.PROCESSING)
    doc.status_detail = lifecycle.Reason(
        lifecycle.Kind.STARTED, "ingest run r0", actor=lifecycle.Actor.STEP,
        at=lifecycle.iso(time.time() - seconds_ago),
    ).to_thrift()  # fmt: skip
    store.create(doc, refresh=True)
    return doc.id


def test_the_watchdog_fails_a_measurement_nothing_ran_for_as_stalled(platform):
    defs, instance, store, _ = platform
    quiet = processing_since(store, 1, seconds_ago=3600)
    recent = processing_since(store, 2, seconds_ago=5)
    stalled_sensor(defs)(instance)
    reason = lifecycle.reason_of(store.get(S.Measurement, quiet).doc)
    assert status_of(store, quiet) == "FAILED"
    assert reason.kind == lifecycle.Kind.STALLED
    assert re.fullmatch(
        r"stalled: PROCESSING for 36\d\d s with no queued or running run; no run ever started "
        r"for it",
        reason.message,
    ), reason.message
    assert status_of(store, recent) == "PROCESSING"


def test_the_watchdog_leaves_a_measurement_with_a_running_run_alone(platform):
    defs, instance, store, _ = platform
    waiting = processing_since(store, 3, seconds_ago=3600)
    instance.add_run(
        dg.DagsterRun(job_name="__ASSET_JOB", run_id="running-1",
                      status=dg.DagsterRunStatus.STARTED, tags={"em2q/measurement": waiting})
    )  # fmt: skip
    stalled_sensor(defs)(instance)
    assert status_of(store, waiting) == "PROCESSING"


def test_the_watchdog_counts_a_step_recorded_outside_dagster_as_activity(platform):
    defs, instance, store, _ = platform
    busy = processing_since(store, 4, seconds_ago=3600)
    store.update(
        S.WorkflowRun(
            id="argo-1:spectra_chunks:x", engine=S.RunEngine.ARGO, run_id="argo-1",
            workflow="spectra_chunks", measurement_id=busy, status=S.RunStatus.SUCCEEDED,
            finished_at=lifecycle.iso(time.time() - 2),
        ),
        None, refresh=True,
    )  # fmt: skip
    stalled_sensor(defs)(instance)
    assert status_of(store, busy) == "PROCESSING"


def test_the_safety_net_does_not_request_an_ingest_its_upload_requested_already(platform):
    defs, instance, store, _ = platform
    launched, lost = upload(store, 10, minutes_ago=5), upload(store, 11, minutes_ago=4)

    @dg.asset(name="stand_in_for_the_ingest")
    def stand_in() -> None:
        """A run with the tags of the one ``DagsterAPI.request_ingest`` launches."""

    assert dg.materialize(
        [stand_in], instance=instance, tags={MEASUREMENT_TAG: launched, STAGE_TAG: "ingest"}
    ).success
    result, _ = evaluate(defs, instance)
    # the upload whose request was lost gets its run; the other is only registered
    assert [r.partition_key for r in result.run_requests] == [lost]
    assert result.run_requests[0].tags[STAGE_TAG] == "ingest"
    assert status_of(store, launched) == "REGISTERED"
    (request,) = result.dynamic_partitions_requests
    assert list(request.partition_keys) == [launched, lost]


def test_a_chunks_run_of_the_chain_gets_one_run_of_the_measurement_level_assets(
    platform, monkeypatch
):
    defs, instance, store, tmp = platform
    monkeypatch.setattr(sensors, "CHAIN_LAG", timedelta(0))
    register_copy(store, tmp / "a", "Example_Continuous", "chain")
    instance.add_dynamic_partitions("measurement", ["chain"])
    ingest(defs, instance, "chain", {MEASUREMENT_TAG: "chain", STAGE_TAG: "ingest"})
    chunks = defs.get_sensor_def("ingested_measurements")(
        dg.build_sensor_context(instance=instance)
    ).run_requests[0]
    assert chunks.tags[STAGE_TAG] == "chunks"
    chain_run = None
    for tags in (chunks.tags, {**chunks.tags, STAGE_TAG: "by-hand"}):  # the chain's, a person's
        result = dg.materialize(
            list(defs.assets), selection=list(CATALOG.stage_assets[Stage.CHUNKS]),
            instance=instance, resources=defs.resources, tags=tags,
        )  # fmt: skip
        assert result.success
        chain_run = chain_run or result.run_id

    sensor = defs.get_sensor_def("chunked_measurements")
    result = sensor(dg.build_sensor_context(instance=instance))
    (request,) = (
        result.run_requests
    )  # one for the chain's run with its K chunks, none for the other
    assert request.partition_key == "chain" and request.job_name == "em2q_measurement"
    assert request.tags == {
        MEASUREMENT_TAG: "chain",
        STAGE_TAG: "measurement",
        REQUESTED_BY_TAG: chain_run,
    }
    assert set(CATALOG.stage_assets[Stage.MEASUREMENT]) == {
        "mean_spectrum", "tic_image", "qc_report", "qc_trends", "peak_table", "ion_images", "segmentation",
    }  # fmt: skip
    assert not sensor(dg.build_sensor_context(instance=instance, cursor=result.cursor)).run_requests
