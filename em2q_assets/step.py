"""``python -m em2q_assets.step ASSET --measurement ID [--chunk I] ...``: one asset partition,
outside Dagster.

What an Argo container (``argo_bridge``) or a shell runs: the same step function the Dagster
asset runs, reading its upstream manifests from storage where Dagster's IO manager put them,
writing the same result paths, the same manifest and the same ``WorkflowRun`` document (engine
``ARGO`` or ``LOCAL``, run id of the caller's choosing), so the catalog cannot tell the two
apart. Which inputs an asset reads, whether it is per chunk and whether it depends on the
parameter set all come from the asset catalogue (``em2q_resources.catalog``), as the Dagster
definitions do, not from a second list.

Settings (Elasticsearch, storage, K chunks) come from the ``EM2Q_*`` environment. Prints one
line of JSON (asset, partition, manifest). Exit status: 0 done, 1 the step failed on its input
or a blocking QC check failed (downstream steps must not run), 2 usage errors.
"""

from __future__ import annotations

import argparse
import json
import sys
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from em2q_assets.adapters import Partition, Step, step_function
from em2q_assets.provenance import StepContext, StepResult
from em2q_msi.errors import StepFailed
from em2q_resources.catalog import CATALOG, Catalog
from em2q_resources.metadata.resource import MetadataStoreResource
from em2q_resources.metadata.schema import (
    InvalidIdentifier,
    check_identifier,
    check_versioned_identifier,
)
from em2q_resources.parameter_sets import DEFAULT_NAME, resolve
from em2q_resources.results_layout import manifest_key, read_json, write_json
from em2q_resources.settings import Settings
from em2q_resources.storage import StorageResource

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
ENGINES = ("ARGO", "LOCAL")


def steps(catalog: Catalog = CATALOG) -> dict[str, Step]:
    """The step function of each asset of ``catalog``."""
    return {spec.name: step_function(spec) for spec in catalog}


class UsageError(Exception):
    """Bad command-line input (exit status 2)."""


@dataclass(frozen=True)
class AssetShape:
    """What the catalogue says about one asset: per chunk?, parameter set?, its inputs."""

    name: str
    chunk_count: int | None
    parameter_dependent: bool
    inputs: tuple[str, ...]  # upstream asset names (each input is named after its asset)


def asset_shapes(catalog: Catalog, chunk_count: int) -> dict[str, AssetShape]:
    """Each asset of ``catalog`` as this command runs it, spectra in ``chunk_count`` chunks."""
    return {
        spec.name: AssetShape(
            name=spec.name,
            chunk_count=chunk_count if spec.chunked else None,
            parameter_dependent=spec.parameter_dependent,
            inputs=spec.inputs,
        )
        for spec in catalog
    }


