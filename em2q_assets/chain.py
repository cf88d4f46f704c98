"""A measurement's processing chain as three jobs, each run requesting the next when it is done.

``lifecycle.Stage`` names the stages (ingest → chunks → measurement) and their jobs. The upload
starts the ingest job's run (``em2q.dagster_api.DagsterAPI.request_ingest``); a success hook on
the stage's last step asks the webserver for the next stage's run (GraphQL ``launchRun``) the
moment that step has handled its outputs, so no hand-off waits for Dagster's sensor loop
(0–5 s each). The run it requests carries ``REQUESTED_BY_TAG`` (the run before it): the chain's
sensors (``em2q_assets.sensors``) are the safety net for a request that did not arrive, and
request nothing for a run that has its successor already.
"""

from __future__ import annotations

import dagster as dg

from em2q_assets.partitions import chunk_keys
from em2q_assets.run_failures import RANGE_END, RANGE_START
from em2q_resources.lifecycle import MEASUREMENT_TAG, STAGE_TAG, Stage
from em2q_resources.parameter_sets import PARAMETER_SET_TAG

#: the run a chain run was requested by (the stage before it)
REQUESTED_BY_TAG = "em2q/requested_by"
#: set on a run that was not run because the same step was requested before it
DUPLICATE_OF_TAG = "em2q/duplicate_of"
PARTITION_TAG = "dagster/partition"
#: how long a run waits for the webserver to take its successor (well under a second when the
#: machine is not saturated). The safety net acts only ``sensors.CHAIN_LAG`` after the run has
#: ended, so a request the webserver is still working on is not requested a second time: under
#: a burst on 2 cores, a 4 s wait was too short and one measurement in 20 ran a stage twice
NEXT_STAGE_TIMEOUT_S = 20.0


def next_stage_request(
    stage: Stage, run_id: str, tags: dict[str, str], chunk_count: int
) -> tuple[Stage, str | None, dict[str, str]] | None:
    """What the run ``run_id`` of ``stage`` (with ``tags``) requests next: the next stage, its
    partition key (None: the chunk range in the tags) and its tags; None at the end."""
    following = stage.next
    measurement_id = tags.get(MEASUREMENT_TAG)
    if following is None or not measurement_id:
        return None
    carried = {k: v for k, v in tags.items() if k == PARAMETER_SET_TAG}
    chain = {MEASUREMENT_TAG: measurement_id, STAGE_TAG: following.value, REQUESTED_BY_TAG: run_id}
    if following is Stage.CHUNKS:
        keys = chunk_keys(chunk_count)
        ranged = {RANGE_START: f"{measurement_id}|{keys[0]}",
                  RANGE_END: f"{measurement_id}|{keys[-1]}"}  # fmt: skip
        return following, None, {**chain, **ranged, **carried}
    return following, measurement_id, {**chain, **carried}


def requested_already(instance: dg.DagsterInstance, run_id: str) -> bool:
    """Whether the run ``run_id`` has its successor (requested by it or by a sensor for it)."""
    return bool(instance.get_run_records(dg.RunsFilter(tags={REQUESTED_BY_TAG: run_id}), limit=1))


def duplicate_of(instance: dg.DagsterInstance, run: dg.DagsterRun) -> str | None:
    """The run requested before ``run`` for the same step of a measurement's chain, if any:
    ``run`` is then a second request of it, not to be run.

    A request can be made twice: the upload (or a chain run) asks the webserver for the run,
    gives up waiting under load, and the safety-net sensor asks again while the webserver is
    still working on the first request. The first one created wins. The same step is the
    ingest of the measurement, or the stage requested by the same run. An earlier run that
    failed or was canceled does not count (a retry), nor one that had ended before ``run``
    was created (a person running the stage again)."""
    stage, measurement_id = run.tags.get(STAGE_TAG), run.tags.get(MEASUREMENT_TAG)
    if stage not in {s.value for s in Stage} or not measurement_id:
        return None
    if stage == Stage.INGEST.value:
        same_step = {MEASUREMENT_TAG: measurement_id, STAGE_TAG: stage}
    elif run.tags.get(REQUESTED_BY_TAG):
        same_step = {STAGE_TAG: stage, REQUESTED_BY_TAG: run.tags[REQUESTED_BY_TAG]}
    else:
        return None
    mine = instance.get_run_record_by_id(run.run_id)
    if mine is None:
        return None
    created = mine.create_timestamp.timestamp()
    for other in instance.get_run_records(dg.RunsFilter(tags=same_step)):
        if other.storage_id >= mine.storage_id or other.dagster_run.status in _NOT_COUNTED:
            continue
        if other.end_time is None or other.end_time > created:
            return other.dagster_run.run_id
    return None


_NOT_COUNTED = {
    dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED, dg.DagsterRunStatus.CANCELING
}  # fmt: skip


def build_next_stage_hook(dagster_url: str, last_step: dict[Stage, str], chunk_count: int):
    """The success hook of the chain's jobs: after ``last_step[stage]`` of a chain run, request
    the next stage's run from the webserver at ``dagster_url``."""

    @dg.success_hook(name="request_next_stage")
    def request_next_stage(context: dg.HookContext) -> None:
        run = context.instance.get_run_by_id(context.run_id)
        if run is None or run.tags.get(STAGE_TAG) not in {s.value for s in Stage}:
            return  # a person's or a backfill's run of the job: not a step of the chain
        stage = Stage(run.tags[STAGE_TAG])
        if context.op.name != last_step.get(stage):
            return
        request = next_stage_request(stage, run.run_id, dict(run.tags), chunk_count)
        if request is None or run.remote_job_origin is None:
            return
        following, partition, tags = request
        if partition is not None:
            tags = {**tags, PARTITION_TAG: partition}
        from em2q_resources.dagster_graphql import LaunchRefused, launch_run  # httpx: at use

        origin = run.remote_job_origin.repository_origin
        repository = {
            "repositoryLocationName": origin.code_location_origin.location_name,
            "repositoryName": origin.repository_name,
        }
        try:
            next_run = launch_run(
                dagster_url, repository, following.job, tags, timeout_s=NEXT_STAGE_TIMEOUT_S
            )
        except LaunchRefused as exc:
            context.log.warning(
                f"the {following} run was not requested ({exc}); the chain's sensor requests it"
            )
            return
        context.log.info(f"requested the {following} run {next_run}")

    return request_next_stage


def build_chain_jobs(
    dagster_url: str, stage_assets: dict[Stage, list[str]], chunk_count: int
) -> list[dg.UnresolvedAssetJobDefinition]:
    """One job per stage over its assets (in the order they run), with the hook that requests
    the next stage."""
    hook = build_next_stage_hook(
        dagster_url, {stage: names[-1] for stage, names in stage_assets.items()}, chunk_count
    )
    return [
        dg.define_asset_job(
            stage.job,
            selection=[dg.AssetKey(name) for name in names],
            hooks={hook} if stage.next is not None else None,
            description=f"The {stage} stage of a measurement's processing chain.",
        )
        for stage, names in stage_assets.items()
    ]
