"""A Dagster run with the ``k8s_job_executor`` (EM2Q_RUN_EXECUTOR=k8s_job) on the local node:
each step is a Kubernetes Job whose pod runs ``dagster api execute_step`` in the platform
image (host network: Elasticsearch and the S3 API server on loopback; the run's SQLite
DAGSTER_HOME mounted from the host at the same path). The chunks it writes are byte-identical
to an in-process run's, and a step whose pod is killed mid-way is run again by the executor;
the measurement then ends READY."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import fsspec
import kubernetes.client
import pytest
import yaml

from em2q.setup_file import read_setup
from em2q.upload import upload_measurement
from em2q_assets.definitions import build_definitions
from em2q_assets.k8s import STEP_KIND_TAG, instance_run_launcher
from em2q_resources.connections import set_up_metadata_store
from em2q_resources.launcher import (
    DEFAULT_CONFIG_MAP,
    DEFAULT_SECRET,
    StepLauncherResource,
    step_resources,
)
from em2q_resources.metadata.store import MetadataStore
from em2q_resources.settings import PROJECT_ROOT, Settings
from em2q_resources.storage import StorageResource
from em2q_resources.workflows import WORKFLOWS
from tests.cluster.conftest import Kube
from tests.em2q_resources.test_launcher import EXAMPLE
from tests.fixtures.s3 import S3Endpoint

#: the first test's set-up builds the platform image when the lock changed (~5 min here)
pytestmark = pytest.mark.timeout(1200)
CHUNKS = 2
#: a bound against a hang (pods start the whole code location), not a speed figure
RUN_TIMEOUT_S = 600


@dataclass
class Measurement:
    """The example measurement uploaded to S3, ingested, and its chunks written in process."""

    id: str
    settings: Settings
    env: dict[str, str]  # the run's environment: EM2Q_* settings, DAGSTER_HOME, credentials
    home: Path
    fs: fsspec.AbstractFileSystem
    chunks_in_process: dict[str, bytes]

    @property
    def chunks_root(self) -> str:
        return f"{self.settings.storage.removeprefix('s3://')}/results/{self.id}/spectra_chunks"

    def chunk_arrays(self) -> dict[str, bytes]:
        """Every ``.npy`` file of the measurement's chunks (manifests name runs and times)."""
        root = self.chunks_root
        found = sorted(p for p in self.fs.find(root) if p.endswith(".npy"))
        return {path.removeprefix(root): self.fs.cat(path) for path in found}

    def remove_chunks(self) -> None:
        """So that what a run is checked against is what it wrote itself."""
        if self.fs.exists(self.chunks_root):
            self.fs.rm(self.chunks_root, recursive=True)

    def command(self) -> list[str]:
        return [
            sys.executable, "-m", "dagster", "asset", "materialize",
            "-m", "em2q_assets.definitions", "-a", "defs", "--select", "spectra_chunks",
            "--partition-range", f"{self.id}|0...{self.id}|{CHUNKS - 1}",
        ]  # fmt: skip


