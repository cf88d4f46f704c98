"""The Kubernetes bodies the platform submits, built exactly as dagster-k8s builds them: the
``PipesK8sClient`` pod of a step (``build_pod_body`` inside a real Pipes session) and the
``k8s_job_executor`` Job of every asset step (``construct_dagster_k8s_job`` with the step tags
of the real asset job). Shared by the offline checks (tests/em2q_resources/test_launcher.py)
and the server-side dry-run on a real apiserver (tests/cluster)."""

import uuid
import warnings
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import dagster as dg
import kubernetes.client
import yaml
from dagster_k8s import K8sRunLauncher
from dagster_k8s.container_context import K8sContainerContext
from dagster_k8s.job import (
    construct_dagster_k8s_job,
    get_k8s_job_name,
    get_user_defined_k8s_config,
)
from dagster_k8s.pipes import PipesK8sPodLogsMessageReader, get_pod_name

from em2q_assets.k8s import executor_config
from em2q_resources.launcher import StepLauncherResource, pod_labels
from em2q_resources.settings import Settings


def serialised(obj) -> dict:
    return kubernetes.client.ApiClient().sanitize_for_serialization(obj)


def chunk_step_pod(
    launcher: StepLauncherResource, args: list[str], storage_options: Mapping[str, Any] | None
) -> dict[str, Any]:
    """The pod ``PipesK8sClient.run`` would create for the ``chunk`` step of
    ``spectra_chunks`` (what it does before it calls ``create_namespaced_pod``)."""
    built = {}

    @dg.asset(name="spectra_chunks")
    def pod_for_asset(context: dg.AssetExecutionContext) -> None:
        with dg.open_pipes_session(
            context=context,
            context_injector=dg.PipesEnvContextInjector(),
            message_reader=PipesK8sPodLogsMessageReader(),
        ) as session:
            built["pod"] = launcher.pod_body(
                "chunk",
                args,
                kind="chunk",
                pod_name=get_pod_name(context.run_id, context.op.name),
                labels=pod_labels(context),
                env_vars=session.get_bootstrap_env_vars(),
                storage_options=storage_options,
            )

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the session ends without a pod to read from
        dg.materialize([pod_for_asset], raise_on_error=False)
    return {"apiVersion": "v1", "kind": "Pod", **serialised(built["pod"])}


def offline_run_launcher(folder: Path, job_namespace: str) -> K8sRunLauncher:
    """The Helm chart's run launcher; its kubeconfig names a cluster nobody contacts."""
    kubeconfig = folder / "kubeconfig"
    kubeconfig.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "offline", "cluster": {"server": "https://127.0.0.1:1"}}],
                "users": [{"name": "offline", "user": {}}],
                "contexts": [
                    {"name": "offline", "context": {"cluster": "offline", "user": "offline"}}
                ],
                "current-context": "offline",
            }
        ),
        encoding="utf-8",
    )
    return K8sRunLauncher(
        service_account_name="dagster",
        instance_config_map="dagster-instance",
        postgres_password_secret="dagster-postgresql-secret",
        dagster_home="/opt/dagster/dagster_home",
        load_incluster_config=False,
        kubeconfig_file=str(kubeconfig),
        job_namespace=job_namespace,
    )


def step_job_bodies(
    settings: Settings, run_launcher: K8sRunLauncher
) -> Iterator[tuple[str, dict[str, Any]]]:
    """``(step key, Job body)`` of every step of the asset job with ``EM2Q_RUN_EXECUTOR=k8s_job``,
    as ``K8sStepHandler.launch_step`` builds it."""
    from em2q_assets.definitions import build_definitions

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", dg.BetaWarning)
        defs = build_definitions(settings)
    job = defs.resolve_implicit_global_asset_job_def()
    assert job.executor_def.name == "em2q_k8s_job_executor"
    config = executor_config(defs.resources["step_launcher"])
    executor_context = K8sContainerContext(
        env_config_maps=config["env_config_maps"],
        env_secrets=config["env_secrets"],
        labels=config["labels"],
        namespace=config["job_namespace"],
    )
    run_id = str(uuid.uuid4())
    for node in job.graph.nodes:  # each node's tags are its execution step's tags
        step_key = node.name
        context = K8sContainerContext.create_for_run(
            dg.DagsterRun(job_name=job.name, run_id=run_id), run_launcher, include_run_tags=False
        ).merge(executor_context)
        context = context.merge(
            K8sContainerContext(run_k8s_config=get_user_defined_k8s_config(node.tags))
        )
        job_config = context.get_k8s_job_config(config["job_image"], run_launcher)
        name = f"dagster-step-{get_k8s_job_name(run_id, step_key)}"
        body = construct_dagster_k8s_job(
            job_config=job_config,
            args=["dagster", "api", "execute_step"],
            job_name=name,
            pod_name=name,
            component="step_worker",
            user_defined_k8s_config=context.run_k8s_config,
            labels={"dagster/job": job.name, "dagster/op": step_key, "dagster/run-id": run_id},
            env_vars=[{"name": "DAGSTER_RUN_STEP_KEY", "value": step_key}],
        )
        yield step_key, serialised(body)
