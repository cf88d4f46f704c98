"""The measurement lifecycle on a real Elasticsearch store: allowed and illegal transitions,
who may make them, and the reason recorded with each."""

from __future__ import annotations

import threading

import pytest

from em2q.setup_file import measurement_from_setup, read_setup
from em2q_resources import lifecycle
from em2q_resources.lifecycle import Action, Actor, IllegalTransition, Kind, Reason, Status
from em2q_resources.metadata import load_schema
from em2q_resources.metadata.schema import utc_now
from em2q_resources.settings import PROJECT_ROOT

S = load_schema()


def new_measurement(store, measurement_id: str = "m1") -> str:
    setup = read_setup(PROJECT_ROOT / "examples" / "setup.yaml")
    store.create(measurement_from_setup(setup, id=measurement_id, uploaded_at=utc_now()))
    return measurement_id


def current(store, measurement_id: str):
    doc = store.get(S.Measurement, measurement_id).doc
    return lifecycle.status_of(doc), lifecycle.reason_of(doc), doc


def failure(run_id: str = "run-1", **changes) -> Reason:
    fields = dict(
        kind=Kind.RUN_FAILED,
        message="spectra_chunks failed: ValueError: bad block",
        error_type="ValueError",
        error_message="bad block",
        asset="spectra_chunks",
        partition="m1|1",
        run_id=run_id,
        run_url=f"http://dagster/runs/{run_id}",
    )
    return Reason(**{**fields, **changes})


def test_a_new_upload_is_uploaded_with_the_upload_as_its_reason(metadata_store):
    status, reason, _ = current(metadata_store, new_measurement(metadata_store))
    assert status == Status.UPLOADED
    assert (reason.kind, reason.actor, reason.next_action) == (
        Kind.UPLOADED,
        Actor.UPLOAD,
        Action.WAIT,
    )


def test_the_standard_path_records_each_step_with_its_actor_and_previous_status(metadata_store):
    store = metadata_store
    m = new_measurement(store)
    lifecycle.register(store, m)
    lifecycle.start(store, m, "ingest run r1", actor=Actor.STEP, run_id="r1")
    lifecycle.ready(store, m, "QC passed with parameter set default@v1", run_id="r3", asset="qc")
    status, reason, doc = current(store, m)
    assert status == Status.READY
    assert (reason.kind, reason.actor, reason.previous_status) == (
        Kind.QC_PASSED,
        Actor.STEP,
        Status.PROCESSING,
    )
    assert reason.run_id == "r3" and reason.next_action == Action.NONE
    assert doc.status_reason == "QC passed with parameter set default@v1 (in qc, run r3)"


@pytest.mark.parametrize(
    ("path", "target", "actor"),
    [
        ((), Status.READY, Actor.STEP),  # UPLOADED → READY skips processing
        ((), Status.REGISTERED, Actor.STEP),  # only the sensor registers
        ((Status.REGISTERED,), Status.REGISTERED, Actor.SENSOR),  # registered twice
        ((Status.REGISTERED, Status.PROCESSING), Status.READY, Actor.WATCHER),  # watchers fail only
        ((Status.REGISTERED, Status.PROCESSING), Status.UPLOADED, Actor.UPLOAD),  # no way back
        ((Status.REGISTERED,), Status.PROCESSING, Actor.SENSOR),  # the sensor does not start
    ],
)
def test_an_illegal_transition_raises_and_changes_nothing(metadata_store, path, target, actor):
    store = metadata_store
    m = new_measurement(store)
    for step in path:
        if step == Status.REGISTERED:
            lifecycle.register(store, m)
        else:
            lifecycle.start(store, m, "ingest", actor=Actor.STEP)
    before = store.get(S.Measurement, m)
    with pytest.raises(IllegalTransition, match=f"→ {target} is not a transition the {actor}"):
        lifecycle.transition(store, m, target, Reason(Kind.STARTED, "x"), actor=actor)
    after = store.get(S.Measurement, m)
    assert (after.seq_no, after.doc) == (before.seq_no, before.doc)


