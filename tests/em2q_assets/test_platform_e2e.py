"""The local deployment end to end: `dagster dev` (webserver + daemon, SQLite instance), the
sensors picking up an upload and requesting each stage of its chain, and the GraphQL API."""

from __future__ import annotations

import socket
import time

import pytest
import requests

from em2q.platform import dagster_dev
from em2q_resources.metadata import load_schema
from em2q_resources.settings import Settings
from tests.em2q_assets.conftest import register_copy, remember_storage

S = load_schema()
FINAL = {S.MeasurementStatus.READY, S.MeasurementStatus.FAILED}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def graphql(url: str, query: str, variables: dict | None = None) -> dict:
    answer = requests.post(
        f"{url}/graphql", json={"query": query, "variables": variables or {}}, timeout=60
    )
    answer.raise_for_status()
    body = answer.json()
    assert "errors" not in body, body["errors"]
    return body["data"]


def wait_for(predicate, timeout_s: float, what: str, interval_s: float = 1.0):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval_s)
    raise AssertionError(f"timed out after {timeout_s:.0f}s waiting for {what}")


MATERIALIZATIONS = """
query ($path: [String!]!, $partition: String!) {
  assetOrError(assetKey: {path: $path}) {
    ... on Asset { assetMaterializations(partitions: [$partition]) { runId partition } }
  }
}"""

LINEAGE = """
{ assetNodes { assetKey { path } dependencyKeys { path } partitionKeysByDimension { name } } }
"""

LAUNCH = """
mutation ($params: ExecutionParams!) {
  launchRun(executionParams: $params) {
    __typename
    ... on LaunchRunSuccess { run { runId } }
    ... on PythonError { message }
    ... on InvalidSubsetError { message }
    ... on RunConfigValidationInvalid { errors { message } }
  }
}"""

SENSOR_RUNS = """
query ($measurement: String!) {
  runsOrError(filter: {tags: [{key: "em2q/measurement", value: $measurement}]}) {
    ... on Runs { results { runId status tags { key value } } }
  }
}"""

RUN_STATUS = """
query ($runId: ID!) { runOrError(runId: $runId) { ... on Run { status } } }
"""


@pytest.mark.slow
def test_upload_is_processed_by_the_running_platform_and_visible_over_graphql(
    metadata_store, elasticsearch_url, tmp_path
):
    settings = Settings(
        elasticsearch_url=elasticsearch_url,
        index_prefix=metadata_store.prefix,
        storage=str(tmp_path / "storage"),
        cache_dir=tmp_path / "cache",
        spectra_chunks=2,
    )
    remember_storage(settings)
    with dagster_dev(settings, elasticsearch_url, port=free_port()) as url:
        started = time.monotonic()
        # two uploads at once: the safety-net sensor takes both, each once
        register_copy(metadata_store, tmp_path / "upload", "Example_Continuous", "e2e")
        register_copy(metadata_store, tmp_path / "upload-2", "Example_Processed", "e2e-proc")

        def final_status(measurement_id: str):
            doc = metadata_store.get(S.Measurement, measurement_id).doc
            return doc if doc.status in FINAL else None

        for measurement_id in ("e2e", "e2e-proc"):
            measurement = wait_for(
                lambda m=measurement_id: final_status(m), 300, f"{measurement_id} to end"
            )
            assert measurement.status == S.MeasurementStatus.READY, measurement.status_reason
        elapsed = time.monotonic() - started
        print(f"two uploads -> READY through the sensor and the chain: {elapsed:.1f}s")

        # the daemon ticked the sensors many times meanwhile: each measurement got exactly one
        # ingest run (new_measurements: these were registered without an upload's request),
        # which requested one run of all its chunks, which requested one run of its
        # measurement-level assets (the sensors left both alone)
        def runs_by_stage(measurement_id: str) -> dict[str, list[tuple[str, str]]] | None:
            """Once every run has ended (the analysis after QC runs on past READY)."""
            runs = graphql(url, SENSOR_RUNS, {"measurement": measurement_id})["runsOrError"]
            by_stage: dict[str, list[tuple[str, str]]] = {}
            for run in runs["results"]:
                if run["status"] not in ("SUCCESS", "FAILURE", "CANCELED"):
                    return None
                tags = {t["key"]: t["value"] for t in run["tags"]}
                requested_by = tags.get("dagster/sensor_name") or (
                    "run" if tags.get("em2q/requested_by") else "?"
                )
                by_stage.setdefault(tags.get("em2q/stage", "?"), []).append(
                    (requested_by, run["status"])
                )
            return by_stage

        for measurement_id in ("e2e", "e2e-proc"):
            by_stage = wait_for(
                lambda m=measurement_id: runs_by_stage(m), 180, f"{measurement_id}'s runs"
            )
            assert by_stage == {
                "ingest": [("new_measurements", "SUCCESS")],
                "chunks": [("run", "SUCCESS")],
                "measurement": [("run", "SUCCESS")],
            }, measurement_id

        done = graphql(url, MATERIALIZATIONS, {"path": ["qc_report"], "partition": "e2e"})
        assert done["assetOrError"]["assetMaterializations"]

        nodes = {tuple(n["assetKey"]["path"]): n for n in graphql(url, LINEAGE)["assetNodes"]}
        assert ("raw_measurement",) in {
            tuple(d["path"]) for d in nodes[("spectra_chunks",)]["dependencyKeys"]
        }
        assert {d["name"] for d in nodes[("spectra_chunks",)]["partitionKeysByDimension"]} == {
            "measurement",
            "spectra_chunk",
        }

        # Materialize one partition on demand, as a user does from the UI.
        params = {
            "selector": {
                "repositoryLocationName": "em2q",
                "repositoryName": "__repository__",
                "jobName": "__ASSET_JOB",
                "assetSelection": [{"path": ["tic_image"]}],
            },
            "executionMetadata": {"tags": [{"key": "dagster/partition", "value": "e2e"}]},
        }
        launched = graphql(url, LAUNCH, {"params": params})["launchRun"]
        assert launched["__typename"] == "LaunchRunSuccess", launched
        run_id = launched["run"]["runId"]

        def run_finished():
            status = graphql(url, RUN_STATUS, {"runId": run_id})["runOrError"]["status"]
            return status if status in ("SUCCESS", "FAILURE", "CANCELED") else None

        assert wait_for(run_finished, 180, "the on-demand run") == "SUCCESS"
        runs = graphql(url, MATERIALIZATIONS, {"path": ["tic_image"], "partition": "e2e"})
        assert run_id in {m["runId"] for m in runs["assetOrError"]["assetMaterializations"]}
