"""The project's chart on a real apiserver: `helm install` creates every object it renders,
and the MinIO option's objects (its post-install Job too) pass a server-side dry-run."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from tests.cluster.conftest import Kube
from tests.deploy.conftest import CHART, HELM_FROM_MAKE, Helm

RELEASE = "em2q"


@pytest.fixture(scope="module")
def helm_on_cluster(kubeconfig: Path, tmp_path_factory: pytest.TempPathFactory) -> Helm:
    """`helm` from `make helm`; fails (never skips) without it: `make test` builds it."""
    if not HELM_FROM_MAKE.exists():
        pytest.fail(f"{HELM_FROM_MAKE} is missing: run `make helm`", pytrace=False)
    helm = Helm(str(HELM_FROM_MAKE), tmp_path_factory.mktemp("helm-home"))
    helm.env["KUBECONFIG"] = str(kubeconfig)
    return helm


def test_helm_install_creates_every_object_of_the_chart(kube: Kube, helm_on_cluster: Helm) -> None:
    namespace = "em2q-chart"
    helm_on_cluster.run("install", RELEASE, str(CHART), "--namespace", namespace,
                        "--create-namespace", "--set", "secret.create=true")  # fmt: skip
    status = yaml.safe_load(
        helm_on_cluster.run("status", RELEASE, "--namespace", namespace, "-o", "yaml")
    )
    assert status["info"]["status"] == "deployed"
    manifest = helm_on_cluster.run("get", "manifest", RELEASE, "--namespace", namespace)
    docs = [doc for doc in yaml.safe_load_all(manifest) if doc]
    kinds = {doc["kind"] for doc in docs}
    assert {"ConfigMap", "Secret", "Role", "RoleBinding", "NetworkPolicy"} <= kinds
    for doc in docs:
        stored = kube.get(doc["apiVersion"], doc["kind"], doc["metadata"]["name"], namespace)
        assert stored["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "Helm"
        if doc["kind"] == "ConfigMap":
            assert stored["data"] == doc["data"]


def test_the_charts_minio_option_is_admitted_by_the_server(
    kube: Kube, helm_on_cluster: Helm
) -> None:
    namespace = kube.namespace("em2q-minio")
    docs = helm_on_cluster.template("minio.enabled=true", "secret.create=true",
                                    namespace=namespace)  # fmt: skip
    assert {"StatefulSet", "Service", "Job"} <= {doc["kind"] for doc in docs}
    for doc in docs:
        stored = kube.apply(doc, namespace=namespace)
        assert stored["metadata"]["namespace"] == namespace
