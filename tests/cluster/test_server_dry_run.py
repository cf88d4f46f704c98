"""Every manifest of deploy/k8s and deploy/elasticsearch (against ECK's own CRDs) and every
pod/Job body the platform builds passes a server-side dry-run apply on a real kube-apiserver:
admission plugins, defaulting and the API's own validation (stronger than the offline schema
in tests/deploy), with unknown fields an error."""

from __future__ import annotations

import copy
import json
import time
from pathlib import Path
from typing import Any

import kubernetes.client
import pytest
import yaml

from em2q_resources.catalog import STEP_KINDS
from em2q_resources.launcher import StepLauncherResource, step_resources
from em2q_resources.local_kubernetes import KubernetesSetupError, LocalKubernetes, eck_crds_file
from em2q_resources.settings import Settings
from tests.cluster.conftest import Kube
from tests.deploy.conftest import DEPLOY, load_documents
from tests.em2q_resources.k8s_bodies import chunk_step_pod, offline_run_launcher, step_job_bodies

PLATFORM_NAMESPACE = "em2q"
STEP_NAMESPACE = "imaging"
MANIFESTS = sorted((DEPLOY / "k8s").glob("*.yaml"))
IMAGE = "registry.example.org/em2q:0.1.0"


@pytest.fixture(scope="module")
def namespaces(kube: Kube) -> tuple[str, str]:
    return kube.namespace(PLATFORM_NAMESPACE), kube.namespace(STEP_NAMESPACE)


def rejection(exc: kubernetes.client.ApiException) -> str:
    return json.loads(exc.body)["message"]


@pytest.fixture(scope="module")
def chunk_pod() -> dict[str, Any]:
    launcher = StepLauncherResource.from_settings(
        Settings(step_launcher="kubernetes", image=IMAGE, namespace=STEP_NAMESPACE)
    )
    args = ["s3://em2q/measurements/m1/data.imzML", "--k", "4", "--index", "2",
            "--out", "s3://em2q/results/m1/spectra_chunks/raw/chunk-0002/spectra"]  # fmt: skip
    options = {"key": "AKIA-em2q-test", "secret": "not-in-the-pod",
               "client_kwargs": {"endpoint_url": "http://minio.imaging:9000"}}  # fmt: skip
    return chunk_step_pod(launcher, args, options)


@pytest.mark.parametrize("path", MANIFESTS, ids=[p.name for p in MANIFESTS])
def test_each_deploy_manifest_is_accepted_by_a_server_side_dry_run(
    kube: Kube, namespaces: tuple[str, str], path: Path
) -> None:
    docs = load_documents(path)
    assert docs, path
    for doc in docs:
        stored = kube.apply(doc)
        assert stored["kind"] == doc["kind"]
        assert stored["metadata"]["name"] == doc["metadata"]["name"]
        assert doc["metadata"]["labels"].items() <= stored["metadata"]["labels"].items()


def test_the_chunk_step_pod_is_admitted_with_its_kinds_resources(
    kube: Kube, namespaces: tuple[str, str], chunk_pod: dict[str, Any]
) -> None:
    for stored in (
        kube.apply(chunk_pod, namespace=STEP_NAMESPACE),
        kube.create(chunk_pod, namespace=STEP_NAMESPACE),  # as PipesK8sClient submits it
    ):
        (container,) = stored["spec"]["containers"]
        assert container["resources"] == step_resources("chunk")
        assert container["image"] == IMAGE
        # admission filled in what the pod leaves to the cluster
        assert stored["spec"]["serviceAccountName"] == "default"
        assert stored["status"]["phase"] == "Pending"


def test_each_step_job_is_admitted_with_its_kinds_resources(
    kube: Kube, namespaces: tuple[str, str], tmp_path: Path
) -> None:
    settings = Settings(
        elasticsearch_url="http://127.0.0.1:9",
        spectra_chunks=3,
        run_executor="k8s_job",
        image=IMAGE,
        namespace=STEP_NAMESPACE,
    )
    run_launcher = offline_run_launcher(tmp_path, job_namespace=STEP_NAMESPACE)
    seen = set()
    for step_key, job in step_job_bodies(settings, run_launcher):
        stored = kube.apply(job, namespace=STEP_NAMESPACE)
        (container,) = stored["spec"]["template"]["spec"]["containers"]
        assert container["resources"] == step_resources(STEP_KINDS[step_key]), step_key
        seen.add(step_key)
    assert seen == set(STEP_KINDS)


