"""Workflows on a real Argo controller (v4.0.5 built from the module sources, tests only) on
the local node: the emissary executor (argoexec copied into each pod by its init container, the
wait sidecar recording outputs as WorkflowTaskResults), the DAG's parameter passing, and the
``em2q-measurement`` WorkflowTemplate of ``em2q export-argo`` for one measurement, whose results,
``WorkflowRun`` documents and lineage in Dagster are those of a Dagster run."""

from __future__ import annotations

import hashlib
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import dagster as dg
import fsspec
import pytest
import yaml
from click.testing import CliRunner

from em2q.setup_file import measurement_from_setup, read_setup
from em2q_assets.external_runs import SETTLE_TIME, external_materializations
from em2q_resources.connections import set_up_metadata_store
from em2q_resources.launcher import DEFAULT_CONFIG_MAP, DEFAULT_SECRET
from em2q_resources.local_argo import LocalArgo, executor_role_file
from em2q_resources.metadata import load_schema
from em2q_resources.metadata.schema import utc_now
from em2q_resources.metadata.store import MetadataStore
from em2q_resources.settings import PROJECT_ROOT, Settings
from em2q_resources.storage import StorageResource
from tests.argo_bridge.reference_run import (
    CHUNKS,
    MEASUREMENT,
    definitions,
    materialize_in_dagster,
    result_files,
    runs_of,
    settings_for,
)
from tests.cluster.conftest import Kube
from tests.deploy.conftest import granted
from tests.em2q_assets.conftest import EXAMPLES, register_copy
from tests.fixtures.s3 import S3Endpoint

S = load_schema()

WORKFLOW_API = "argoproj.io/v1alpha1"
RBAC = PROJECT_ROOT / "deploy" / "k8s" / "rbac.yaml"
DONE = {"Succeeded", "Failed", "Error"}


def run_workflow(
    kube: Kube, workflow: dict[str, Any], namespace: str, timeout_s: float = 600.0
) -> dict[str, Any]:
    """Create ``workflow`` and wait until it ends; the finished Workflow object."""
    resource = kube.dynamic.resources.get(api_version=WORKFLOW_API, kind="Workflow")
    name = resource.create(body=workflow, namespace=namespace).metadata.name
    deadline = time.monotonic() + timeout_s
    while True:
        found = resource.get(name=name, namespace=namespace).to_dict()
        if found.get("status", {}).get("phase") in DONE or time.monotonic() > deadline:
            return found
        time.sleep(1.0)


def failure_summary(workflow: dict[str, Any]) -> str:
    status = workflow.get("status", {})
    nodes = status.get("nodes", {}).values()
    failed = [f"{n['displayName']}: {n.get('phase')} {n.get('message', '')}" for n in nodes]
    return f"{status.get('phase')} {status.get('message', '')}\n" + "\n".join(failed)


def grant_the_deploy_executor_role(kube: Kube, argo: LocalArgo, namespace: str) -> None:
    """deploy/k8s/rbac.yaml's executor Role and binding, moved to ``namespace``: what a real
    cluster gets from the manifests. It must grant at least Argo's own recommended Role."""
    docs = [doc for doc in yaml.safe_load_all(RBAC.read_text(encoding="utf-8"))
            if doc["metadata"]["labels"]["app.kubernetes.io/component"] == "argo-executor"]  # fmt: skip
    assert {doc["kind"] for doc in docs} == {"Role", "RoleBinding"}
    argos = yaml.safe_load(executor_role_file(argo.cluster.cache_dir).read_text(encoding="utf-8"))
    (role,) = [doc for doc in docs if doc["kind"] == "Role"]
    assert granted(argos) <= granted(role), granted(argos) - granted(role)
    for doc in docs:
        doc["metadata"]["namespace"] = namespace
        for subject in doc.get("subjects", []):
            subject["namespace"] = namespace
        kube.apply(doc, dry_run=False)


def outputs_of(workflow: dict[str, Any], task: str) -> dict[str, str]:
    (node,) = [n for n in workflow["status"]["nodes"].values() if n["displayName"] == task]
    return {p["name"]: p["value"] for p in node.get("outputs", {}).get("parameters", [])}


