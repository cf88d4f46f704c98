"""Running the platform's steps inside Dagster assets, every asset built from its catalogue
declaration (:mod:`em2q_resources.catalog`) by :func:`build_asset`.

Each asset's work is a plain function ``<asset>(step, partition, inputs, parameters) ->
StepResult`` (see :mod:`em2q_assets.provenance`), so that the same function runs in a Dagster
run, an Argo container or a shell (``python -m em2q_assets.step``). This module turns a Dagster
execution context into a :class:`StepContext`, runs every chunk of a partition range in one
step (spectra-level assets use ``BackfillPolicy.single_run``: one run per measurement instead
of one per chunk), and turns results into ``Output`` s with the UI's inline images and into
asset check results.
"""

import base64
import functools
import importlib
import math
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import dagster as dg

from em2q_assets.io_managers import PARAMETER_DEPENDENT, PER_STUDY
from em2q_assets.k8s import k8s_op_tags
from em2q_assets.partitions import (
    by_measurement,
    chunk_keys,
    measurement_partitions,
    spectra_partitions,
    split_key,
    study_partitions,
)
from em2q_assets.provenance import Image, StepContext, StepResult
from em2q_assets.run_failures import PARTITION_NOTE
from em2q_msi.errors import StepFailed
from em2q_resources.catalog import (
    CATALOG,
    AssetSpec,
    Automation,
    Catalog,
    Check,
    InvalidCatalog,
)
from em2q_resources.metadata.resource import MetadataStoreResource
from em2q_resources.parameter_sets import ResolvedParameters
from em2q_resources.settings import Settings
from em2q_resources.storage import StorageResource


@dataclass(frozen=True)
class Partition:
    """One partition of an asset: a measurement, or chunk ``chunk`` of ``chunk_count`` of it."""

    measurement_id: str
    chunk: int | None = None
    chunk_count: int | None = None

    def __str__(self) -> str:
        """The partition key exactly as Dagster writes it (``<measurement>|<chunk>``)."""
        if self.chunk is None:
            return self.measurement_id
        return f"{self.measurement_id}|{chunk_keys(self.chunk_count)[self.chunk]}"


@dataclass(frozen=True)
class StudyPartition:
    """One partition of a study asset: a study."""

    study_id: str

    def __str__(self) -> str:
        return self.study_id


Step = Callable[[StepContext, Partition, dict[str, Any], ResolvedParameters | None], StepResult]


def step_context(
    context: dg.AssetExecutionContext, metadata: MetadataStoreResource, storage: StorageResource
) -> StepContext:
    return StepContext(
        store=metadata.get_store(),
        storage=storage,
        run_id=context.run.run_id,
        engine="DAGSTER",
        image_digest=Settings.from_env().image_digest,
        log=context.log,
    )


def partitions_of(context: dg.AssetExecutionContext, chunk_count: int | None) -> list[Partition]:
    """The partitions this step materializes: one, or every chunk of a partition range."""
    keys = context.partition_keys if context.has_partition_key_range else [context.partition_key]
    partitions_def = context.assets_def.partitions_def
    found = []
    for key in keys:
        if chunk_count is not None and isinstance(key, str):
            key = partitions_def.get_partition_key_from_str(key)
        measurement_id, chunk = split_key(key)
        found.append(Partition(measurement_id, chunk, chunk_count if chunk is not None else None))
    return found


def chunk_workers(count: int, configured: int | None = None) -> int:
    """How many chunks of one measurement a step works on at once (numba kernels release the
    GIL): ``configured`` (``Settings.chunk_workers``), else the CPU count."""
    return max(1, min(count, configured or os.cpu_count() or 1))


def run_step(
    context: dg.AssetExecutionContext, step: Step, step_context_: StepContext, **options: Any
) -> dg.Output:
    """The Output of :func:`run_partitions` (same arguments)."""
    return output_of(run_partitions(context, step, step_context_, **options))


def run_partitions(
    context: dg.AssetExecutionContext,
    step: Step,
    step_context_: StepContext,
    *,
    inputs: Mapping[str, Any],
    parameters: ResolvedParameters | None = None,
    chunk_count: int | None = None,
    chunk_inputs: tuple[str, ...] = (),
    workers: int | None = None,
) -> list[tuple[Partition, StepResult]]:
    """Run ``step`` for every partition of this execution (chunks side by side): each
    partition with its result. A :class:`StepFailed` becomes a ``dg.Failure`` carrying its
    message and metadata.

    ``chunk_inputs`` name inputs that come per chunk (a range run hands them over as
    ``{chunk: manifest}``, a single-partition run as the manifest itself).
    """
    partitions = partitions_of(context, chunk_count)

    def one(partition: Partition) -> StepResult:
        own = dict(inputs)
        for name in chunk_inputs:
            value = inputs[name]
            own[name] = value[partition.chunk] if len(partitions) > 1 else value
        try:
            return step(step_context_, partition, own, parameters)
        except Exception as exc:  # the lifecycle's root reason names the chunk it happened in
            exc.add_note(f"{PARTITION_NOTE}{partition}")
            raise

    try:
        if len(partitions) == 1:
            results = [one(partitions[0])]
        else:
            with ThreadPoolExecutor(chunk_workers(len(partitions), workers)) as pool:
                results = list(pool.map(one, partitions))
    except StepFailed as failure:
        raise dg.Failure(description=str(failure), metadata=failure.metadata) from failure
    return list(zip(partitions, results, strict=True))