def test_a_misspelt_field_is_rejected_by_the_server_with_its_name(
    kube: Kube, namespaces: tuple[str, str], chunk_pod: dict[str, Any]
) -> None:
    pod = copy.deepcopy(chunk_pod)
    pod["spec"]["containers"][0]["imagePullPolcy"] = "IfNotPresent"
    with pytest.raises(kubernetes.client.ApiException) as applied:
        kube.apply(pod, namespace=STEP_NAMESPACE)
    assert '.spec.containers[name="em2q-step"].imagePullPolcy: field not declared in schema' in (
        rejection(applied.value)
    )
    # created as PipesK8sClient creates it (POST): a Bad Request naming the field
    with pytest.raises(kubernetes.client.ApiException) as created:
        kube.create(pod, namespace=STEP_NAMESPACE)
    assert created.value.status == 400
    assert 'unknown field "spec.containers[0].imagePullPolcy"' in rejection(created.value)


def test_requests_above_limits_are_rejected_by_the_server_naming_the_field(
    kube: Kube, namespaces: tuple[str, str], chunk_pod: dict[str, Any]
) -> None:
    """Schema-valid (both are quantities), but not a pod the API admits."""
    pod = copy.deepcopy(chunk_pod)
    pod["spec"]["containers"][0]["resources"]["requests"]["memory"] = "4Gi"
    with pytest.raises(kubernetes.client.ApiException) as caught:
        kube.apply(pod, namespace=STEP_NAMESPACE)
    assert caught.value.status == 422
    message = rejection(caught.value)
    assert "spec.containers[0].resources.requests" in message
    assert "must be less than or equal to memory limit" in message


ECK_MANIFESTS = sorted((DEPLOY / "elasticsearch").glob("eck-*.yaml"))
ECK_API = "elasticsearch.k8s.elastic.co/v1"


@pytest.fixture(scope="module")
def eck_crds(kube: Kube, kubernetes_cluster: LocalKubernetes) -> None:
    """ECK's CRDs installed for real (from its operator's module; no operator runs), Established,
    so that the Elasticsearch resources are validated against their schemas."""
    try:
        path = eck_crds_file(kubernetes_cluster.cache_dir)
    except KubernetesSetupError as exc:
        pytest.fail(str(exc), pytrace=False)
    crds = [doc for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")) if doc]
    for crd in crds:
        kube.apply(crd, dry_run=False)
    deadline = time.monotonic() + 60
    for crd in crds:
        while True:
            stored = kube.get(crd["apiVersion"], crd["kind"], crd["metadata"]["name"])
            conditions = {c["type"]: c["status"] for c in stored["status"].get("conditions", [])}
            if conditions.get("Established") == "True":
                break
            assert time.monotonic() < deadline, f"{crd['metadata']['name']}: {conditions}"
            time.sleep(0.2)
    kube.dynamic.resources.invalidate_cache()  # discovery learns the new kinds


@pytest.mark.parametrize("path", ECK_MANIFESTS, ids=[p.name for p in ECK_MANIFESTS])
def test_each_eck_resource_is_accepted_by_a_dry_run_against_ecks_crds(
    kube: Kube, namespaces: tuple[str, str], eck_crds: None, path: Path
) -> None:
    (doc,) = load_documents(path)
    assert doc["apiVersion"] == ECK_API
    stored = kube.apply(doc)
    assert stored["kind"] == "Elasticsearch"
    assert stored["spec"]["version"] == doc["spec"]["version"]
    assert stored["spec"]["nodeSets"][0]["count"] == doc["spec"]["nodeSets"][0]["count"]


def test_a_misspelt_eck_field_is_rejected_naming_it(
    kube: Kube, namespaces: tuple[str, str], eck_crds: None
) -> None:
    """The CRD's schema is what validates: a key ECK does not know is an error."""
    (doc,) = load_documents(ECK_MANIFESTS[0])
    doc["spec"]["nodeSets"][0]["cont"] = doc["spec"]["nodeSets"][0].pop("count")
    with pytest.raises(kubernetes.client.ApiException) as caught:
        kube.apply(doc)
    assert "cont" in rejection(caught.value) and "field not declared in schema" in (
        rejection(caught.value)
    )