def test_a_dag_passes_a_step_output_to_the_next_step(
    kube: Kube, argo: LocalArgo, step_image: str
) -> None:
    namespace = kube.namespace("em2q-argo-dag")
    argo.grant_executor(namespace)
    python = {"image": step_image, "imagePullPolicy": "Never", "command": ["python", "-c"]}
    workflow = {
        "apiVersion": WORKFLOW_API,
        "kind": "Workflow",
        "metadata": {"generateName": "dag-"},
        "spec": {
            "entrypoint": "main",
            "templates": [
                {"name": "main", "dag": {"tasks": [
                    {"name": "produce", "template": "produce"},
                    {"name": "consume", "template": "consume", "depends": "produce",
                     "arguments": {"parameters": [
                         {"name": "n", "value": "{{tasks.produce.outputs.parameters.n}}"}]}},
                ]}},
                {"name": "produce",
                 "container": {**python, "args": ["open('/tmp/n', 'w').write(str(6 * 7))"]},
                 "outputs": {"parameters": [{"name": "n", "valueFrom": {"path": "/tmp/n"}}]}},
                {"name": "consume", "inputs": {"parameters": [{"name": "n"}]},
                 "container": {**python, "args": [
                     "import sys; open('/tmp/m', 'w').write(str(int(sys.argv[1]) + 1))",
                     "{{inputs.parameters.n}}"]},
                 "outputs": {"parameters": [{"name": "m", "valueFrom": {"path": "/tmp/m"}}]}},
            ],
        },
    }  # fmt: skip

    done = run_workflow(kube, workflow, namespace)

    assert done["status"]["phase"] == "Succeeded", failure_summary(done)
    assert outputs_of(done, "produce") == {"n": "42"}
    assert outputs_of(done, "consume") == {"m": "43"}  # 42 reached it through the DAG


@pytest.fixture
def argo_store(elasticsearch_url: str) -> Iterator[MetadataStore]:
    """The Argo side's own indices in the session Elasticsearch (the Dagster side has
    ``metadata_store``'s)."""
    store = MetadataStore.connect(elasticsearch_url, index_prefix=f"test-{uuid.uuid4().hex[:8]}")
    set_up_metadata_store(store)
    yield store
    store.drop_all()


def register_in_storage(store: MetadataStore, storage: StorageResource, fs, measurement: str):
    """The example pair uploaded where an upload puts it (``measurements/<id>/`` of the
    platform's S3 storage) and its UPLOADED Measurement document."""
    files = []
    for suffix, role in ((".imzML", "IMZML"), (".ibd", "IBD")):
        source = EXAMPLES / f"Example_Processed{suffix}"
        uri = storage.url(f"measurements/{measurement}/{source.name}")
        fs.put(str(source), uri)
        files.append({"role": role, "uri": uri, "size_bytes": source.stat().st_size,
                      "checksum_type": "SHA256",
                      "checksum": hashlib.sha256(source.read_bytes()).hexdigest()})  # fmt: skip
    setup = read_setup(PROJECT_ROOT / "examples" / "setup.yaml")
    store.create(
        measurement_from_setup(setup, id=measurement, uploaded_at=utc_now(), files=files),
        refresh=True,
    )


def storage_files(storage: StorageResource, fs) -> dict[str, bytes]:
    base = storage.url("results").removeprefix("s3://")
    return {path.removeprefix(base + "/"): fs.cat(path) for path in sorted(fs.find(base))}


