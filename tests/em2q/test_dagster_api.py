"""Workflows launched as asset backfills through a real ``dagster dev``'s GraphQL API."""

from __future__ import annotations

import time

import pytest

from em2q.dagster_api import PARAMETER_SET_TAG, DagsterAPI
from em2q_assets.definitions import build_definitions
from em2q_resources.auth import Forbidden, Role, User
from em2q_resources.metadata import DocumentNotFound, load_schema
from em2q_resources.settings import Settings
from em2q_resources.workflows import WORKFLOWS, UnknownWorkflow, WorkflowNotPublished, publish
from tests.em2q_assets.conftest import register_copy
from tests.fixtures.dagster import CHUNKS

S = load_schema()
ADMIN = User("ada", Role.ADMIN)
SCIENTIST = User("sam", Role.SCIENTIST)
TECHNICIAN = User("tess", Role.TECHNICIAN)


def wait_for(predicate, timeout_s: float, what: str):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(1.0)
    raise AssertionError(f"timed out after {timeout_s:.0f}s waiting for {what}")


@pytest.fixture(scope="module")
def registered(dagster_platform, tmp_path_factory):
    """One uploaded example measurement in the platform's catalog."""
    folder = tmp_path_factory.mktemp("upload")
    register_copy(dagster_platform.store, folder, "Example_Continuous", "api-cont")
    return "api-cont"


@pytest.fixture
def api(dagster_platform):
    """The client; workflows a test launches are cancelled after it, so that they do not keep
    the platform's two run slots busy for later tests."""
    with DagsterAPI(dagster_platform.url, store=dagster_platform.store) as api:
        launched = []
        launch = api.launch_workflow

        def launch_and_remember(*args, **kwargs):
            launched.append(launch(*args, **kwargs))
            return launched[-1]

        api.launch_workflow = launch_and_remember
        yield api
        for backfill_id in launched:
            api.cancel(backfill_id)


def test_workflows_are_closed_selections_of_the_code_locations_graph():
    defs = build_definitions(Settings(spectra_chunks=CHUNKS))
    graph = defs.resolve_asset_graph()
    keys = {key.path[-1] for key in graph.get_all_asset_keys()}
    for workflow in WORKFLOWS.values():
        assert set(workflow.assets) <= keys, workflow.name
    downstream = {
        key.path[-1]
        for key in graph.get_all_asset_keys()
        if any(p.path[-1] == "preprocessed_chunks" for p in graph.get(key).parent_keys)
    }
    assert downstream <= set(WORKFLOWS["reprocess"].assets)
    assert "spectra_chunks" not in WORKFLOWS["reprocess"].assets


def test_standard_workflow_is_one_backfill_over_the_measurement_and_its_chunks(
    api, dagster_platform, registered
):
    backfill_id = api.launch_workflow("standard", registered, None, SCIENTIST)

    status = api.run_status(backfill_id)
    assert status.kind == "backfill"
    default = dagster_platform.store.get_parameter_set("default").id
    assert status.tags[PARAMETER_SET_TAG] == default
    assert status.tags["em2q/workflow"] == "standard"
    assert status.tags["em2q/user"] == "sam"
    assert status.assets["raw_measurement"]["targeted"] == 1
    assert status.assets["spectra_chunks"]["targeted"] == CHUNKS
    assert status.assets["preprocessed_chunks"]["targeted"] == CHUNKS
    assert status.assets["ion_images"]["targeted"] == 1
    assert status.url == f"{dagster_platform.url}/runs/b/{backfill_id}?tab=runs"
    api.cancel(backfill_id)
    assert api.run_status(backfill_id).status in ("CANCELING", "CANCELED")

    # That the runs resolve the tagged parameter set is shown end to end by the notebook test
    # (tests/em2q/test_notebook.py): its results and WorkflowRun records carry that set.


def test_technician_starts_only_published_workflows(api, dagster_platform, registered):
    with pytest.raises(WorkflowNotPublished, match="em2q workflows publish qc"):
        api.launch_workflow("qc", registered, None, TECHNICIAN)
    with pytest.raises(Forbidden, match="may not publish workflow"):
        publish(dagster_platform.store, "qc", TECHNICIAN)
    publish(dagster_platform.store, "qc", ADMIN)
    backfill_id = api.launch_workflow("qc", registered, None, TECHNICIAN)
    assert api.run_status(backfill_id).tags["em2q/user"] == "tess"
    assert "peak_table" not in api.run_status(backfill_id).assets


def test_unknown_workflow_measurement_or_parameter_set_is_named(api, registered):
    with pytest.raises(UnknownWorkflow, match="standard"):
        api.launch_workflow("everything", registered, None, ADMIN)
    with pytest.raises(DocumentNotFound, match="nowhere"):
        api.launch_workflow("standard", "nowhere", None, ADMIN)
    with pytest.raises(DocumentNotFound, match="no-such-set"):
        api.launch_workflow("reprocess", registered, "no-such-set", ADMIN)


def test_ui_links_point_at_runs_backfills_and_asset_partitions(api):
    assert api.ui_url_for_run("abcdefgh").endswith("/runs/b/abcdefgh?tab=runs")
    run_id = "0f4c6a0e-6f5e-4c1e-9d4b-0c2b7f4f5c11"
    assert api.ui_url_for_run(run_id).endswith(f"/runs/{run_id}")
    assert api.ui_url_for_asset("spectra_chunks", "m1|0").endswith(
        "/assets/spectra_chunks?view=partitions&partition=m1%7C0"
    )