def output_of(done: Sequence[tuple[Partition, StepResult]]) -> dg.Output:
    """One partition: its manifest; a range: ``{chunk: manifest}`` with merged numbers."""
    if len(done) == 1:
        result = done[0][1]
        version = dg.DataVersion(result.data_version) if result.data_version else None
        return dg.Output(
            result.manifest, metadata=ui_metadata(result.metadata), data_version=version
        )
    return dg.Output(
        {p.chunk: r.manifest for p, r in done},
        metadata=ui_metadata(merge_metadata([r.metadata for _, r in done])),
    )


def merge_metadata(parts: list[dict[str, Any]]) -> dict[str, Any]:
    """Numbers of a range run: counts summed, other numbers averaged over chunks."""
    merged: dict[str, Any] = {"chunks": len(parts)}
    for key in parts[0]:
        values = [part.get(key) for part in parts]
        if all(isinstance(v, int) and not isinstance(v, bool) for v in values):
            merged[key] = sum(values)
        elif all(isinstance(v, int | float) and not isinstance(v, bool) for v in values):
            merged[key] = round(sum(values) if key == "seconds" else sum(values) / len(values), 6)
        else:
            merged[key] = values[0]
    return merged


def ui_metadata(metadata: Mapping[str, Any]) -> dict[str, Any]:
    """Images become inline markdown the Dagster UI renders; everything else stays as is."""
    return {
        key: markdown_png(value.png, value.caption) if isinstance(value, Image) else value
        for key, value in metadata.items()
    }


def markdown_png(png: bytes, caption: str) -> dg.MetadataValue:
    encoded = base64.b64encode(png).decode()
    return dg.MetadataValue.md(f"![{caption}](data:image/png;base64,{encoded})")


def step_function(spec: AssetSpec) -> Step:
    """The step function of a catalogue declaration: ``<step_module>.<asset name>``."""
    module = importlib.import_module(spec.step_module)
    step = getattr(module, spec.name, None)
    if not callable(step):
        raise InvalidCatalog(
            f"asset {spec.name!r}: {spec.step_module} has no step function {spec.name}"
            "(step, partition, inputs, parameters); the function is named after the asset"
        )
    return step


def automation_condition(automation: Automation) -> dg.AutomationCondition | None:
    if automation is Automation.EAGER:
        return dg.AutomationCondition.eager()
    if automation is Automation.AFTER_CHECKS:
        return (
            dg.AutomationCondition.eager()
            & dg.AutomationCondition.all_deps_blocking_checks_passed()
        )
    return None


def check_results(
    result: StepResult, declared: Sequence[Check] = ()
) -> Iterator[dg.AssetCheckResult]:
    """The step's evaluated checks (``em2q_msi.qc`` results); a check without a verdict
    (``passed is None``, e.g. no lock masses set) passes. A check that stops nothing (declared
    non-blocking) fails as a warning."""
    warnings = {c.name for c in declared if c.severity == "warn"}
    for check in result.checks:
        yield dg.AssetCheckResult(
            check_name=check.name,
            passed=check.passed is not False,
            severity=dg.AssetCheckSeverity.WARN
            if check.name in warnings
            else dg.AssetCheckSeverity.ERROR,
            metadata={
                "value": format_number(check.value),
                "threshold": f"{check.comparison} {check.threshold}",
                "detail": check.detail,
            },
        )


def format_number(value: float | None) -> str:
    """A check's value as people read it: 4 significant digits, ``n/a`` when not a number."""
    return "n/a" if value is None or not math.isfinite(value) else f"{value:.4g}"


