"""Values for Dagster's and Zero to JupyterHub's official charts: keys their schemas define,
wired to the project's image, manifests and code location."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from em2q_resources.settings import PROJECT_ROOT
from tests.deploy.chart_keys import DAGSTER_ENUMS, DAGSTER_KEYS, Z2JH_ENUMS, Z2JH_KEYS
from tests.deploy.conftest import KUBERNETES_VERSIONS, find, validate_strict

PLATFORM_LABEL = {"app.kubernetes.io/part-of": "em2q"}


def unknown_keys(values: Any, known: dict[str, set[str]], path: str = "") -> list[str]:
    """Keys under paths listed in `known` that the chart's schema does not define there."""
    problems: list[str] = []
    if isinstance(values, list):
        for item in values:
            problems += unknown_keys(item, known, f"{path}[]")
    elif isinstance(values, dict) and path in known:
        for key, value in values.items():
            child = f"{path}.{key}" if path else key
            if key not in known[path]:
                problems.append(child)
            else:
                problems += unknown_keys(value, known, child)
    return problems


def values_at(values: Any, path: str) -> list[Any]:
    found = [values]
    for part in path.split("."):
        many = part.endswith("[]")
        key = part.removesuffix("[]")
        found = [item.get(key) for item in found if isinstance(item, dict) and key in item]
        if many:
            found = [element for item in found for element in item]
    return found


def test_unknown_key_detection_catches_a_typo() -> None:
    assert unknown_keys({"runLauncher": {"typ": "K8sRunLauncher"}}, DAGSTER_KEYS) == [
        "runLauncher.typ"
    ]


def test_dagster_values_use_only_keys_of_the_charts_schema(dagster_values: dict) -> None:
    assert unknown_keys(dagster_values, DAGSTER_KEYS) == []
    for path, allowed in DAGSTER_ENUMS.items():
        for value in values_at(dagster_values, path):
            assert value in allowed, f"{path}: {value!r}"


def test_jupyterhub_values_use_only_keys_of_the_charts_schema(jupyterhub_values: dict) -> None:
    assert unknown_keys(jupyterhub_values, Z2JH_KEYS) == []
    for path, allowed in Z2JH_ENUMS.items():
        for value in values_at(jupyterhub_values, path):
            assert value in allowed, f"{path}: {value!r}"


def test_dagster_runs_our_code_location_with_k8s_run_launcher_and_the_daemon(
    dagster_values: dict,
) -> None:
    (deployment,) = dagster_values["dagster-user-deployments"]["deployments"]
    workspace = yaml.safe_load((PROJECT_ROOT / "workspace.yaml").read_text(encoding="utf-8"))
    module = workspace["load_from"][0]["python_module"]
    args = deployment["dagsterApiGrpcArgs"]
    assert args[args.index("--module-name") + 1] == module["module_name"]
    assert args[args.index("--attribute") + 1] == module["attribute"]
    assert deployment["includeConfigInLaunchedRuns"] == {"enabled": True}
    assert dagster_values["runLauncher"]["type"] == "K8sRunLauncher"
    assert dagster_values["runLauncher"]["config"]["k8sRunLauncher"]["loadInclusterConfig"] is True
    assert dagster_values["dagsterDaemon"]["enabled"] is True
    assert dagster_values["dagsterDaemon"]["sensors"]["useThreads"] is True
    # the run/event storage is PostgreSQL whose password comes from a Secret, not the values
    assert "postgresqlPassword" not in dagster_values["postgresql"]
    assert dagster_values["generatePostgresqlPasswordSecret"] is False


def test_pods_that_query_elasticsearch_carry_the_label_the_network_policy_admits(
    dagster_values: dict, jupyterhub_values: dict
) -> None:
    (deployment,) = dagster_values["dagster-user-deployments"]["deployments"]
    launcher = dagster_values["runLauncher"]["config"]["k8sRunLauncher"]
    for labels in (
        deployment["labels"],
        launcher["labels"],
        jupyterhub_values["singleuser"]["extraLabels"],
    ):
        assert PLATFORM_LABEL.items() <= labels.items()


def test_code_server_and_run_pods_get_the_settings_configmap_and_credentials_secret(
    dagster_values: dict, k8s_manifests: list[dict]
) -> None:
    config_map = find(k8s_manifests, "ConfigMap")["metadata"]["name"]
    secret = find(k8s_manifests, "Secret")["metadata"]["name"]
    (deployment,) = dagster_values["dagster-user-deployments"]["deployments"]
    launcher = dagster_values["runLauncher"]["config"]["k8sRunLauncher"]
    for pod in (deployment, launcher):
        assert pod["envConfigMaps"] == [{"name": config_map}]
        assert pod["envSecrets"] == [{"name": secret}]


