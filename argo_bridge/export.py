"""The Dagster asset graph as Argo ``WorkflowTemplate`` s, built with Hera from the definitions
themselves (asset keys, dependencies, partitions, op tags), which are built from the asset
catalogue (``em2q_resources.catalog``), so the three cannot drift apart.

Per asset, one container template runs the same image and the same entry point as a Dagster
step, ``python -m em2q_assets.step <asset> --measurement M [--chunk I] --parameter-set P
--run-id <workflow name> --engine ARGO``, which writes the same result paths and ``WorkflowRun``
documents as the Dagster asset; storage and Elasticsearch settings reach it from the same
ConfigMaps/Secrets as the Dagster step pods (the ``step_launcher`` resource's), resources from
the asset's ``dagster-k8s/config`` op tag.

The DAG mirrors the asset dependencies. Spectra-level assets (partitioned by ``measurement ×
spectra_chunk``) that depend on each other chunk by chunk form one per-chunk DAG, fanned out over
the K chunk keys with ``withItems``; a measurement-level asset that reads chunks waits for the
whole fan-out (the merge), a spectra-level asset that reads a measurement-level one starts after
it. Nothing is passed between steps as Argo artifacts: every step reads its inputs from, and
writes its results to, the platform's storage (S3 in a cluster).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from graphlib import CycleError, TopologicalSorter
from typing import Any

import dagster as dg
from hera.workflows import (
    DAG,
    ConfigMapEnvFrom,
    Container,
    Parameter,
    RetryStrategy,
    SecretEnvFrom,
    Task,
    WorkflowTemplate,
)
from hera.workflows.models import Backoff, PodGC, Quantity, ResourceRequirements, TTLStrategy

from em2q_assets.io_managers import PARAMETER_DEPENDENT, PER_STUDY
from em2q_assets.k8s import STEP_KIND_TAG, STEP_RETRY_LIMIT, op_resources
from em2q_assets.partitions import MEASUREMENT, SPECTRA_CHUNK
from em2q_resources.launcher import StepLauncherResource

STEP_ENTRY_POINT = ("python", "-m", "em2q_assets.step")
ENGINE = "ARGO"
DEFAULT_PARAMETER_SET = "default"
#: delay before the first retry of a step, doubled on each further retry
RETRY_BACKOFF = "30s"
#: like the Dagster step Jobs (ttlSecondsAfterFinished 86400): succeeded pods go at once,
#: a finished workflow (and failed pods, for their logs) after a day
KEEP_FINISHED_S = 86_400
LABELS = {"app.kubernetes.io/name": "em2q", "app.kubernetes.io/component": "argo-workflow"}


class UnsupportedAsset(ValueError):
    """An asset the export cannot express (partitioning other than measurement/chunk)."""


@dataclass(frozen=True)
class AssetStep:
    """One asset as an Argo step: what it depends on, how it is partitioned and sized."""

    asset: str
    upstream: tuple[str, ...]
    chunk_keys: tuple[str, ...] | None
    kind: str | None
    resources: Mapping[str, Mapping[str, str]] | None
    retry_limit: int
    retry_policy: str

    @property
    def chunked(self) -> bool:
        return self.chunk_keys is not None

    @property
    def template_name(self) -> str:
        return dns_name(self.asset)


def dns_name(name: str) -> str:
    """Argo template and task names: lower case, digits and ``-``."""
    return re.sub(r"[^a-z0-9-]+", "-", name.lower()).strip("-")


def chunk_keys_of(asset: str, partitions_def: dg.PartitionsDefinition | None) -> tuple | None:
    """The static chunk keys of a spectra-level asset, ``None`` for a measurement-level one."""
    if isinstance(partitions_def, dg.MultiPartitionsDefinition):
        dimensions = {d.name: d.partitions_def for d in partitions_def.partitions_defs}
        chunks = dimensions.get(SPECTRA_CHUNK)
        if set(dimensions) == {MEASUREMENT, SPECTRA_CHUNK} and isinstance(
            chunks, dg.StaticPartitionsDefinition
        ):
            return tuple(chunks.get_partition_keys())
    elif (
        isinstance(partitions_def, dg.DynamicPartitionsDefinition)
        and partitions_def.name == MEASUREMENT
    ):
        return None
    raise UnsupportedAsset(
        f"asset {asset!r}: only '{MEASUREMENT}' or '{MEASUREMENT} × {SPECTRA_CHUNK}' "
        f"partitions can be exported to Argo, got {partitions_def!r}"
    )


def asset_steps(
    defs: dg.Definitions, include: Callable[[Any], bool] | None = None
) -> list[AssetStep]:
    """The executable assets of ``defs`` (those ``include(node)`` accepts), upstream first.

    Dependencies on assets left out are dropped: their results must already exist. Study
    assets (partitioned by study, not measurement) are not part of a measurement's workflow.
    """
    graph = defs.resolve_asset_graph()
    chosen = [
        key
        for key in graph.toposorted_asset_keys
        if graph.get(key).is_executable
        and not graph.get(key).metadata.get(PER_STUDY)
        and (include is None or include(graph.get(key)))
    ]
    names = {key.path[-1] for key in chosen}
    steps = []
    for key in chosen:
        node = graph.get(key)
        op = node.assets_def.op
        tags = op.tags
        if op.retry_policy:
            limit, policy = op.retry_policy.max_retries, "Always"
        else:
            limit, policy = STEP_RETRY_LIMIT, "OnError"
        steps.append(
            AssetStep(
                asset=key.path[-1],
                upstream=tuple(sorted(p.path[-1] for p in node.parent_keys if p.path[-1] in names)),
                chunk_keys=chunk_keys_of(key.path[-1], node.partitions_def),
                kind=tags.get(STEP_KIND_TAG),
                resources=op_resources(tags),
                retry_limit=limit,
                retry_policy=policy,
            )
        )
    return steps


def chunk_groups(steps: Sequence[AssetStep]) -> list[list[AssetStep]]:
    """Spectra-level steps connected chunk to chunk: each group runs as one per-chunk DAG."""
    by_name = {s.asset: s for s in steps}
    group_of: dict[str, int] = {}
    groups: list[list[AssetStep]] = []
    for step in steps:  # upstream first, so a step's chunked parents already have a group
        if not step.chunked:
            continue
        parents = {group_of[u] for u in step.upstream if by_name[u].chunked}
        if not parents:
            group_of[step.asset] = len(groups)
            groups.append([step])
            continue
        target, *others = sorted(parents)
        for other in others:  # two chains joined by this step: one group
            for moved in groups[other]:
                group_of[moved.asset] = target
            groups[target].extend(groups[other])
            groups[other] = []
        group_of[step.asset] = target
        groups[target].append(step)
    order = {s.asset: i for i, s in enumerate(steps)}
    return [sorted(g, key=lambda s: order[s.asset]) for g in groups if g]


def step_command(step: AssetStep) -> list[str]:
    command = [
        *STEP_ENTRY_POINT,
        step.asset,
        "--measurement",
        "{{inputs.parameters.measurement}}",
    ]
    if step.chunked:
        command += ["--chunk", "{{inputs.parameters.chunk}}"]
    return command + [
        "--parameter-set",
        "{{workflow.parameters.parameter_set}}",
        "--run-id",
        "{{workflow.name}}",
        "--engine",
        ENGINE,
    ]


def _resources(step: AssetStep) -> ResourceRequirements | None:
    if not step.resources:
        return None
    return ResourceRequirements(
        **{
            part: {name: Quantity(str(value)) for name, value in values.items()}
            for part, values in step.resources.items()
            if part in ("requests", "limits")
        }
    )


def _container(step: AssetStep, image: str, launcher: StepLauncherResource) -> Container:
    inputs = [Parameter(name="measurement")]
    if step.chunked:
        inputs.append(Parameter(name="chunk"))
    labels = {"em2q/asset": step.template_name}
    if step.kind:
        labels[STEP_KIND_TAG] = step.kind
    return Container(
        name=step.template_name,
        image=image,
        image_pull_policy=launcher.image_pull_policy,
        command=step_command(step),
        inputs=inputs,
        env_from=[ConfigMapEnvFrom(name=n) for n in launcher.env_config_maps]
        + [SecretEnvFrom(name=n) for n in launcher.env_secrets],
        resources=_resources(step),
        retry_strategy=RetryStrategy(
            limit=step.retry_limit,
            retry_policy=step.retry_policy,
            backoff=Backoff(duration=RETRY_BACKOFF, factor=2),
        ),
        labels=labels,
    )


def workflow_template(
    defs: dg.Definitions,
    *,
    name: str,
    description: str,
    include: Callable[[Any], bool] | None = None,
    image: str | None = None,
) -> WorkflowTemplate:
    """One WorkflowTemplate for the assets ``include`` accepts (all by default)."""
    launcher = defs.resources.get("step_launcher")
    if not isinstance(launcher, StepLauncherResource):
        launcher = StepLauncherResource()
    steps = asset_steps(defs, include)
    if not steps:
        raise ValueError(f"workflow template {name!r}: no executable asset selected")
    groups = chunk_groups(steps)
    # the main DAG's nodes: each measurement-level step, and each chunk group
    node_of: dict[str, str] = {s.asset: s.template_name for s in steps if not s.chunked}
    group_names = []
    for i, group in enumerate(groups):
        group_name = "chunks" if len(groups) == 1 else f"chunks-{i + 1}"
        group_names.append(group_name)
        node_of.update({s.asset: group_name for s in group})
    main_edges: dict[str, set[str]] = {node: set() for node in node_of.values()}
    for step in steps:
        for parent in step.upstream:
            if node_of[parent] != node_of[step.asset]:
                main_edges[node_of[step.asset]].add(node_of[parent])
    try:
        main_order = list(TopologicalSorter(main_edges).static_order())
    except CycleError as exc:
        raise UnsupportedAsset(
            "the chunk fan-out and a measurement-level asset depend on each other "
            f"({exc.args[1]}): split the spectra-level assets into separate chains"
        ) from None
    worker_image = image or launcher.image
    with WorkflowTemplate(
        name=name,
        namespace=launcher.namespace,
        labels=LABELS,
        annotations={"workflows.argoproj.io/description": description},
        entrypoint="measurement",
        service_account_name=launcher.service_account_name,
        pod_gc=PodGC(strategy="OnPodSuccess"),
        ttl_strategy=TTLStrategy(seconds_after_completion=KEEP_FINISHED_S),
        arguments=[
            Parameter(name="measurement", description="measurement id (its partition key)"),
            Parameter(
                name="parameter_set",
                value=DEFAULT_PARAMETER_SET,
                description="parameter set name (newest version) or name@vN",
            ),
        ],
    ) as template:
        containers = {s.asset: _container(s, worker_image, launcher) for s in steps}
        group_dags = {}
        for group_name, group in zip(group_names, groups, strict=True):
            with DAG(
                name=f"{group_name}-of-one",
                inputs=[Parameter(name="measurement"), Parameter(name="chunk")],
            ) as dag:
                tasks = {}
                for step in group:
                    tasks[step.asset] = Task(
                        name=step.template_name,
                        template=containers[step.asset],
                        arguments={
                            "measurement": "{{inputs.parameters.measurement}}",
                            "chunk": "{{inputs.parameters.chunk}}",
                        },
                    )
                for step in group:
                    for parent in step.upstream:
                        if parent in tasks:
                            tasks[parent] >> tasks[step.asset]
            group_dags[group_name] = (dag, group[0].chunk_keys)
        with DAG(name="measurement"):
            tasks = {}
            for node in main_order:
                measurement = {"measurement": "{{workflow.parameters.measurement}}"}
                if node in group_dags:
                    dag, keys = group_dags[node]
                    tasks[node] = Task(
                        name=node,
                        template=dag,
                        arguments={**measurement, "chunk": "{{item}}"},
                        with_items=list(keys),
                    )
                else:
                    asset = next(a for a, n in node_of.items() if n == node)
                    tasks[node] = Task(name=node, template=containers[asset], arguments=measurement)
                for parent in sorted(main_edges[node]):
                    tasks[parent] >> tasks[node]
    return template


def export_workflow_templates(defs: dg.Definitions, *, image: str | None = None) -> list[dict]:
    """Every WorkflowTemplate of the code location, as Kubernetes documents (dicts).

    * ``em2q-measurement``: the whole asset graph for one measurement.
    * ``em2q-reprocess``: only the parameter-dependent assets, to compare another parameter set
      on a measurement whose chunks exist already.
    """
    templates = [
        workflow_template(
            defs,
            name="em2q-measurement",
            description="Every EM²Q asset of one measurement, chunks fanned out, as Dagster "
            "would materialize them.",
            image=image,
        ),
        workflow_template(
            defs,
            name="em2q-reprocess",
            description="The parameter-dependent EM²Q assets of one measurement for another "
            "parameter set; its chunks must exist.",
            include=lambda node: bool(node.metadata.get(PARAMETER_DEPENDENT)),
            image=image,
        ),
    ]
    return [_plain(t.to_dict()) for t in templates]


def _plain(document: Any) -> Any:
    """Plain JSON types only (YAML and JSON Schema validators see what Argo would)."""
    return json.loads(json.dumps(document))


def task_dependencies(dag_template: Mapping[str, Any]) -> dict[str, set[str]]:
    """``{task: tasks it waits for}`` of an exported DAG template (``depends`` expressions)."""
    found = {}
    for task in dag_template["dag"]["tasks"]:
        expression = task.get("depends") or ""
        found[task["name"]] = {
            name.split(".")[0] for name in re.findall(r"[A-Za-z0-9][-A-Za-z0-9.]*", expression)
        }
    return found