def test_a_failure_records_the_root_error_where_it_happened_and_the_action(metadata_store):
    store = metadata_store
    m = new_measurement(store)
    lifecycle.register(store, m)
    lifecycle.start(store, m, "ingest run r0", actor=Actor.STEP, run_id="r0")
    done = lifecycle.fail(store, m, failure(), actor=Actor.WATCHER)
    status, reason, doc = current(store, m)
    assert done.changed and status == Status.FAILED
    assert (reason.error_type, reason.error_message) == ("ValueError", "bad block")
    assert (reason.asset, reason.partition, reason.run_id) == ("spectra_chunks", "m1|1", "run-1")
    assert reason.run_url == "http://dagster/runs/run-1"
    assert reason.next_action == Action.RETRY
    assert "em2q run m1 --workflow standard" in reason.advice(m)
    assert doc.status_reason == (
        "spectra_chunks failed: ValueError: bad block "
        "(in spectra_chunks, partition m1|1, run run-1)"
    )


def test_a_second_failure_of_the_same_run_keeps_the_first_root_error(metadata_store):
    store = metadata_store
    m = new_measurement(store)
    lifecycle.start(store, m, "ingest", actor=Actor.STEP, run_id="run-1")
    lifecycle.fail(store, m, failure(), actor=Actor.STEP)
    symptom = failure(message="the run failed: step failed", error_type="DagsterError")
    again = lifecycle.fail(store, m, symptom, actor=Actor.WATCHER)
    _, reason, _ = current(store, m)
    assert not again.changed
    assert reason.error_type == "ValueError"


def test_a_failure_reported_after_the_measurement_moved_on_is_ignored(metadata_store):
    store = metadata_store
    m = new_measurement(store)
    lifecycle.start(store, m, "ingest", actor=Actor.STEP, run_id="old")
    ended_before_retry = utc_now()
    lifecycle.start(store, m, "retry", actor=Actor.LAUNCHER, run_id="backfill")
    stale = lifecycle.fail(
        store, m, failure("old"), actor=Actor.WATCHER, not_after=ended_before_retry
    )
    status, reason, _ = current(store, m)
    assert not stale.changed
    assert (status, reason.run_id) == (Status.PROCESSING, "backfill")


def test_retry_moves_a_failed_measurement_back_to_processing_and_then_ready(metadata_store):
    store = metadata_store
    m = new_measurement(store)
    lifecycle.start(store, m, "ingest", actor=Actor.STEP, run_id="r1")
    lifecycle.fail(store, m, failure("r1"), actor=Actor.WATCHER)
    lifecycle.start(store, m, "retry requested", actor=Actor.LAUNCHER, run_id="abcdefgh")
    assert current(store, m)[1].previous_status == Status.FAILED
    lifecycle.ready(store, m, "QC passed", run_id="r2", asset="qc_report")
    status, reason, _ = current(store, m)
    assert status == Status.READY and reason.error_type is None


def test_concurrent_writers_each_land_one_transition(metadata_store):
    """Two watchers report two different runs' failures at once: both writes go through the
    store's optimistic concurrency, none is lost or overwritten half-way."""
    store = metadata_store
    m = new_measurement(store)
    lifecycle.start(store, m, "ingest", actor=Actor.STEP, run_id="r0")
    results = []

    def report(run_id: str) -> None:
        results.append(lifecycle.fail(store, m, failure(run_id), actor=Actor.WATCHER))

    threads = [threading.Thread(target=report, args=(f"run-{i}",)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    status, reason, _ = current(store, m)
    assert status == Status.FAILED
    assert all(r.changed for r in results)  # different runs: the later one is the current truth
    assert reason.run_id in {"run-0", "run-1"} and reason.error_type == "ValueError"