@pytest.fixture(scope="module")
def measurement(
    elasticsearch_url: str, s3_endpoint: S3Endpoint, tmp_path_factory, platform_image: str
) -> Iterator[Measurement]:
    store = MetadataStore.connect(elasticsearch_url, index_prefix=f"test-{uuid.uuid4().hex[:8]}")
    set_up_metadata_store(store)
    home = tmp_path_factory.mktemp("dagster-home")
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n", encoding="utf-8")
    storage = f"s3://{s3_endpoint.bucket()}/em2q"
    settings = Settings(
        elasticsearch_url=elasticsearch_url,
        index_prefix=store.prefix,
        storage=storage,
        s3_endpoint_url=s3_endpoint.endpoint_url,
        spectra_chunks=CHUNKS,
        chunk_workers=1,
        cache_dir=tmp_path_factory.mktemp("cache"),
    )
    # what every process of the run reads: the orchestrator here, the step pods from the
    # ConfigMap (EM2Q_*) and the Secret (credentials)
    env = {
        "EM2Q_ELASTICSEARCH_URL": elasticsearch_url,
        "EM2Q_INDEX_PREFIX": store.prefix,
        "EM2Q_STORAGE": storage,
        "EM2Q_S3_ENDPOINT_URL": s3_endpoint.endpoint_url,
        "EM2Q_SPECTRA_CHUNKS": str(CHUNKS),
        "EM2Q_CHUNK_WORKERS": "1",
        "EM2Q_RUN_EXECUTOR": "k8s_job",
        "EM2Q_IMAGE": platform_image,
        "EM2Q_STEP_HOST_NETWORK": "1",
        "EM2Q_STEP_HOST_PATHS": str(home),
        "AWS_ACCESS_KEY_ID": s3_endpoint.key,
        "AWS_SECRET_ACCESS_KEY": s3_endpoint.secret,
    }
    with pytest.MonkeyPatch.context() as patch:
        for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
            patch.setenv(name, env[name])
        m = upload_measurement(
            EXAMPLE,
            setup=read_setup(PROJECT_ROOT / "examples" / "setup.yaml"),
            store=store,
            storage=StorageResource.from_settings(settings),
            progress=False,
            cache_dir=settings.cache_dir,
        ).id
        instance = dg.DagsterInstance.from_config(str(home))
        instance.add_dynamic_partitions("measurement", [m])
        defs = build_definitions(settings)  # in process: the reference run
        assert dg.materialize(list(defs.assets), selection=["raw_measurement"], partition_key=m,
                              instance=instance, resources=defs.resources).success  # fmt: skip
        for chunk in range(CHUNKS):
            key = dg.MultiPartitionKey({"measurement": m, "spectra_chunk": str(chunk)})
            assert dg.materialize(list(defs.assets), selection=["spectra_chunks"],
                                  partition_key=key, instance=instance,
                                  resources=defs.resources).success  # fmt: skip
        fs = fsspec.filesystem("s3", **s3_endpoint.storage_options, skip_instance_cache=True)
        done = Measurement(m, settings, env, home, fs, {})
        done.chunks_in_process = done.chunk_arrays()
        assert len(done.chunks_in_process) > CHUNKS  # spectra, TIC and mean sums per chunk
        yield done
    store.drop_all()


