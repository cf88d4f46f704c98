"""Provenance: every materialization writes a ``WorkflowRun`` document, and measurement status
follows the runs so technicians see the outcome in the catalog."""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime

import dagster as dg

import em2q_msi
from em2q_resources.metadata import MetadataStore, load_schema
from em2q_resources.metadata.store import utc_now
from em2q_resources.parameters import ResolvedParameters

CODE_VERSION = getattr(em2q_msi, "__version__", "0.1.0")


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def set_status(
    store: MetadataStore, measurement_id: str, status: str, reason: str | None = None, **fields
) -> None:
    """Move a measurement to ``status`` (a ``MeasurementStatus`` name), with the reason."""
    schema = load_schema()

    def change(doc) -> None:
        doc.status = schema.MeasurementStatus._NAMES_TO_VALUES[status]
        doc.status_reason = reason
        doc.updated_at = utc_now()
        for name, value in fields.items():
            setattr(doc, name, value)

    store.modify(schema.Measurement, measurement_id, change)


@dataclass
class RunRecord:
    """What one materialization read and wrote; filled in by the asset as it goes."""

    inputs: dict[str, tuple[str, str | None]] = field(default_factory=dict)
    outputs: dict[str, str] = field(default_factory=dict)

    def read(self, name: str, uri: str, sha256: str | None = None) -> None:
        self.inputs[name] = (uri, sha256)

    def wrote(self, name: str, uri: str) -> None:
        self.outputs[name] = uri


@contextmanager
def recorded_run(
    context: dg.AssetExecutionContext,
    store: MetadataStore,
    *,
    measurement_id: str,
    parameters: ResolvedParameters | None = None,
) -> Iterator[RunRecord]:
    """Write a ``WorkflowRun`` document when the block ends, succeeded or failed."""
    schema = load_schema()
    record = RunRecord()
    started_at, started = utc_now(), time.perf_counter()
    asset = context.asset_key.path[-1]
    partition = str(context.partition_key) if context.has_partition_key else None
    error: str | None = None
    try:
        yield record
    except BaseException as exc:
        error = f"{type(exc).__name__}: {exc}"
        raise
    finally:
        run = schema.WorkflowRun(
            id=f"{context.run.run_id}:{asset}:{partition or 'all'}",
            engine=schema.RunEngine.DAGSTER,
            run_id=context.run.run_id,
            workflow=asset,
            measurement_id=measurement_id,
            partition=partition,
            parameter_set_id=parameters.id if parameters else None,
            parameter_set_hash=parameters.content_hash if parameters else None,
            code_version=CODE_VERSION,
            inputs=[
                schema.ResultLocation(name=n, uri=u, sha256=s)
                for n, (u, s) in sorted(record.inputs.items())
            ],
            outputs=[
                schema.ResultLocation(name=n, uri=u) for n, u in sorted(record.outputs.items())
            ],
            status=schema.RunStatus.FAILED if error else schema.RunStatus.SUCCEEDED,
            started_at=started_at,
            finished_at=datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            duration_s=round(time.perf_counter() - started, 6),
            error=error,
        )
        store.update(run, None)


def manifest_inputs(record: RunRecord, name: str, manifests: Mapping) -> None:
    """Record upstream manifests as inputs (their content hash stands for what was read)."""
    for key, manifest in manifests.items():
        data = json.dumps(manifest, sort_keys=True).encode()
        record.read(f"{name}[{key}]", manifest.get("folder", ""), sha256_bytes(data))
