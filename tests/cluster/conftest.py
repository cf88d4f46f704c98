"""A real Kubernetes control plane for the session: etcd, kube-apiserver, kube-controller-manager
and kube-scheduler built from the Go module sources (`make kubernetes`) and started on
127.0.0.1 by em2q_resources.local_kubernetes; a node and Argo on top for the tests that run
pods (`make test-cluster`). The fixtures are package-scoped: the cluster stops once
tests/cluster is done, instead of idling through the rest of `make test`."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes.client
import kubernetes.config
import pytest
from kubernetes.dynamic import DynamicClient

from em2q_resources.local_argo import LocalArgo
from em2q_resources.local_kubernetes import (
    PLATFORM_IMAGE_NAME,
    PLATFORM_IMAGE_SCRIPT,
    STEP_IMAGE_NAME,
    STEP_IMAGE_SCRIPT,
    KubernetesSetupError,
    LocalKubernetes,
    LocalNode,
    built_components,
    container_support_problem,
)
from em2q_resources.settings import Settings

FIELD_MANAGER = "em2q-tests"


@pytest.fixture(scope="package")
def kubernetes_cluster() -> Iterator[LocalKubernetes]:
    """Fails (never skips) when the control plane is missing: `make test` builds it first
    (`make control-plane`), `make test-cluster` the controllers too."""
    settings = Settings.from_env()
    try:
        components = built_components(settings.cache_dir)
    except KubernetesSetupError as exc:
        pytest.fail(str(exc), pytrace=False)
    cluster = LocalKubernetes.from_settings(settings, components=components)
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(scope="package")
def kubernetes_node(kubernetes_cluster: LocalKubernetes) -> Iterator[LocalNode]:
    """A kubelet + containerd node on the session's cluster; fails without them, and skips,
    naming the exact error, only on a machine that cannot run containers at all."""
    problem = container_support_problem()
    if problem:  # the machine, not the platform: named in the test report (pytest -rs)
        pytest.skip(f"this machine cannot run containers: {problem}")
    node = LocalNode(kubernetes_cluster)
    try:
        node.start()
    except KubernetesSetupError as exc:
        pytest.fail(str(exc), pytrace=False)
    try:
        yield node
    finally:
        node.stop()


def _load_image(node: LocalNode, script: Path, name: str) -> str:
    try:
        return node.load_image(script, name)
    except KubernetesSetupError as exc:
        pytest.fail(str(exc), pytrace=False)


@pytest.fixture(scope="package")
def step_image(kubernetes_node: LocalNode) -> str:
    """The step image (deploy/local-cluster/step-image.sh, cached) imported into the node."""
    return _load_image(kubernetes_node, STEP_IMAGE_SCRIPT, STEP_IMAGE_NAME)


@pytest.fixture(scope="package")
def platform_image(kubernetes_node: LocalNode) -> str:
    """The platform image (deploy/local-cluster/platform-image.sh: the whole code location,
    cached by content hash) imported into the node; ``imagePullPolicy: Never``."""
    return _load_image(kubernetes_node, PLATFORM_IMAGE_SCRIPT, PLATFORM_IMAGE_NAME)


@pytest.fixture(scope="package")
def kubeconfig(kubernetes_cluster: LocalKubernetes) -> Path:
    assert kubernetes_cluster.kubeconfig is not None
    return kubernetes_cluster.kubeconfig


@pytest.fixture(scope="package")
def api_client(kubeconfig: Path) -> kubernetes.client.ApiClient:
    return kubernetes.config.new_client_from_config(config_file=str(kubeconfig))


@pytest.fixture(scope="package")
def kube(api_client: kubernetes.client.ApiClient) -> Kube:
    return Kube(DynamicClient(api_client))


class Kube:
    """Server-side apply of plain dicts, as `kubectl apply --server-side [--dry-run=server]`
    does, with unknown fields an error (fieldValidation=Strict)."""

    def __init__(self, dynamic: DynamicClient) -> None:
        self.dynamic = dynamic

    def resource(self, doc: dict[str, Any]):
        return self.dynamic.resources.get(api_version=doc["apiVersion"], kind=doc["kind"])

    def apply(
        self, doc: dict[str, Any], *, dry_run: bool = True, namespace: str = "default"
    ) -> dict[str, Any]:
        """The object as the server stored it (or would have: ``dry_run``); raises
        ``kubernetes.client.ApiException`` with the server's reasons."""
        resource = self.resource(doc)
        meta = doc["metadata"]
        path = resource.path(
            name=meta["name"],
            namespace=meta.get("namespace", namespace) if resource.namespaced else None,
        )
        query = [("fieldManager", FIELD_MANAGER), ("fieldValidation", "Strict"), ("force", "true")]
        if dry_run:
            query.append(("dryRun", "All"))
        answer = self.dynamic.client.call_api(
            path,
            "PATCH",
            query_params=query,
            header_params={
                "Content-Type": "application/apply-patch+yaml",
                "Accept": "application/json",
            },
            body=doc,
            auth_settings=["BearerToken"],
            _return_http_data_only=True,
            _preload_content=False,
        )
        return json.loads(answer.data)

    def create(self, doc: dict[str, Any], *, namespace: str = "default") -> dict[str, Any]:
        """A dry-run POST, as dagster-k8s creates pods and Jobs (``create_namespaced_*``)."""
        resource = self.resource(doc)
        path = resource.path(namespace=namespace if resource.namespaced else None)
        answer = self.dynamic.client.call_api(
            path,
            "POST",
            query_params=[("dryRun", "All"), ("fieldValidation", "Strict")],
            header_params={"Content-Type": "application/json", "Accept": "application/json"},
            body=doc,
            auth_settings=["BearerToken"],
            _return_http_data_only=True,
            _preload_content=False,
        )
        return json.loads(answer.data)

    def get(self, api_version: str, kind: str, name: str, namespace: str | None = None):
        resource = self.dynamic.resources.get(api_version=api_version, kind=kind)
        return resource.get(name=name, namespace=namespace).to_dict()

    def namespace(self, name: str) -> str:
        """Create a namespace for real with its default ServiceAccount, which the
        ServiceAccount admission plugin needs for pods. The controller-manager makes it too
        when it runs; `make test`'s control plane has none (applying it twice is harmless)."""
        self.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}},
                   dry_run=False)  # fmt: skip
        self.apply({"apiVersion": "v1", "kind": "ServiceAccount",
                    "metadata": {"name": "default", "namespace": name}},
                   dry_run=False, namespace=name)  # fmt: skip
        return name


@pytest.fixture(scope="package")
def argo(kubernetes_node: LocalNode) -> Iterator[LocalArgo]:
    """Argo's workflow controller (v4.0.5, built from the module sources, tests only) on the
    session's cluster, its argoexec image imported into the node; fails without the binaries
    (`make argo`)."""
    controller = LocalArgo(kubernetes_node.cluster, kubernetes_node)
    try:
        controller.start()
    except KubernetesSetupError as exc:
        pytest.fail(str(exc), pytrace=False)
    try:
        yield controller
    finally:
        controller.stop()
