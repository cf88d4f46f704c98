"""The step launcher: local steps run for real through Dagster Pipes; Kubernetes step pods and
step Jobs are built exactly as dagster-k8s would submit them and validated offline.

No cluster is contacted: the pod body comes from ``dagster_k8s.pipes.build_pod_body`` inside a
real Pipes session, the Job body from ``dagster_k8s.job.construct_dagster_k8s_job`` with the
step tags of the real asset job, both checked with ``kubernetes-validate --strict``.
"""

import json
import uuid

import dagster as dg
import fsspec
import kubernetes.client
import kubernetes_validate
import pytest
from dagster_k8s import K8sRunLauncher
from dagster_k8s.job import (
    get_user_defined_k8s_config,
)

from em2q_assets.definitions import build_definitions
from em2q_assets.k8s import STEP_KIND_TAG, STEP_RETRY_LIMIT, executor_config
from em2q_resources.catalog import STEP_KINDS
from em2q_resources.launcher import (
    NoKubernetesCluster,
    StepFailed,
    StepLauncherResource,
    UnknownStepKind,
    step_resources,
)
from em2q_resources.settings import PROJECT_ROOT, Settings
from tests.em2q_resources.k8s_bodies import (
    chunk_step_pod,
    offline_run_launcher,
    step_job_bodies,
)

EXAMPLE = PROJECT_ROOT.parent / "shared" / "data" / "imzml" / "Example_Processed.imzML"
#: Kubernetes versions the bodies are validated against: the oldest supported and the newest
#: kubernetes-validate ships
KUBERNETES_VERSIONS = ("1.30.0", "1.37.0")


def serialised(obj) -> dict:
    return kubernetes.client.ApiClient().sanitize_for_serialization(obj)


def assert_valid_kubernetes(document: dict) -> None:
    for version in KUBERNETES_VERSIONS:
        kubernetes_validate.validate(document, version, strict=True)


def chunk_asset(args: list[str], storage_options: dict | None = None):
    @dg.asset(name="spectra_chunks")
    def step_asset(
        context: dg.AssetExecutionContext, step_launcher: StepLauncherResource
    ) -> dg.Output[dict]:
        summary = step_launcher.run_step(
            context, "chunk", args, kind="chunk", storage_options=storage_options
        )
        return dg.Output(summary, metadata={"spectra": summary["n_spectra"]})

    return step_asset


# -- local mode: a real subprocess ------------------------------------------------------------
def test_local_chunk_step_runs_and_its_summary_comes_back_through_pipes(tmp_path):
    out = tmp_path / "chunk-1-of-3"
    asset = chunk_asset([str(EXAMPLE), "--k", "3", "--index", "1", "--out", str(out)])
    result = dg.materialize([asset], resources={"step_launcher": StepLauncherResource()})
    assert result.success
    summary = result.output_for_node("spectra_chunks")
    assert summary["ok"] is True
    assert (summary["chunk_index"], summary["chunk_count"]) == (1, 3)
    assert (summary["first_index"], summary["n_spectra"]) == (3, 3)  # 9 spectra: [3, 6)
    files = {p.name for p in out.iterdir()}
    assert "coordinates.npy" in files and summary["bytes"] > 0
    (materialization,) = result.asset_materializations_for_node("spectra_chunks")
    assert materialization.metadata["spectra"].value == 3


def test_local_step_failure_carries_the_steps_own_error(tmp_path):
    asset = chunk_asset([str(EXAMPLE), "--k", "3", "--index", "7", "--out", str(tmp_path)])
    result = dg.materialize(
        [asset], resources={"step_launcher": StepLauncherResource()}, raise_on_error=False
    )
    assert not result.success
    (failure,) = [e for e in result.all_events if e.event_type == dg.DagsterEventType.STEP_FAILURE]
    error = failure.step_failure_data.error.cause  # under Dagster's "error in op" wrapper
    assert error.cls_name == StepFailed.__name__
    assert "em2q_msi.steps chunk failed (usage): --index must be in 0..K-1" in error.message


def test_local_step_writes_to_s3_with_the_storage_options_and_no_credential_in_the_logs(
    s3_endpoint, s3_root
):
    secret = f"s3cr3t-{uuid.uuid4().hex}"
    options = {
        "key": "em2q-test-key",
        "secret": secret,
        "client_kwargs": {"endpoint_url": s3_endpoint.endpoint_url},
    }
    out = f"{s3_root}/chunk-0-of-2"
    asset = chunk_asset([str(EXAMPLE), "--k", "2", "--index", "0", "--out", out], options)
    instance = dg.DagsterInstance.ephemeral()
    result = dg.materialize(
        [asset], resources={"step_launcher": StepLauncherResource()}, instance=instance
    )
    assert result.success
    assert result.output_for_node("spectra_chunks")["n_spectra"] == 5  # 9 spectra: [0, 5)
    fs = fsspec.filesystem("s3", **options)
    assert fs.exists(f"{out}/coordinates.npy")
    logged = json.dumps([str(record) for record in instance.all_logs(result.run_id)])
    assert "em2q-test-key" not in logged and secret not in logged
    assert "em2q_msi.steps chunk: " in logged  # the step's own report is in the logs


