"""deploy/k8s/ and deploy/elasticsearch/: valid for Kubernetes 1.30+ and wired to each other."""

from __future__ import annotations

import re
from typing import Any

import pytest

from em2q_resources.elasticsearch_server import ES_VERSION
from em2q_resources.settings import Settings
from tests.deploy.chart_keys import ECK_NODESET_KEYS, ECK_SPEC_KEYS
from tests.deploy.conftest import (
    DEPLOY,
    KUBERNETES_VERSIONS,
    admitted,
    find,
    granted,
    load_documents,
    validate_strict,
)

ECK_PROFILES = {"eck-dev.yaml": 1, "eck-production.yaml": 3}
PLATFORM_LABEL = ("app.kubernetes.io/part-of", "em2q")


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_every_manifest_is_valid_kubernetes_in_strict_mode(
    k8s_manifests: list[dict[str, Any]], version: str
) -> None:
    for doc in k8s_manifests:
        validate_strict(doc, version)


def test_a_misspelt_field_is_rejected_by_the_strict_validation(
    k8s_manifests: list[dict[str, Any]],
) -> None:
    import kubernetes_validate

    broken = {**find(k8s_manifests, "ConfigMap"), "datta": {}}
    with pytest.raises(kubernetes_validate.ValidationError):
        validate_strict(broken, KUBERNETES_VERSIONS[0])


def test_every_resource_lives_in_the_em2q_namespace_with_the_platform_label(
    k8s_manifests: list[dict[str, Any]],
) -> None:
    for doc in k8s_manifests:
        meta = doc["metadata"]
        assert meta.get("namespace", "em2q") == "em2q" or doc["kind"] == "Namespace"
        assert meta["labels"][PLATFORM_LABEL[0]] == PLATFORM_LABEL[1], meta["name"]


def test_configmap_and_secret_template_are_the_settings_the_platform_reads(
    k8s_manifests: list[dict[str, Any]],
) -> None:
    config = find(k8s_manifests, "ConfigMap", "em2q-settings")["data"]
    secret = find(k8s_manifests, "Secret", "em2q-credentials")["stringData"]
    for name in (
        "ELASTICSEARCH_URL",
        "STORAGE",
        "S3_ENDPOINT_URL",
        "INDEX_PREFIX",
        "SPECTRA_CHUNKS",
    ):
        assert f"EM2Q_{name}" in config
    # every EM2Q_ key is one Settings reads: setting it alone (to a value unlike any default)
    # changes the settings
    unset = Settings.from_env({})
    for key, value in {**config, **secret}.items():
        if key.startswith("EM2Q_"):
            probe = "3" if value.isdigit() else f"probe-{value}"
            assert Settings.from_env({key: probe}) != unset, f"{key} is not read by Settings"
    settings = Settings.from_env({**config, **secret})
    assert settings.elasticsearch_url == "http://em2q-es-http.em2q.svc:9200"
    assert settings.storage.startswith("s3://")
    assert settings.s3_endpoint_url is None  # "" means AWS S3 itself
    assert settings.spectra_chunks == 8
    assert settings.elasticsearch_password is None and settings.elasticsearch_api_key is None


def test_secret_template_carries_no_credentials(k8s_manifests: list[dict[str, Any]]) -> None:
    secret = find(k8s_manifests, "Secret", "em2q-credentials")
    assert "data" not in secret
    assert set(secret["stringData"]) >= {
        "EM2Q_ELASTICSEARCH_USERNAME",
        "EM2Q_ELASTICSEARCH_PASSWORD",
        "EM2Q_ELASTICSEARCH_API_KEY",
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
    }
    assert all(value == "" for value in secret["stringData"].values())


