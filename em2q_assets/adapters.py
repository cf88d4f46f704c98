"""Running the platform's steps inside Dagster assets.

Each asset's work is a plain function ``step(context, partition, inputs, parameters) ->
StepResult`` (see :mod:`em2q_assets.provenance`), so that the same function runs in a Dagster
run, an Argo container or a shell (``python -m em2q_assets.step``). This module turns a Dagster
execution context into a :class:`StepContext`, runs every chunk of a partition range in one
step (spectra-level assets use ``BackfillPolicy.single_run``: one run per measurement instead
of one per chunk), and turns results into ``Output`` s with the UI's inline images.
"""

import base64
import os
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import dagster as dg

from em2q_assets.io_managers import PARAMETER_DEPENDENT
from em2q_assets.partitions import chunk_keys, split_key
from em2q_assets.provenance import Image, StepContext, StepFailure, StepResult
from em2q_assets.run_failures import PARTITION_NOTE
from em2q_resources.metadata.resource import MetadataStoreResource
from em2q_resources.parameter_sets import ResolvedParameters
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


Step = Callable[[StepContext, Partition, dict[str, Any], ResolvedParameters | None], StepResult]


def step_context(
    context: dg.AssetExecutionContext, metadata: MetadataStoreResource, storage: StorageResource
) -> StepContext:
    return StepContext(
        store=metadata.get_store(),
        storage=storage,
        run_id=context.run.run_id,
        engine="DAGSTER",
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
    context: dg.AssetExecutionContext,
    step: Step,
    step_context_: StepContext,
    *,
    inputs: Mapping[str, Any],
    parameters: ResolvedParameters | None = None,
    chunk_count: int | None = None,
    chunk_inputs: tuple[str, ...] = (),
    workers: int | None = None,
) -> dg.Output:
    """Run ``step`` for every partition of this execution; chunks run side by side.

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
    except StepFailure as failure:
        raise dg.Failure(description=str(failure), metadata=failure.metadata) from failure
    if len(results) == 1:
        result = results[0]
        version = dg.DataVersion(result.data_version) if result.data_version else None
        return dg.Output(
            result.manifest, metadata=ui_metadata(result.metadata), data_version=version
        )
    return dg.Output(
        {p.chunk: r.manifest for p, r in zip(partitions, results, strict=True)},
        metadata=ui_metadata(merge_metadata([r.metadata for r in results])),
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


def step_asset(
    step: Step,
    *,
    name: str,
    ins: Mapping[str, dg.AssetIn],
    parameter_dependent: bool = False,
    **asset_arguments: Any,
) -> dg.AssetsDefinition:
    """A measurement-level asset whose work is ``step``: inputs as declared in ``ins``, the
    ``metadata`` and ``storage`` resources, and the run's parameter set when it depends on one."""
    resources = {"metadata", "storage"} | ({"parameter_set"} if parameter_dependent else set())

    @dg.asset(
        name=name,
        ins=dict(ins),
        required_resource_keys=resources,
        metadata={PARAMETER_DEPENDENT: True} if parameter_dependent else None,
        **asset_arguments,
    )
    def _asset(context: dg.AssetExecutionContext, **inputs: Any) -> dg.Output:
        found = context.resources
        return run_step(
            context,
            step,
            step_context(context, found.metadata, found.storage),
            inputs=inputs,
            parameters=found.parameter_set.resolve() if parameter_dependent else None,
        )

    return _asset
