"""A step of a measurement's chain requested twice runs once: the first request created wins
(``em2q_assets.chain.duplicate_of``), whichever of the two is launched first."""

from __future__ import annotations

import time

import dagster as dg
import pytest

from em2q_assets.chain import REQUESTED_BY_TAG, duplicate_of
from em2q_resources.lifecycle import MEASUREMENT_TAG, STAGE_TAG


@pytest.fixture
def instance():
    with dg.DagsterInstance.ephemeral() as ephemeral:
        yield ephemeral


def add(instance: dg.DagsterInstance, run_id: str, **tags: str) -> dg.DagsterRun:
    return instance.add_run(dg.DagsterRun(job_name="em2q_chunks", run_id=run_id, tags=tags))


def end(instance: dg.DagsterInstance, run_id: str, event: str) -> None:
    instance.report_dagster_event(
        dg.DagsterEvent(event_type_value=event, job_name="em2q_chunks"), run_id=run_id
    )


def ingest(instance: dg.DagsterInstance, run_id: str, measurement_id: str = "m1"):
    return add(instance, run_id, **{MEASUREMENT_TAG: measurement_id, STAGE_TAG: "ingest"})


def test_the_second_ingest_request_of_a_measurement_is_a_duplicate_of_the_first(instance):
    first = ingest(instance, "upload-request")
    second = ingest(instance, "sensor-request")
    assert duplicate_of(instance, second) == first.run_id
    assert duplicate_of(instance, first) is None  # the first one runs, launched first or not
    assert duplicate_of(instance, ingest(instance, "other", "m2")) is None


def test_a_chain_stage_requested_twice_by_the_same_run_is_a_duplicate(instance):
    tags = {MEASUREMENT_TAG: "m1", STAGE_TAG: "chunks", REQUESTED_BY_TAG: "ingest-run"}
    first = add(instance, "hook-request", **tags)
    second = add(instance, "sensor-request", **tags)
    other = add(instance, "other", **{**tags, REQUESTED_BY_TAG: "another-ingest-run"})
    assert duplicate_of(instance, second) == first.run_id
    assert duplicate_of(instance, other) is None


@pytest.mark.parametrize("event", ["PIPELINE_FAILURE", "PIPELINE_CANCELED"])
def test_a_request_after_a_failed_or_canceled_one_is_a_retry(instance, event):
    failed = ingest(instance, "failed")
    end(instance, failed.run_id, event)
    assert duplicate_of(instance, ingest(instance, "retry")) is None


def test_a_request_after_the_step_had_ended_is_a_new_run_not_a_duplicate(instance):
    done = ingest(instance, "done")
    end(instance, done.run_id, "PIPELINE_SUCCESS")
    time.sleep(0.01)  # created after the first one's end
    assert duplicate_of(instance, ingest(instance, "again")) is None


def test_runs_that_are_no_step_of_a_chain_have_no_duplicates(instance):
    add(instance, "a", **{MEASUREMENT_TAG: "m1"})
    assert duplicate_of(instance, add(instance, "b", **{MEASUREMENT_TAG: "m1"})) is None