def test_launcher_role_lets_dagster_k8s_create_and_follow_jobs_and_pods(
    k8s_manifests: list[dict[str, Any]], dagster_values: dict[str, Any]
) -> None:
    account = find(k8s_manifests, "ServiceAccount")
    role = find(k8s_manifests, "Role", "em2q-dagster-launcher")
    binding = find(k8s_manifests, "RoleBinding", "em2q-dagster-launcher")
    grants = granted(role)
    needed = {
        ("batch", "jobs", "create"),  # K8sRunLauncher, k8s_job_executor
        ("batch", "jobs", "delete"),  # run termination, cleanup
        ("batch", "jobs", "watch"),
        ("", "pods", "create"),  # PipesK8sClient
        ("", "pods", "list"),  # pods of a Job
        ("", "pods", "delete"),
        ("", "pods/log", "get"),  # logs into Dagster
        ("", "events", "list"),
    }
    assert needed <= grants, needed - grants
    assert not any("*" in item for item in grants), "no wildcards in the launcher's Role"
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "Role",
        "name": role["metadata"]["name"],
    }
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": account["metadata"]["name"], "namespace": "em2q"}
    ]
    assert dagster_values["global"]["serviceAccountName"] == account["metadata"]["name"]


def eck_resources() -> dict[str, dict[str, Any]]:
    return {
        name: load_documents(DEPLOY / "elasticsearch" / name)[0] for name in sorted(ECK_PROFILES)
    }


def test_elasticsearch_network_policy_admits_only_platform_pods_on_9200(
    k8s_manifests: list[dict[str, Any]],
) -> None:
    policy = find(k8s_manifests, "NetworkPolicy", "elasticsearch-platform-only")["spec"]
    for resource in eck_resources().values():
        selector = {"elasticsearch.k8s.elastic.co/cluster-name": resource["metadata"]["name"]}
        assert policy["podSelector"] == {"matchLabels": selector}
    assert policy["policyTypes"] == ["Ingress"]
    by_port = {rule["ports"][0]["port"]: rule for rule in policy["ingress"]}
    assert set(by_port) == {9200, 9300}
    http_sources = [
        peer["podSelector"]["matchLabels"]
        for rule in policy["ingress"]
        if rule["ports"][0]["port"] == 9200
        for peer in rule["from"]
    ]
    assert dict([PLATFORM_LABEL]) in http_sources
    # nothing from anywhere: every peer is selected by a label
    for rule in policy["ingress"]:
        assert rule["from"] and all(
            peer.get("podSelector", {}).get("matchLabels") for peer in rule["from"]
        )


@pytest.mark.parametrize("profile", sorted(ECK_PROFILES))
def test_eck_profile_is_an_elasticsearch_of_the_projects_version(profile: str) -> None:
    resource = eck_resources()[profile]
    assert resource["apiVersion"] == "elasticsearch.k8s.elastic.co/v1"
    assert resource["kind"] == "Elasticsearch"
    assert resource["metadata"]["namespace"] == "em2q"
    spec = resource["spec"]
    assert set(spec) <= ECK_SPEC_KEYS, set(spec) - ECK_SPEC_KEYS
    assert spec["version"] == ES_VERSION
    assert sum(node_set["count"] for node_set in spec["nodeSets"]) == ECK_PROFILES[profile]
    for node_set in spec["nodeSets"]:
        assert set(node_set) <= ECK_NODESET_KEYS, set(node_set) - ECK_NODESET_KEYS
        labels = node_set["podTemplate"]["metadata"]["labels"]
        assert labels[PLATFORM_LABEL[0]] == PLATFORM_LABEL[1]
        # ECK mounts the data path only from a claim of this name
        claims = [claim["metadata"]["name"] for claim in node_set["volumeClaimTemplates"]]
        assert claims == ["elasticsearch-data"]


@pytest.mark.parametrize("profile", sorted(ECK_PROFILES))
@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_eck_pod_template_and_claims_are_valid_kubernetes(profile: str, version: str) -> None:
    """The CRD's schema is not available; its embedded core types are checked as themselves."""
    for node_set in eck_resources()[profile]["spec"]["nodeSets"]:
        validate_strict(
            {
                "apiVersion": "v1",
                "kind": "PodTemplate",
                "metadata": {"name": node_set["name"]},
                "template": node_set["podTemplate"],
            },
            version,
        )
        for claim in node_set["volumeClaimTemplates"]:
            validate_strict({"apiVersion": "v1", "kind": "PersistentVolumeClaim", **claim}, version)