def _namespace(kube: Kube, name: str, measurement: Measurement) -> str:
    """A namespace with the settings ConfigMap and the credentials Secret step pods read."""
    kube.namespace(name)
    settings = {k: v for k, v in measurement.env.items() if k.startswith("EM2Q_")}
    kube.apply({"apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": DEFAULT_CONFIG_MAP, "namespace": name},
                "data": {**settings, "EM2Q_NAMESPACE": name}}, dry_run=False)  # fmt: skip
    kube.apply({"apiVersion": "v1", "kind": "Secret",
                "metadata": {"name": DEFAULT_SECRET, "namespace": name},
                "stringData": {k: measurement.env[k]
                               for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")}},
               dry_run=False)  # fmt: skip
    return name


def _start_run(measurement: Measurement, namespace: str, kubeconfig: Path) -> subprocess.Popen:
    """``dagster asset materialize`` of the measurement's chunks with EM2Q_RUN_EXECUTOR=k8s_job
    (the run in this host's process, each step a Job)."""
    env = {
        **os.environ,
        **measurement.env,
        "EM2Q_NAMESPACE": namespace,
        "EM2Q_KUBECONFIG": str(kubeconfig),
        "DAGSTER_HOME": str(measurement.home),
    }
    launcher = StepLauncherResource.from_settings(Settings.from_env(env))
    instance = {
        "telemetry": {"enabled": False},
        "run_launcher": instance_run_launcher(launcher, str(measurement.home)),
    }
    (measurement.home / "dagster.yaml").write_text(yaml.safe_dump(instance), encoding="utf-8")
    return subprocess.Popen(
        measurement.command(), cwd=PROJECT_ROOT, env=env, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True, encoding="utf-8", start_new_session=True,
    )  # fmt: skip


def _finish(run: subprocess.Popen) -> str:
    try:
        output, _ = run.communicate(timeout=RUN_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.killpg(run.pid, 9)
        output, _ = run.communicate()
        pytest.fail(f"the k8s_job run did not finish in {RUN_TIMEOUT_S}s:\n{output[-4000:]}")
    assert run.returncode == 0, output[-6000:]
    return output


def _jobs(api_client, namespace: str) -> list[kubernetes.client.V1Job]:
    """The run's step Jobs, oldest first, once the Job controller has counted their pods (the
    run learns a step's end from the event log, the Job's status comes a moment later)."""
    batch = kubernetes.client.BatchV1Api(api_client)
    deadline = time.monotonic() + 120
    while True:
        jobs = batch.list_namespaced_job(namespace, label_selector="dagster/op=spectra_chunks")
        if all(job.status.completion_time or job.status.failed for job in jobs.items):
            break
        assert time.monotonic() < deadline, [job.status for job in jobs.items]
        time.sleep(0.5)
    return sorted(jobs.items, key=lambda job: job.metadata.creation_timestamp)


def test_a_k8s_job_run_writes_the_in_process_chunks_with_a_job_per_step(
    measurement: Measurement, kube: Kube, kubeconfig: Path, api_client
) -> None:
    namespace = _namespace(kube, "em2q-jobs", measurement)
    measurement.remove_chunks()
    _finish(_start_run(measurement, namespace, kubeconfig))

    (job,) = _jobs(api_client, namespace)  # one step, one Job
    assert job.status.succeeded == 1
    core = kubernetes.client.CoreV1Api(api_client)
    (pod,) = core.list_namespaced_pod(
        namespace, label_selector=f"job-name={job.metadata.name}"
    ).items
    assert pod.spec.node_name == "localhost" and pod.status.phase == "Succeeded"
    assert pod.metadata.labels[STEP_KIND_TAG] == "chunk"
    resources = pod.spec.containers[0].resources
    assert {"requests": resources.requests, "limits": resources.limits} == step_resources("chunk")
    assert measurement.chunk_arrays() == measurement.chunks_in_process


def test_a_step_whose_pod_is_killed_runs_again_and_the_measurement_ends_ready(
    measurement: Measurement, kube: Kube, kubeconfig: Path, api_client
) -> None:
    namespace = _namespace(kube, "em2q-jobs-killed", measurement)
    measurement.remove_chunks()
    core = kubernetes.client.CoreV1Api(api_client)
    killed: list[str] = []

    def kill_the_first_pod_once_it_runs() -> None:
        deadline = time.monotonic() + RUN_TIMEOUT_S
        while time.monotonic() < deadline:
            pods = core.list_namespaced_pod(namespace, label_selector="dagster/op=spectra_chunks")
            running = [p for p in pods.items if p.status.phase == "Running"]
            if running:
                name = running[0].metadata.name
                # a hard kill, as a lost node or an OOM kill: no chance to report anything
                core.delete_namespaced_pod(name, namespace, grace_period_seconds=0)
                killed.append(name)
                return
            time.sleep(0.2)

    killer = threading.Thread(target=kill_the_first_pod_once_it_runs, daemon=True)
    killer.start()
    output = _finish(_start_run(measurement, namespace, kubeconfig))
    killer.join(timeout=5)

    assert killed, "no step pod was seen running"
    first, retry = _jobs(api_client, namespace)  # the killed step's Job, then its retry's
    assert first.status.failed and not first.status.succeeded
    assert retry.metadata.name == f"{first.metadata.name}-1" and retry.status.succeeded == 1
    assert "STEP_UP_FOR_RETRY" in output
    assert measurement.chunk_arrays() == measurement.chunks_in_process

    # and the measurement still ends READY: the rest of its chain (in process) takes the
    # chunks the retried Job wrote
    defs = build_definitions(measurement.settings)
    instance = dg.DagsterInstance.from_config(str(measurement.home))
    rest = [
        a for a in WORKFLOWS["standard"].assets if a not in ("raw_measurement", "spectra_chunks")
    ]
    chunk_level = [a for a in rest if a == "preprocessed_chunks"]
    with pytest.MonkeyPatch.context() as patch:
        for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
            patch.setenv(name, measurement.env[name])
        for chunk in range(CHUNKS):
            key = dg.MultiPartitionKey({"measurement": measurement.id, "spectra_chunk": str(chunk)})
            assert dg.materialize(list(defs.assets), selection=chunk_level, partition_key=key,
                                  instance=instance, resources=defs.resources).success  # fmt: skip
        assert dg.materialize(list(defs.assets), selection=[a for a in rest if a not in chunk_level],
                              partition_key=measurement.id, instance=instance,
                              resources=defs.resources).success  # fmt: skip
    store = MetadataStore.connect(
        measurement.settings.elasticsearch_url, index_prefix=measurement.settings.index_prefix
    )
    status = store.get(store.schema.Measurement, measurement.id).doc.status
    assert status == store.schema.MeasurementStatus.READY