_RUNS_OF = """
query ($measurement: String!) {
  runsOrError(filter: {tags: [{key: "em2q/measurement", value: $measurement}]}) {
    ... on Runs { results { runId tags { key value } } }
  }
}"""


def test_an_upload_starts_its_own_ingest_run_and_the_sensor_does_not_start_a_second(
    dagster_platform, tmp_path
):
    import uuid

    import dagster as dg

    from em2q.platform import dagster_home
    from em2q.setup_file import read_setup
    from em2q.upload import upload_measurement
    from em2q_assets.sensors import VISIBILITY_LAG, new_measurements
    from em2q_msi.synthetic import write_imzml
    from em2q_resources.settings import PROJECT_ROOT
    from em2q_resources.storage import StorageResource

    settings = dagster_platform.settings
    # files of its own: the session's platform already holds the examples, and a second upload
    # of the same bytes is refused as a duplicate
    own_file = write_imzml(tmp_path / "own", mode="processed", seed=uuid.uuid4().int % 2**31)
    with DagsterAPI(dagster_platform.url) as api:
        measurement = upload_measurement(
            own_file, setup=read_setup(PROJECT_ROOT / "examples" /
            "setup.yaml"), store=dagster_platform.store, storage=StorageResource(
            root=settings.storage), progress=False, cache_dir=tmp_path, dagster=api,
        )  # fmt: skip

    def runs(stage: str | None = None) -> list[dict[str, str]]:
        found = dagster_platform.graphql(_RUNS_OF, {"measurement": measurement.id})
        tags = [{t["key"]: t["value"] for t in r["tags"]} | {"id": r["runId"]}
                for r in found["runsOrError"]["results"]]  # fmt: skip
        return [t for t in tags if stage is None or t["em2q/stage"] == stage]

    (tags,) = runs()  # launched by the upload itself, with the sensors stopped
    assert tags["em2q/stage"] == "ingest"
    assert tags["dagster/partition"] == measurement.id
    assert "dagster/sensor_name" not in tags

    # the safety net's tick once the upload has settled: the run is there, no second request
    time.sleep(VISIBILITY_LAG.total_seconds() + 0.5)
    instance = dg.DagsterInstance.from_config(str(dagster_home(settings)))
    metadata = build_definitions(settings).resources["metadata"]
    result = new_measurements(
        dg.build_sensor_context(instance=instance, resources={"metadata": metadata})
    )
    assert measurement.id not in {r.partition_key for r in result.run_requests or []}
    assert len(runs("ingest")) == 1


def test_each_run_of_the_chain_requests_the_next_itself(dagster_platform, tmp_path):
    """With the sensors stopped, an upload still ends READY: the ingest run requested the
    chunks run, which requested the measurement-level run (each tagged with the one before)."""
    import uuid

    from em2q.setup_file import read_setup
    from em2q.upload import upload_measurement
    from em2q_msi.synthetic import write_imzml
    from em2q_resources.settings import PROJECT_ROOT
    from em2q_resources.storage import StorageResource

    settings = dagster_platform.settings
    own_file = write_imzml(
        tmp_path / "chain", n_x=6, n_y=4, n_values=2_000, seed=uuid.uuid4().int % 2**31
    )  # passes QC
    with DagsterAPI(dagster_platform.url) as api:
        measurement = upload_measurement(
            own_file, setup=read_setup(PROJECT_ROOT / "examples" / "setup.yaml"),
            store=dagster_platform.store, storage=StorageResource(root=settings.storage),
            progress=False, cache_dir=tmp_path, dagster=api,
        )  # fmt: skip
    S = load_schema()
    deadline = time.monotonic() + 240
    while dagster_platform.store.get(S.Measurement, measurement.id).doc.status not in (
        S.MeasurementStatus.READY, S.MeasurementStatus.FAILED,
    ):  # fmt: skip
        assert time.monotonic() < deadline, "the chain did not end"
        time.sleep(0.5)
    doc = dagster_platform.store.get(S.Measurement, measurement.id).doc
    assert doc.status == S.MeasurementStatus.READY, doc.status_reason
    found = dagster_platform.graphql(_RUNS_OF, {"measurement": measurement.id})
    runs = {}
    for run in found["runsOrError"]["results"]:
        tags = {t["key"]: t["value"] for t in run["tags"]}
        runs[tags["em2q/stage"]] = (run["runId"], tags)
    assert sorted(runs) == ["chunks", "ingest", "measurement"]
    assert runs["chunks"][1]["em2q/requested_by"] == runs["ingest"][0]
    assert runs["measurement"][1]["em2q/requested_by"] == runs["chunks"][0]
    assert not any("dagster/sensor_name" in tags for _, tags in runs.values())


def test_a_partition_backfill_targets_exactly_the_partitions_given(
    api, dagster_platform, registered
):
    from em2q_assets.partitions import chunk_keys

    chunk = f"{registered}|{chunk_keys(CHUNKS)[1]}"
    backfill_id = api.launch_partitions(
        registered,
        {"preprocessed_chunks": [chunk], "qc_report": [registered]},
        None,
        SCIENTIST,
        "reprocess stale",
    )
    try:
        status = api.run_status(backfill_id)
        assert status.kind == "backfill"
        targeted = {name: c["targeted"] for name, c in status.assets.items() if c["targeted"]}
        assert targeted == {"preprocessed_chunks": 1, "qc_report": 1}
        assert status.tags["em2q/user"] == "sam"
    finally:
        api.cancel(backfill_id)
