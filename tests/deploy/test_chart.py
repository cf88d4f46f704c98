"""deploy/chart/em2q rendered by a real `helm template` and validated with kubernetes-validate;
with its defaults it is exactly deploy/k8s/."""

from __future__ import annotations

import copy
import os
import subprocess
import sys
import uuid
from typing import Any

import pytest
import s3fs

from em2q_resources.settings import Settings
from tests.deploy.conftest import CHART, KUBERNETES_VERSIONS, Helm, admitted, find, validate_strict

#: what a plain `kubectl apply -f deploy/k8s/` has and the chart adds only for Helm's bookkeeping
HELM_ONLY_LABELS = {"app.kubernetes.io/managed-by"}
AS_PLAIN_MANIFESTS = ("namespace.create=true", "secret.create=true")


def without_helm_labels(doc: dict[str, Any]) -> dict[str, Any]:
    doc = copy.deepcopy(doc)
    labels = doc["metadata"].get("labels", {})
    for key in HELM_ONLY_LABELS:
        labels.pop(key, None)
    return doc


def by_identity(docs: list[dict[str, Any]]) -> dict[tuple[str, str], dict[str, Any]]:
    return {(d["kind"], d["metadata"]["name"]): d for d in docs}


def test_helm_lint_passes(helm: Helm) -> None:
    helm.run("lint", "--strict", "--kube-version", KUBERNETES_VERSIONS[0], str(CHART))


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize(
    "sets",
    [(), AS_PLAIN_MANIFESTS, ("minio.enabled=true",), ("minio.enabled=true", "secret.create=true")],
    ids=["defaults", "plain-manifests", "minio", "minio-with-secret"],
)
def test_rendered_chart_is_valid_kubernetes_in_strict_mode(
    helm: Helm, sets: tuple[str, ...], version: str
) -> None:
    docs = helm.template(*sets)
    assert docs
    for doc in docs:
        validate_strict(doc, version)


def test_chart_renders_exactly_the_plain_manifests(
    helm: Helm, k8s_manifests: list[dict[str, Any]]
) -> None:
    rendered = by_identity([without_helm_labels(d) for d in helm.template(*AS_PLAIN_MANIFESTS)])
    plain = by_identity(k8s_manifests)
    assert rendered.keys() == plain.keys()
    for identity, doc in plain.items():
        assert rendered[identity] == doc, f"{identity} differs between chart and deploy/k8s/"


def test_chart_follows_its_namespace(helm: Helm) -> None:
    docs = helm.template(namespace="msi-lab")
    assert {d["metadata"]["namespace"] for d in docs} == {"msi-lab"}
    config = find(docs, "ConfigMap")["data"]
    assert config["EM2Q_ELASTICSEARCH_URL"] == "http://em2q-es-http.msi-lab.svc:9200"
    assert config["EM2Q_NAMESPACE"] == "msi-lab"
    for binding in (d for d in docs if d["kind"] == "RoleBinding"):  # launcher, Argo executor
        assert binding["subjects"][0]["namespace"] == "msi-lab"


def test_minio_option_points_the_platform_at_the_in_cluster_minio(helm: Helm) -> None:
    docs = helm.template("minio.enabled=true")
    settings = Settings.from_env(find(docs, "ConfigMap")["data"])
    service = find(docs, "Service", "em2q-minio")
    assert settings.s3_endpoint_url == "http://em2q-minio.em2q.svc:9000"
    assert service["spec"]["ports"][0]["port"] == 9000
    assert settings.storage == "s3://em2q/em2q"
    statefulset = find(docs, "StatefulSet", "em2q-minio")
    pod_labels = statefulset["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= pod_labels.items()
    policy = find(docs, "NetworkPolicy", "minio-platform-only")
    assert policy["spec"]["podSelector"]["matchLabels"].items() <= pod_labels.items()
    assert {rule["ports"][0]["port"] for rule in policy["spec"]["ingress"]} == {9000}
    bucket_job_labels = find(docs, "Job")["spec"]["template"]["metadata"]["labels"]
    assert admitted(bucket_job_labels, policy, 9000)
    # MinIO itself is no platform client of Elasticsearch
    assert not admitted(
        pod_labels, find(docs, "NetworkPolicy", "elasticsearch-platform-only"), 9200
    )


def test_notebooks_may_reach_the_charts_minio(helm: Helm, jupyterhub_values: dict) -> None:
    docs = helm.template("minio.enabled=true")
    pod_labels = find(docs, "StatefulSet", "em2q-minio")["spec"]["template"]["metadata"]["labels"]
    egress = jupyterhub_values["singleuser"]["networkPolicy"]["egress"]
    assert any(
        peer["podSelector"]["matchLabels"].items() <= pod_labels.items()
        and rule["ports"][0]["port"] == 9000
        for rule in egress
        for peer in rule["to"]
    )


def test_minio_bucket_job_creates_the_bucket_on_a_real_s3_api(helm: Helm, s3_endpoint) -> None:
    """The job's script, run as the pod would run it, against moto's S3 server; twice, as a
    post-upgrade hook runs it again."""
    bucket = f"em2q-chart-{uuid.uuid4().hex[:8]}"
    job = find(helm.template("minio.enabled=true", f"minio.bucket={bucket}"), "Job")
    (container,) = job["spec"]["template"]["spec"]["containers"]
    env = {
        **os.environ,
        "EM2Q_S3_ENDPOINT_URL": s3_endpoint.endpoint_url,
        "AWS_ACCESS_KEY_ID": s3_endpoint.key,
        "AWS_SECRET_ACCESS_KEY": s3_endpoint.secret,
    }
    assert container["command"][0] == "python"
    for _ in range(2):
        done = subprocess.run(
            [sys.executable, *container["command"][1:], *container["args"]],
            env=env,
            capture_output=True,
            text=True,
            encoding="utf-8",
            timeout=60,
        )
        assert done.returncode == 0, done.stderr
    fs = s3fs.S3FileSystem(**s3_endpoint.storage_options, skip_instance_cache=True)
    assert fs.exists(bucket)
