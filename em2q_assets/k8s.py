"""Kubernetes sizing of every asset step, from the one table in ``em2q_resources.launcher``.

Each asset's step kind is declared in the asset catalogue (``em2q_resources.catalog``); each
asset's op carries a ``dagster-k8s/config`` tag with its step kind's requests and limits,
so the ``k8s_job_executor`` (:func:`k8s_run_executor`) gives each step pod what the step needs;
``argo_bridge`` reads the same tags for its container templates, and a ``PipesK8sClient`` pod
started through the step launcher uses the same table row. The tags are harmless elsewhere:
the default in-process executor ignores them.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping

import dagster as dg

from em2q_resources.catalog import CATALOG, Catalog
from em2q_resources.launcher import StepLauncherResource, step_resources

#: the op tag dagster-k8s reads (dagster_k8s.job.USER_DEFINED_K8S_CONFIG_KEY; not imported
#: here: dagster_k8s pulls in the whole Kubernetes client, seconds for every code server start)
USER_DEFINED_K8S_CONFIG_KEY = "dagster-k8s/config"
#: op tag naming the asset's step kind (a row of ``launcher.STEP_RESOURCES``)
STEP_KIND_TAG = "em2q/step-kind"
#: the step kind of an asset the catalogue does not declare
DEFAULT_STEP_KIND = "summary"
#: Argo retries of a step whose asset has no Dagster RetryPolicy: system errors only (pod
#: evicted, node lost), as the assets themselves do not retry a failed computation
STEP_RETRY_LIMIT = 2


def step_retry_policy(run_executor: str) -> dg.RetryPolicy | None:
    """With a Kubernetes Job per step, a step's pod can be lost (deleted, evicted, its node
    gone): the executor sees the failed Job and runs the step again, up to
    ``STEP_RETRY_LIMIT`` times. In one process there is no pod to lose: no retries."""
    return dg.RetryPolicy(max_retries=STEP_RETRY_LIMIT) if run_executor == "k8s_job" else None


def step_kind(asset_name: str, catalog: Catalog = CATALOG) -> str:
    """The catalogue's step kind of an asset (``DEFAULT_STEP_KIND`` for one it lacks)."""
    return catalog.step_kinds.get(asset_name, DEFAULT_STEP_KIND)


def k8s_config(kind: str) -> dict:
    """The ``dagster-k8s/config`` value of a step kind: container resources and pod labels."""
    return {
        "container_config": {"resources": step_resources(kind)},
        "pod_template_spec_metadata": {"labels": {STEP_KIND_TAG: kind}},
    }


def k8s_op_tags(kind: str) -> dict[str, str]:
    return {USER_DEFINED_K8S_CONFIG_KEY: json.dumps(k8s_config(kind)), STEP_KIND_TAG: kind}


def op_resources(tags: Mapping[str, str]) -> dict | None:
    """The container resources in an op's ``dagster-k8s/config`` tag, if any."""
    if USER_DEFINED_K8S_CONFIG_KEY not in tags:
        return None
    config = json.loads(tags[USER_DEFINED_K8S_CONFIG_KEY])
    return (config.get("container_config") or {}).get("resources")


def executor_config(launcher: StepLauncherResource) -> dict:
    """The ``k8s_job_executor`` config: the launcher's image, namespace, ConfigMaps, Secrets."""
    config: dict = {
        "job_image": launcher.image,
        "env_config_maps": list(launcher.env_config_maps),
        "env_secrets": list(launcher.env_secrets),
        "labels": {"app.kubernetes.io/name": "em2q"},
    }
    if launcher.namespace:
        config["job_namespace"] = launcher.namespace
    if launcher.image_pull_policy:
        config["image_pull_policy"] = launcher.image_pull_policy
    if launcher.service_account_name:
        config["service_account_name"] = launcher.service_account_name
    if launcher.kubeconfig_file:
        config["load_incluster_config"] = False
        config["kubeconfig_file"] = launcher.kubeconfig_file
    pod_spec: dict = {}
    if launcher.host_network:
        pod_spec["host_network"] = True
    if launcher.host_paths:
        config["volumes"] = [
            {"name": f"host-{i}", "host_path": {"path": path, "type": "Directory"}}
            for i, path in enumerate(launcher.host_paths)
        ]
        config["volume_mounts"] = [
            {"name": f"host-{i}", "mount_path": path} for i, path in enumerate(launcher.host_paths)
        ]
        # the run's SQLite files there belong to whoever started the run: step pods write them
        owner = _owner(launcher.host_paths[0])
        if owner is not None:
            pod_spec["security_context"] = {"run_as_user": owner[0], "run_as_group": owner[1]}
    if pod_spec:
        config["step_k8s_config"] = {"pod_spec_config": pod_spec}
    return config


def instance_run_launcher(launcher: StepLauncherResource, dagster_home: str) -> dict:
    """The ``run_launcher`` section of dagster.yaml for an instance that runs k8s_job runs in
    place (``dagster asset materialize``, ``dagster job execute``) outside the Helm chart.

    dagster-k8s 0.29's ``k8s_job_executor`` reads the instance's run launcher as a
    ``K8sRunLauncher`` whatever it is (``K8sContainerContext.create_for_run``,
    ``get_k8s_job_config``: ``'DefaultRunLauncher' object has no attribute
    'image_pull_policy'``). Runs executed in place never call it; runs *launched* through it
    (webserver, daemon) become run pods, as with the chart. Step pods get ``DAGSTER_HOME``
    set to ``dagster_home`` (the host folder they mount with ``host_paths``)."""
    config: dict = {
        # required by its schema; step Jobs never mount it (runs executed in place)
        "instance_config_map": "em2q-dagster-instance",
        "service_account_name": launcher.service_account_name or "default",
        "dagster_home": dagster_home,
        "job_image": launcher.image,
    }
    if launcher.namespace:
        config["job_namespace"] = launcher.namespace
    if launcher.kubeconfig_file:
        config["load_incluster_config"] = False
        config["kubeconfig_file"] = launcher.kubeconfig_file
    return {"module": "dagster_k8s", "class": "K8sRunLauncher", "config": config}


def _owner(path: str) -> tuple[int, int] | None:
    try:
        stat = os.stat(path)
    except OSError:  # not on this machine (definitions loaded elsewhere): nothing to match
        return None
    return stat.st_uid, stat.st_gid


def k8s_run_executor(launcher: StepLauncherResource) -> dg.ExecutorDefinition:
    """``k8s_job_executor``: each step of a run as a Kubernetes Job, sized by its op tags."""
    from dagster_k8s import k8s_job_executor

    return k8s_job_executor.configured(executor_config(launcher), name="em2q_k8s_job_executor")


def run_executor(name: str, launcher: StepLauncherResource) -> dg.ExecutorDefinition:
    """The executor ``EM2Q_RUN_EXECUTOR`` names: ``in_process`` (default) or ``k8s_job``."""
    if name == "in_process":
        return dg.in_process_executor
    if name == "k8s_job":
        return k8s_run_executor(launcher)
    raise ValueError(f"EM2Q_RUN_EXECUTOR={name!r}: use in_process or k8s_job")