def test_an_unknown_step_kind_is_refused_before_anything_runs(tmp_path):
    asset = chunk_asset([str(EXAMPLE), "--k", "1", "--index", "0", "--out", str(tmp_path)])

    @dg.asset(name="odd")
    def odd(context: dg.AssetExecutionContext, step_launcher: StepLauncherResource) -> None:
        step_launcher.run_step(context, "qc", [str(EXAMPLE)], kind="gpu")

    result = dg.materialize(
        [asset, odd],
        selection=["odd"],
        resources={"step_launcher": StepLauncherResource()},
        raise_on_error=False,
    )
    (failure,) = [e for e in result.all_events if e.event_type == dg.DagsterEventType.STEP_FAILURE]
    error = failure.step_failure_data.error.cause
    assert error.cls_name == UnknownStepKind.__name__
    assert "'gpu'" in error.message
    assert not list(tmp_path.iterdir())


# -- kubernetes mode: the pod PipesK8sClient submits ------------------------------------------
def test_kubernetes_mode_without_a_cluster_says_what_to_set(tmp_path, monkeypatch):
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "no-kubeconfig"))
    asset = chunk_asset([str(EXAMPLE), "--k", "1", "--index", "0", "--out", str(tmp_path)])
    launcher = StepLauncherResource(mode="kubernetes", image="registry.example.org/em2q:0.1.0")
    result = dg.materialize([asset], resources={"step_launcher": launcher}, raise_on_error=False)
    (failure,) = [e for e in result.all_events if e.event_type == dg.DagsterEventType.STEP_FAILURE]
    error = failure.step_failure_data.error.cause
    assert error.cls_name == NoKubernetesCluster.__name__
    assert "EM2Q_STEP_LAUNCHER=local" in error.message and "KUBECONFIG" in error.message


def test_step_pod_is_valid_kubernetes_and_what_the_asset_asked_for():
    secret = f"s3cr3t-{uuid.uuid4().hex}"
    settings = Settings(
        step_launcher="kubernetes",
        image="registry.example.org/em2q:0.1.0",
        namespace="imaging",
        env_config_maps=("em2q-settings",),
        env_secrets=("em2q-credentials",),
        elasticsearch_password=secret,
    )
    launcher = StepLauncherResource.from_settings(settings)
    args = [
        "s3://em2q/measurements/m1/data.imzML",
        "--k",
        "4",
        "--index",
        "2",
        "--out",
        "s3://em2q/results/m1/spectra_chunks/raw/chunk-0002/spectra",
    ]
    options = {
        "key": "AKIA-em2q-test",
        "secret": secret,
        "client_kwargs": {"endpoint_url": "http://minio.imaging:9000"},
    }
    pod = chunk_step_pod(launcher, args, options)
    assert_valid_kubernetes(pod)
    text = json.dumps(pod)
    assert secret not in text and "AKIA-em2q-test" not in text
    (container,) = pod["spec"]["containers"]
    assert container["image"] == "registry.example.org/em2q:0.1.0"
    assert container["command"] == [
        "python",
        "-m",
        "em2q_msi.steps",
        "chunk",
        *args,
        "--storage-options",
        json.dumps({"client_kwargs": {"endpoint_url": "http://minio.imaging:9000"}}),
    ]
    assert container["resources"] == step_resources("chunk")
    assert container["envFrom"] == [
        {"configMapRef": {"name": "em2q-settings"}},
        {"secretRef": {"name": "em2q-credentials"}},
    ]
    assert {e["name"] for e in container["env"]} == {
        "DAGSTER_PIPES_CONTEXT",
        "DAGSTER_PIPES_MESSAGES",
    }
    labels = pod["metadata"]["labels"]
    assert labels["em2q/step-kind"] == "chunk"
    assert labels["em2q/asset"] == "spectra_chunks"
    assert labels["app.kubernetes.io/name"] == "em2q"
    assert pod["spec"]["restartPolicy"] == "Never"


# -- k8s_job_executor: the Job of each asset step ---------------------------------------------
@pytest.fixture
def run_launcher(tmp_path) -> K8sRunLauncher:
    return offline_run_launcher(tmp_path, job_namespace="imaging")