def build_asset(
    spec: AssetSpec,
    catalog: Catalog,
    chunk_partitions: dg.MultiPartitionsDefinition,
    workers: int | None = None,
    retry_policy: dg.RetryPolicy | None = None,
) -> dg.AssetsDefinition:
    """The Dagster asset of one catalogue declaration.

    Inputs are the declared upstream assets' manifests (an input across partitionings reads
    every chunk of the measurement); resources are ``metadata`` and ``storage``, plus
    ``parameter_set`` for a parameter-dependent asset and ``step_launcher`` for a step that
    can be launched; the op carries the step kind's k8s tags; checks are blocking asset checks.
    """
    step = step_function(spec)
    ins: dict[str, dg.AssetIn] = {}
    chunk_inputs: list[str] = []
    for name in spec.inputs:
        if catalog.asset(name).chunked != spec.chunked:
            ins[name] = dg.AssetIn(partition_mapping=by_measurement())
        else:
            ins[name] = dg.AssetIn()
            if spec.chunked:
                chunk_inputs.append(name)
    resources = {"metadata", "storage"}
    if spec.parameter_dependent:
        resources.add("parameter_set")
    if spec.launched_step:
        resources.add("step_launcher")
    chunk_count = len(chunk_keys_of(chunk_partitions)) if spec.chunked else None

    @dg.asset(
        name=spec.name,
        ins=ins,
        deps=list(spec.after) or None,
        required_resource_keys=resources,
        partitions_def=chunk_partitions if spec.chunked else measurement_partitions,
        group_name=spec.group,
        kinds=set(spec.tools),
        code_version=catalog.code_version(spec.name),
        metadata={PARAMETER_DEPENDENT: True} if spec.parameter_dependent else None,
        automation_condition=automation_condition(spec.automation),
        check_specs=[
            dg.AssetCheckSpec(
                c.name, asset=spec.name, description=c.description, blocking=c.blocking
            )
            for c in spec.checks
        ]
        or None,  # fmt: skip
        backfill_policy=dg.BackfillPolicy.single_run() if spec.chunked else None,
        op_tags=k8s_op_tags(spec.kind),
        retry_policy=retry_policy,
        description=spec.description.format(chunk_count=chunk_count),
    )
    def _asset(context: dg.AssetExecutionContext, **inputs: Any):
        found = context.resources
        run = step
        if spec.launched_step and found.step_launcher.launches_steps:
            run = functools.partial(step, launch=launcher(context, spec, found))
        done = run_partitions(
            context,
            run,
            step_context(context, found.metadata, found.storage),
            inputs=inputs,
            parameters=found.parameter_set.resolve() if spec.parameter_dependent else None,
            chunk_count=chunk_count,
            chunk_inputs=tuple(chunk_inputs),
            workers=workers,
        )
        yield output_of(done)
        if spec.checks:
            for _, result in done:
                yield from check_results(result, spec.checks)

    return _asset


#: ``launch(arguments) -> summary``: the asset's ``em2q_msi.steps`` command run elsewhere (a
#: subprocess or a pod) with these arguments; returns the step's JSON summary
Launch = Callable[[Sequence[str]], dict]


def launcher(context: dg.AssetExecutionContext, spec: AssetSpec, resources: Any) -> Launch:
    def launch(arguments: Sequence[str]) -> dict:
        return resources.step_launcher.run_step(
            context, spec.launched_step, list(arguments), kind=spec.kind,
            storage_options=resources.storage.storage_options,
        )  # fmt: skip

    return launch


def chunk_keys_of(partitions: dg.MultiPartitionsDefinition) -> list[str]:
    return [
        key
        for d in partitions.partitions_defs
        if d.name != measurement_partitions.name
        for key in d.partitions_def.get_partition_keys()
    ]


def build_assets(
    chunk_count: int,
    catalog: Catalog = CATALOG,
    chunk_workers: int | None = None,
    retry_policy: dg.RetryPolicy | None = None,
) -> list[dg.AssetsDefinition]:
    """Every asset of ``catalog``, upstream first; spectra-level ones in ``chunk_count`` chunks,
    ``chunk_workers`` of a range run side by side (None: the CPU count); ``retry_policy``:
    each step's (``em2q_assets.k8s.step_retry_policy``)."""
    chunk_partitions = spectra_partitions(chunk_count)
    return [
        build_asset(spec, catalog, chunk_partitions, chunk_workers, retry_policy)
        for spec in catalog
    ]


def build_study_asset(
    spec: AssetSpec, retry_policy: dg.RetryPolicy | None = None
) -> dg.AssetsDefinition:
    """The Dagster asset of a study-level declaration: partitioned by ``study``; its inputs are
    study assets' manifests, its members' results are read from storage by the step."""
    step = step_function(spec)

    @dg.asset(
        name=spec.name,
        ins={name: dg.AssetIn() for name in spec.inputs},
        required_resource_keys={"metadata", "storage"},
        partitions_def=study_partitions,
        group_name=spec.group,
        kinds=set(spec.tools),
        code_version=spec.code_version,
        metadata={PER_STUDY: True},
        check_specs=[
            dg.AssetCheckSpec(
                c.name, asset=spec.name, description=c.description, blocking=c.blocking
            )
            for c in spec.checks
        ]
        or None,  # fmt: skip
        op_tags=k8s_op_tags(spec.kind),
        retry_policy=retry_policy,
        description=spec.description,
    )
    def _asset(context: dg.AssetExecutionContext, **inputs: Any):
        found = context.resources
        partition = StudyPartition(context.partition_key)
        try:
            result = step(
                step_context(context, found.metadata, found.storage), partition, inputs, None
            )
        except StepFailed as failure:
            raise dg.Failure(description=str(failure), metadata=failure.metadata) from failure
        yield output_of([(partition, result)])
        yield from check_results(result, spec.checks)

    return _asset


def build_study_assets(
    catalog: Catalog = CATALOG, retry_policy: dg.RetryPolicy | None = None
) -> list[dg.AssetsDefinition]:
    """Every study-level asset of ``catalog``, upstream first."""
    return [build_study_asset(spec, retry_policy) for spec in catalog.study_assets]