@pytest.mark.timeout(1800)  # the session's node, Argo and platform image start in its setup
def test_the_measurement_template_runs_on_argo_as_a_dagster_run_does(
    kube: Kube,
    argo: LocalArgo,
    platform_image: str,
    s3_endpoint: S3Endpoint,
    s3_root: str,
    metadata_store: MetadataStore,
    argo_store: MetadataStore,
    elasticsearch_url: str,
    tmp_path: Path,
) -> None:
    # the reference: the same measurement materialized by Dagster in this process
    dagster_settings = settings_for(elasticsearch_url, metadata_store.prefix, tmp_path / "dagster")
    register_copy(metadata_store, tmp_path / "upload", "Example_Processed", MEASUREMENT)
    materialize_in_dagster(definitions(dagster_settings))

    # the cluster side: S3 storage and Elasticsearch on the node's loopback, their settings
    # and credentials in the ConfigMap and Secret the templates' containers get (envFrom)
    argo_settings = Settings(
        elasticsearch_url=elasticsearch_url,
        index_prefix=argo_store.prefix,
        storage=s3_root,
        s3_endpoint_url=s3_endpoint.endpoint_url,
        spectra_chunks=CHUNKS,
    )
    storage = StorageResource.from_settings(argo_settings)
    fs = fsspec.filesystem("s3", **s3_endpoint.storage_options, skip_instance_cache=True)
    register_in_storage(argo_store, storage, fs, MEASUREMENT)
    namespace = kube.namespace("em2q-argo")
    grant_the_deploy_executor_role(kube, argo, namespace)
    kube.apply({"apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": DEFAULT_CONFIG_MAP, "namespace": namespace},
                "data": {"EM2Q_ELASTICSEARCH_URL": elasticsearch_url,
                         "EM2Q_INDEX_PREFIX": argo_store.prefix, "EM2Q_STORAGE": s3_root,
                         "EM2Q_S3_ENDPOINT_URL": s3_endpoint.endpoint_url,
                         "EM2Q_SPECTRA_CHUNKS": str(CHUNKS)}}, dry_run=False)  # fmt: skip
    kube.apply({"apiVersion": "v1", "kind": "Secret",
                "metadata": {"name": DEFAULT_SECRET, "namespace": namespace},
                "stringData": {"AWS_ACCESS_KEY_ID": s3_endpoint.key,
                               "AWS_SECRET_ACCESS_KEY": s3_endpoint.secret}},
               dry_run=False)  # fmt: skip

    # `em2q export-argo`, applied as written, and one Workflow from em2q-measurement
    from em2q.cli import main

    command = ["export-argo", "--out", str(tmp_path / "argo"), "--chunks", str(CHUNKS)]
    exported = CliRunner().invoke(main, [*command, "--image", platform_image])
    assert exported.exit_code == 0, exported.output
    for path in sorted((tmp_path / "argo").glob("*.yaml")):
        kube.apply(yaml.safe_load(path.read_text(encoding="utf-8")), dry_run=False,
                   namespace=namespace)  # fmt: skip
    done = run_workflow(kube, {
        "apiVersion": WORKFLOW_API, "kind": "Workflow",
        "metadata": {"generateName": "em2q-measurement-"},
        "spec": {"workflowTemplateRef": {"name": "em2q-measurement"},
                 "arguments": {"parameters": [{"name": "measurement", "value": MEASUREMENT}]}},
    }, namespace)  # fmt: skip
    assert done["status"]["phase"] == "Succeeded", failure_summary(done)
    name = done["metadata"]["name"]

    # the same WorkflowRun documents, as ARGO runs of this Workflow
    dagster_runs, argo_runs = runs_of(metadata_store), runs_of(argo_store)
    assert set(argo_runs) == set(dagster_runs)
    dagster_root = StorageResource(root=dagster_settings.storage).url()
    for key, run in argo_runs.items():
        reference = dagster_runs[key]
        assert (run.engine, run.run_id, run.status) == (
            S.RunEngine.ARGO, name, S.RunStatus.SUCCEEDED), key  # fmt: skip
        assert (run.parameter_set_hash, run.code_version) == (
            reference.parameter_set_hash, reference.code_version)  # fmt: skip
        assert [(o.name, o.uri.replace(storage.url(), ""), o.sha256) for o in run.outputs] == [
            (o.name, o.uri.replace(dagster_root, ""), o.sha256) for o in reference.outputs
        ], key
    # byte-identical results
    dagster_files = result_files(tmp_path / "dagster" / "storage")
    argo_files = storage_files(storage, fs)
    assert set(argo_files) == set(dagster_files)
    assert sum(name.endswith(".npy") for name in argo_files) > 20
    for path, content in argo_files.items():
        if path.endswith(".npy"):
            assert content == dagster_files[path], path
    assert argo_store.get(S.Measurement, MEASUREMENT).doc.status == S.MeasurementStatus.READY

    # Dagster's lineage shows them: the sensor reports every Argo step as a materialization
    argo_definitions = definitions(argo_settings)
    instance = dg.DagsterInstance.ephemeral()
    last = max(datetime.fromisoformat(r.finished_at) for r in argo_runs.values())
    time.sleep(max(0.0, (last + SETTLE_TIME - datetime.now(UTC)).total_seconds()) + 1)
    context = dg.build_sensor_context(
        instance=instance,
        resources={"metadata": argo_definitions.resources["metadata"]},
        definitions=argo_definitions,
    )
    result = external_materializations(context)
    events = {(e.asset_key.path[-1], e.partition): e for e in result.asset_events}
    assert set(events) == set(argo_runs)
    assert {e.metadata["run id"].value for e in events.values()} == {name}
    instance.add_dynamic_partitions("measurement", [MEASUREMENT])
    for event in result.asset_events:
        instance.report_runless_asset_event(event)
    latest = instance.get_latest_materialization_event(dg.AssetKey("qc_report"))
    assert latest.asset_materialization.partition == MEASUREMENT
    assert latest.asset_materialization.metadata["engine"].value == "ARGO"
