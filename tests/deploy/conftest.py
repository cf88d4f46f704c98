"""Offline checks of deploy/: manifests against Kubernetes' own schemas (kubernetes-validate,
strict), the Helm chart rendered by a real `helm` (built by `make helm` through the Go module
proxy), and the values of third-party charts against the keys their schemas define."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from em2q_resources.settings import PROJECT_ROOT

DEPLOY = PROJECT_ROOT / "deploy"
CHART = DEPLOY / "chart" / "em2q"
#: the oldest Kubernetes release we support and the newest kubernetes-validate knows
KUBERNETES_VERSIONS = ("1.30.0", kubernetes_validate.latest_version())
HELM_FROM_MAKE = PROJECT_ROOT / ".cache" / "bin" / "helm"


def load_documents(path: Path) -> list[dict[str, Any]]:
    with path.open(encoding="utf-8") as stream:
        return [doc for doc in yaml.safe_load_all(stream) if doc]


def validate_strict(doc: dict[str, Any], version: str) -> None:
    """kubernetes-validate --strict: unknown fields and wrong types fail."""
    kubernetes_validate.validate(doc, version, strict=True)


def find(docs: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    matches = [
        d for d in docs if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)
    ]
    assert len(matches) == 1, f"expected one {kind} {name or ''}, found {len(matches)}"
    return matches[0]


def granted(role: dict[str, Any]) -> set[tuple[str, str, str]]:
    """What an RBAC Role grants, as (API group, resource, verb) triples."""
    return {
        (group, resource, verb)
        for rule in role["rules"]
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }


def admitted(pod_labels: dict[str, str], policy: dict[str, Any], port: int) -> bool:
    """Whether a pod of the same namespace with these labels may reach `port` (matchLabels
    peers only, as our policies use)."""
    for rule in policy["spec"]["ingress"]:
        if port not in {p["port"] for p in rule["ports"]}:
            continue
        for peer in rule["from"]:
            if "namespaceSelector" in peer:
                continue
            if peer["podSelector"]["matchLabels"].items() <= pod_labels.items():
                return True
    return False


@pytest.fixture(scope="session")
def k8s_manifests() -> list[dict[str, Any]]:
    docs = [doc for path in sorted((DEPLOY / "k8s").glob("*.yaml")) for doc in load_documents(path)]
    assert docs, "deploy/k8s/ holds no manifests"
    return docs


@pytest.fixture(scope="session")
def dagster_values() -> dict[str, Any]:
    return load_documents(DEPLOY / "helm" / "dagster-values.yaml")[0]


@pytest.fixture(scope="session")
def jupyterhub_values() -> dict[str, Any]:
    return load_documents(DEPLOY / "helm" / "jupyterhub-values.yaml")[0]


@pytest.fixture(scope="session")
def helm_binary() -> str:
    """`helm` from `make helm` (.cache/bin) or PATH; the chart tests skip only without it."""
    if HELM_FROM_MAKE.exists():
        return str(HELM_FROM_MAKE)
    found = shutil.which("helm")
    if found is None:
        pytest.skip("helm is not installed: run `make helm` (go install helm.sh/helm/v3/cmd/helm)")
    return found


class Helm:
    """`helm template` of the project's chart with Helm's state kept in a temporary folder."""

    def __init__(self, binary: str, home: Path) -> None:
        self.binary = binary
        self.env = {
            **os.environ,
            "HELM_CACHE_HOME": str(home / "cache"),
            "HELM_CONFIG_HOME": str(home / "config"),
            "HELM_DATA_HOME": str(home / "data"),
        }

    def run(self, *args: str) -> str:
        done = subprocess.run(
            [self.binary, *args],
            env=self.env,
            capture_output=True,
            text=True,
            encoding="utf-8",
            timeout=120,
        )
        assert done.returncode == 0, f"helm {' '.join(args)} failed:\n{done.stderr}"
        return done.stdout

    def template(self, *sets: str, namespace: str = "em2q") -> list[dict[str, Any]]:
        args = ["template", "em2q", str(CHART), "--namespace", namespace]
        # the chart declares kubeVersion >=1.30; a helm built by `go install` assumes 1.20
        args += ["--kube-version", KUBERNETES_VERSIONS[0]]
        for assignment in sets:
            args += ["--set", assignment]
        return [doc for doc in yaml.safe_load_all(self.run(*args)) if doc]


@pytest.fixture(scope="session")
def helm(helm_binary: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Helm]:
    yield Helm(helm_binary, tmp_path_factory.mktemp("helm-home"))