def run(
    asset: str,
    measurement_id: str,
    *,
    chunk: int | None = None,
    parameter_set: str = DEFAULT_NAME,
    run_id: str | None = None,
    engine: str = "LOCAL",
    settings: Settings | None = None,
    catalog: Catalog = CATALOG,
) -> StepResult:
    """Materialize one partition of ``asset`` as the Dagster asset would. An id outside the
    schema's grammar raises ``InvalidIdentifier`` before anything is read or written."""
    check_identifier(measurement_id, "--measurement")
    check_versioned_identifier(parameter_set, "--parameter-set")
    settings = settings or Settings.from_env()
    shapes = asset_shapes(catalog, settings.spectra_chunks)
    if asset not in shapes:
        raise UsageError(f"unknown asset {asset!r}; one of: {', '.join(sorted(shapes))}")
    if engine not in ENGINES:
        raise UsageError(f"unknown engine {engine!r}; one of: {', '.join(ENGINES)}")
    shape = shapes[asset]
    if (chunk is None) != (shape.chunk_count is None):
        needs = f"--chunk 0..{shape.chunk_count - 1}" if shape.chunk_count else "no --chunk"
        raise UsageError(
            f"{asset} is {'per chunk' if shape.chunk_count else 'per measurement'}: give {needs}"
        )
    if chunk is not None and not 0 <= chunk < shape.chunk_count:
        raise UsageError(f"--chunk {chunk} is outside 0..{shape.chunk_count - 1}")
    if not settings.elasticsearch_url:
        raise UsageError("no Elasticsearch: set EM2Q_ELASTICSEARCH_URL")
    storage = StorageResource.from_settings(settings)
    store = MetadataStoreResource.from_settings(settings).get_store()
    step = StepContext(
        store=store,
        storage=storage,
        run_id=run_id or f"local-{uuid.uuid4().hex[:12]}",
        engine=engine,
        image_digest=settings.image_digest,
    )
    parameters = resolve(store, parameter_set)
    partition = Partition(measurement_id, chunk, shape.chunk_count)

    missing: list[str] = []

    def manifest_of(upstream: str, upstream_chunk: int | None) -> dict[str, Any] | None:
        digest = parameters.content_hash if shapes[upstream].parameter_dependent else None
        key = manifest_key(upstream, measurement_id, upstream_chunk, digest)
        try:
            return read_json(storage, storage.url(key))
        except FileNotFoundError:
            where = f" chunk {upstream_chunk}" if upstream_chunk is not None else ""
            missing.append(f"{upstream}{where} ({key})")
            return None

    inputs: dict[str, Any] = {}
    for upstream in shape.inputs:
        upstream_chunks = shapes[upstream].chunk_count
        if upstream_chunks is None:
            inputs[upstream] = manifest_of(upstream, None)
        elif chunk is not None:
            inputs[upstream] = manifest_of(upstream, chunk)
        else:
            inputs[upstream] = {i: manifest_of(upstream, i) for i in range(upstream_chunks)}
    if missing:
        raise StepFailed(
            f"{asset} of {measurement_id} needs what is not materialized yet: "
            f"{'; '.join(missing)} — run those steps first"
        )
    result = step_function(catalog.asset(asset))(
        step, partition, inputs, parameters if shape.parameter_dependent else None
    )
    digest = parameters.content_hash if shape.parameter_dependent else None
    write_json(storage, manifest_key(asset, measurement_id, chunk, digest), result.manifest)
    return result


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m em2q_assets.step",
        description="Materialize one partition of an EM²Q asset outside Dagster (Argo, shell).",
    )
    parser.add_argument("asset", help="asset name, e.g. spectra_chunks")
    parser.add_argument("--measurement", required=True, help="measurement id")
    parser.add_argument("--chunk", type=int, help="chunk index, for spectra-level assets")
    parser.add_argument("--parameter-set", default=DEFAULT_NAME, help="name or name@vN")
    parser.add_argument("--run-id", help="recorded in the WorkflowRun (Argo: workflow name)")
    parser.add_argument("--engine", default="LOCAL", choices=ENGINES)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:
        return EXIT_USAGE if exit_.code else EXIT_OK
    try:
        result = run(
            args.asset,
            args.measurement,
            chunk=args.chunk,
            parameter_set=args.parameter_set,
            run_id=args.run_id,
            engine=args.engine,
        )
    except UsageError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_USAGE
    except InvalidIdentifier as error:
        print(f"error: invalid input: {error}", file=sys.stderr)
        return EXIT_USAGE
    except StepFailed as failure:
        print(json.dumps({"asset": args.asset, "error": str(failure)}))
        print(f"error: {failure}", file=sys.stderr)
        return EXIT_FAILED
    failed = [c.name for c in result.checks if c.passed is False]
    print(
        json.dumps(
            {
                "asset": args.asset,
                "measurement": args.measurement,
                "chunk": args.chunk,
                "manifest": result.manifest,
                "failed_checks": failed,
            },
            default=str,
        )
    )
    if failed:
        print(f"error: blocking QC checks failed: {', '.join(failed)}", file=sys.stderr)
        return EXIT_FAILED
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