def test_each_asset_step_job_gets_its_kinds_resources_and_the_platform_environment(
    run_launcher,
):
    settings = Settings(
        elasticsearch_url="http://127.0.0.1:9",
        spectra_chunks=3,
        run_executor="k8s_job",
        image="registry.example.org/em2q:0.1.0",
        namespace="imaging",
    )
    seen = set()
    for step_key, document in step_job_bodies(settings, run_launcher):
        assert_valid_kubernetes(document)
        kind = STEP_KINDS[step_key]
        pod_spec = document["spec"]["template"]["spec"]
        (container,) = pod_spec["containers"]
        assert container["resources"] == step_resources(kind), step_key
        assert container["image"] == "registry.example.org/em2q:0.1.0"
        assert container["envFrom"] == [
            {"configMapRef": {"name": "em2q-settings"}},
            {"secretRef": {"name": "em2q-credentials"}},
        ]
        pod_labels_ = document["spec"]["template"]["metadata"]["labels"]
        assert pod_labels_[STEP_KIND_TAG] == kind
        assert pod_labels_["dagster/op"] == step_key
        assert pod_labels_["app.kubernetes.io/name"] == "em2q"
        seen.add(step_key)
    assert seen == set(STEP_KINDS)  # every asset of the definitions has a kind


def test_the_op_tag_is_the_one_dagster_k8s_reads():
    from dagster_k8s.job import USER_DEFINED_K8S_CONFIG_KEY as dagster_k8s_key

    from em2q_assets.k8s import USER_DEFINED_K8S_CONFIG_KEY, k8s_op_tags

    assert dagster_k8s_key == USER_DEFINED_K8S_CONFIG_KEY
    assert get_user_defined_k8s_config(k8s_op_tags("qc")).container_config == {
        "resources": step_resources("qc")
    }


def test_the_run_executor_config_is_one_k8s_job_executor_accepts():
    """``configured`` does not check its config; a run would only fail at its start."""
    from dagster_k8s import k8s_job_executor

    @dg.op
    def nothing() -> None:
        pass

    @dg.job(executor_def=k8s_job_executor)
    def probe() -> None:
        nothing()

    launcher = StepLauncherResource(
        mode="kubernetes",
        namespace="em2q",
        image_pull_policy="IfNotPresent",
        service_account_name="em2q-steps",
    )
    config = executor_config(launcher)
    resolved = dg.validate_run_config(probe, {"execution": {"config": config}})
    assert resolved["execution"]["k8s"]["env_secrets"] == ["em2q-credentials"]
    with pytest.raises(dg.DagsterInvalidConfigError):
        dg.validate_run_config(probe, {"execution": {"config": {**config, "job_imag": "x"}}})


def test_host_network_step_pods_share_the_nodes_network_and_others_do_not():
    args = ["s3://em2q/m1/data.imzML", "--k", "1", "--index", "0", "--out", "s3://em2q/out"]
    shared = chunk_step_pod(StepLauncherResource(mode="kubernetes", host_network=True), args, None)
    default = chunk_step_pod(StepLauncherResource(mode="kubernetes"), args, None)
    assert shared["spec"]["hostNetwork"] is True
    assert "hostNetwork" not in default["spec"]


def test_a_single_node_clusters_step_jobs_mount_the_host_folders_as_their_owner(tmp_path):
    """EM2Q_STEP_HOST_*: the run's SQLite DAGSTER_HOME at the same path in every step pod,
    written as its owner, on the node's network, Jobs created with a kubeconfig."""
    from dagster_k8s import k8s_job_executor

    @dg.op
    def nothing() -> None:
        pass

    @dg.job(executor_def=k8s_job_executor)
    def probe() -> None:
        nothing()

    settings = Settings.from_env({
        "EM2Q_STEP_HOST_NETWORK": "1",
        "EM2Q_STEP_HOST_PATHS": str(tmp_path),
        "EM2Q_KUBECONFIG": "/etc/em2q/kubeconfig",
    })  # fmt: skip
    config = executor_config(StepLauncherResource.from_settings(settings))
    dg.validate_run_config(probe, {"execution": {"config": config}})
    assert config["load_incluster_config"] is False
    assert config["kubeconfig_file"] == "/etc/em2q/kubeconfig"
    assert config["volumes"] == [
        {"name": "host-0", "host_path": {"path": str(tmp_path), "type": "Directory"}}
    ]
    assert config["volume_mounts"] == [{"name": "host-0", "mount_path": str(tmp_path)}]
    owner = tmp_path.stat()
    assert config["step_k8s_config"]["pod_spec_config"] == {
        "host_network": True,
        "security_context": {"run_as_user": owner.st_uid, "run_as_group": owner.st_gid},
    }


def test_steps_retry_a_lost_pod_with_the_k8s_job_executor_only():
    def retry_policies(run_executor: str) -> set:
        defs = build_definitions(
            Settings(elasticsearch_url="http://127.0.0.1:9", run_executor=run_executor)
        )
        return {asset.op.retry_policy for asset in defs.assets}

    assert retry_policies("k8s_job") == {dg.RetryPolicy(max_retries=STEP_RETRY_LIMIT)}
    assert retry_policies("in_process") == {None}