def test_step_pods_run_the_code_location_image(
    dagster_values: dict, k8s_manifests: list[dict]
) -> None:
    (deployment,) = dagster_values["dagster-user-deployments"]["deployments"]
    image = f"{deployment['image']['repository']}:{deployment['image']['tag']}"
    assert find(k8s_manifests, "ConfigMap")["data"]["EM2Q_IMAGE"] == image


@pytest.mark.parametrize(
    "key", ["EM2Q_ELASTICSEARCH_URL", "EM2Q_STORAGE", "EM2Q_S3_ENDPOINT_URL", "EM2Q_INDEX_PREFIX"]
)
def test_notebooks_read_the_platform_settings_from_the_configmap(
    jupyterhub_values: dict, k8s_manifests: list[dict], key: str
) -> None:
    config_map = find(k8s_manifests, "ConfigMap")
    ref = jupyterhub_values["singleuser"]["extraEnv"][key]["valueFrom"]["configMapKeyRef"]
    assert ref == {"name": config_map["metadata"]["name"], "key": key}
    assert key in config_map["data"]


def test_notebooks_get_no_platform_credentials(jupyterhub_values: dict) -> None:
    for name, entry in jupyterhub_values["singleuser"]["extraEnv"].items():
        secret = entry.get("valueFrom", {}).get("secretKeyRef") if isinstance(entry, dict) else None
        if secret:
            assert secret["name"] != "em2q-credentials", name
            assert secret["optional"] is True


def test_notebooks_may_reach_elasticsearch_through_the_user_pod_network_policy(
    jupyterhub_values: dict,
) -> None:
    egress = jupyterhub_values["singleuser"]["networkPolicy"]["egress"]
    targets = {
        (
            peer["podSelector"]["matchLabels"].get("elasticsearch.k8s.elastic.co/cluster-name"),
            rule["ports"][0]["port"],
        )
        for rule in egress
        for peer in rule["to"]
    }
    assert ("em2q", 9200) in targets


def as_pod(name: str, settings: dict) -> dict:
    """The Kubernetes-typed parts of a chart's pod settings, embedded where the chart puts them."""
    container = {"name": name, "image": "registry.example.org/em2q:0.1.0"}
    for key in ("resources", "securityContext"):
        if key in settings:
            container[key] = settings[key]
    for key in ("envConfigMaps", "envSecrets"):
        ref = "configMapRef" if key == "envConfigMaps" else "secretRef"
        container.setdefault("envFrom", []).extend({ref: item} for item in settings.get(key, []))
    spec = {"containers": [container]}
    if "podSecurityContext" in settings:
        spec["securityContext"] = settings["podSecurityContext"]
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": settings.get("labels", {})},
        "spec": spec,
    }


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_dagster_pod_settings_are_valid_kubernetes_types(
    dagster_values: dict, version: str
) -> None:
    (deployment,) = dagster_values["dagster-user-deployments"]["deployments"]
    pods = {
        "code-server": deployment,
        "run": dagster_values["runLauncher"]["config"]["k8sRunLauncher"],
        "webserver": dagster_values["dagsterWebserver"],
        "daemon": dagster_values["dagsterDaemon"],
    }
    for name, settings in pods.items():
        validate_strict(as_pod(name, settings), version)


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_notebook_env_and_egress_are_valid_kubernetes_types(
    jupyterhub_values: dict, version: str
) -> None:
    singleuser = jupyterhub_values["singleuser"]
    env = [{"name": name, **entry} for name, entry in singleuser["extraEnv"].items()]
    pod = as_pod("notebook", {"labels": singleuser["extraLabels"]})
    pod["spec"]["containers"][0]["env"] = env
    validate_strict(pod, version)
    policy = {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": "singleuser"},
        "spec": {
            "podSelector": {"matchLabels": singleuser["extraLabels"]},
            "policyTypes": ["Egress"],
            "egress": singleuser["networkPolicy"]["egress"],
        },
    }
    validate_strict(policy, version)


def test_the_dagster_ui_is_served_only_through_the_authenticating_ingress(
    dagster_values: dict,
) -> None:
    ingress = dagster_values["ingress"]
    assert ingress["enabled"] is True
    annotations = ingress["annotations"]
    auth_url = annotations["nginx.ingress.kubernetes.io/auth-url"]
    assert auth_url.startswith("http://oauth2-proxy.em2q.svc.cluster.local/oauth2/auth")
    assert "allowed_groups=em2q-admins" in auth_url  # only admins, as role rules would say
    assert "/oauth2/start" in annotations["nginx.ingress.kubernetes.io/auth-signin"]
    assert ingress["dagsterWebserver"]["tls"]["enabled"] is True
    assert dagster_values["dagsterWebserver"]["service"]["type"] == "ClusterIP"