def _bytes(quantity: str) -> int:
    number, unit = re.fullmatch(r"(\d+)([KMGT]i|[kmgt])?", quantity).groups()
    scale = {
        "Ki": 2**10,
        "Mi": 2**20,
        "Gi": 2**30,
        "Ti": 2**40,
        "k": 2**10,
        "m": 2**20,
        "g": 2**30,
        "t": 2**40,
        None: 1,
    }[unit]
    return int(number) * scale


@pytest.mark.parametrize("profile", sorted(ECK_PROFILES))
def test_eck_heap_is_at_most_half_the_container_memory(profile: str) -> None:
    """Elasticsearch needs the other half for the file system cache and off-heap buffers."""
    for node_set in eck_resources()[profile]["spec"]["nodeSets"]:
        (container,) = node_set["podTemplate"]["spec"]["containers"]
        options = {env["name"]: env["value"] for env in container["env"]}["ES_JAVA_OPTS"]
        heap = _bytes(re.search(r"-Xmx(\S+)", options).group(1))
        limit = _bytes(container["resources"]["limits"]["memory"])
        assert heap <= limit // 2
        assert re.search(r"-Xms(\S+)", options).group(1) == re.search(r"-Xmx(\S+)", options).group(
            1
        )


def test_every_platform_pod_reaches_elasticsearch_and_no_other_pod_does(
    k8s_manifests: list[dict[str, Any]],
    dagster_values: dict[str, Any],
    jupyterhub_values: dict[str, Any],
) -> None:
    from em2q_resources.launcher import StepLauncherResource

    policy = find(k8s_manifests, "NetworkPolicy", "elasticsearch-platform-only")
    (deployment,) = dagster_values["dagster-user-deployments"]["deployments"]
    platform_pods = {
        "code server": deployment["labels"],
        "run pod": dagster_values["runLauncher"]["config"]["k8sRunLauncher"]["labels"],
        "step pod": StepLauncherResource().base_pod_meta("chunk")["labels"],
        "notebook": jupyterhub_values["singleuser"]["extraLabels"],
    }
    for pod, labels in platform_pods.items():
        assert admitted(labels, policy, 9200), f"{pod} {labels} cannot reach Elasticsearch"
    assert not admitted({"app": "someone-else"}, policy, 9200)
    assert not admitted(platform_pods["code server"], policy, 9300)


def test_dagster_webserver_is_reachable_only_from_the_ingress_controller_and_the_catalog(
    k8s_manifests: list[dict[str, Any]],
    dagster_values: dict[str, Any],
    jupyterhub_values: dict[str, Any],
) -> None:
    from em2q_resources.launcher import StepLauncherResource

    policy = find(k8s_manifests, "NetworkPolicy", "dagster-webserver-behind-proxy")
    webserver = dagster_values["dagsterWebserver"]
    selected = policy["spec"]["podSelector"]["matchLabels"]
    assert selected.items() <= webserver["labels"].items()
    assert policy["spec"]["policyTypes"] == ["Ingress"]
    port = webserver["service"]["port"]
    (rule,) = policy["spec"]["ingress"]
    assert [p["port"] for p in rule["ports"]] == [port]
    controller = [peer for peer in rule["from"] if "namespaceSelector" in peer]
    assert controller == [
        {
            "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "ingress-nginx"}},
            "podSelector": {"matchLabels": {"app.kubernetes.io/name": "ingress-nginx"}},
        }
    ]
    (deployment,) = dagster_values["dagster-user-deployments"]["deployments"]
    outsiders = {
        "notebook": jupyterhub_values["singleuser"]["extraLabels"],
        "code server": deployment["labels"],
        "run pod": dagster_values["runLauncher"]["config"]["k8sRunLauncher"]["labels"],
        "step pod": StepLauncherResource().base_pod_meta("chunk")["labels"],
        "anyone": {"app": "someone-else"},
    }
    for pod, labels in outsiders.items():
        assert not admitted(labels, policy, port), f"{pod} {labels} reaches the Dagster UI"
    assert admitted({"app.kubernetes.io/component": "web-catalog"}, policy, port)
