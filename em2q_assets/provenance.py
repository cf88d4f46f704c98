"""Provenance: every materialization writes a ``WorkflowRun`` document (the measurement's
status follows the runs through ``em2q_resources.lifecycle``).

Nothing here needs Dagster: the same steps run inside Dagster assets and outside them.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import em2q_msi
from em2q_resources.metadata import load_schema
from em2q_resources.metadata.schema import utc_now
from em2q_resources.parameter_sets import ResolvedParameters
from em2q_resources.results_layout import Checksum, checksum_of_output
from em2q_resources.storage import StorageResource

if TYPE_CHECKING:
    from em2q_resources.metadata.store import MetadataStore

CODE_VERSION = getattr(em2q_msi, "__version__", "0.1.0")


def step_code_version(asset: str) -> str:
    """The code version of ``asset``'s step (the catalogue's, derived from the code it runs);
    an asset outside the catalogue (a test's throwaway one): the package version."""
    from em2q_resources.catalog import CATALOG

    return CATALOG.code_version(asset) if asset in CATALOG else CODE_VERSION


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass
class RunRecord:
    """What one materialization read and wrote; filled in by the asset as it goes.

    Each output gets its checksum as it is recorded: from the bytes just written (a
    ``results_layout.StoredFile``), else read back once from ``storage`` (a chunk folder).
    """

    inputs: dict[str, tuple[str, str | None]] = field(default_factory=dict)
    outputs: dict[str, str] = field(default_factory=dict)
    checksums: dict[str, Checksum] = field(default_factory=dict)
    storage: StorageResource | None = None

    def read(self, name: str, uri: str, sha256: str | None = None) -> None:
        self.inputs[name] = (uri, sha256)

    def wrote(self, name: str, uri: str) -> None:
        self.outputs[name] = str(uri)
        if self.storage is not None:
            self.checksums[name] = checksum_of_output(self.storage, uri)

    def wrote_all(self, outputs: Mapping[str, str]) -> None:
        for name, uri in outputs.items():
            self.wrote(name, uri)

    def checksums_json(self) -> dict[str, dict[str, Any]]:
        """``{output name: {"sha256", "size"}}``, as the manifest carries it."""
        return {name: c.to_dict() for name, c in sorted(self.checksums.items())}


@dataclass(frozen=True)
class StepContext:
    """What one asset step needs, whoever runs it: a Dagster run, an Argo container or a shell
    (``python -m em2q_assets.step``). The step's results and records are the same in each."""

    store: MetadataStore
    storage: StorageResource
    run_id: str
    engine: str = "DAGSTER"  # a RunEngine name
    #: the container image the step runs in (``Settings.image_digest``; None outside a pod)
    image_digest: str | None = None
    log: logging.Logger = field(default=logging.getLogger("em2q.step"))


@dataclass(frozen=True)
class Image:
    """A PNG the Dagster UI shows inline with the materialization."""

    png: bytes
    caption: str


@dataclass
class StepResult:
    """A step's manifest (what the IO manager stores) and the numbers people look at."""

    manifest: dict[str, Any]
    metadata: dict[str, Any] = field(default_factory=dict)
    data_version: str | None = None
    #: QC checks the step evaluated (``em2q_msi.qc`` check results), blocking when failed
    checks: list[Any] = field(default_factory=list)


def utc_timestamp() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@contextmanager
def recorded_run(
    step: StepContext,
    asset: str,
    partition: str | None,
    *,
    measurement_id: str,
    parameters: ResolvedParameters | None = None,
) -> Iterator[RunRecord]:
    """Write a ``WorkflowRun`` document when the block ends, succeeded or failed."""
    schema = load_schema()
    record = RunRecord(storage=step.storage)
    started_at, started = utc_now(), time.perf_counter()
    error: str | None = None
    try:
        yield record
    except BaseException as exc:
        error = f"{type(exc).__name__}: {exc}"
        raise
    finally:
        run = schema.WorkflowRun(
            id=f"{step.run_id}:{asset}:{partition or 'all'}",
            engine=schema.RunEngine._NAMES_TO_VALUES[step.engine],
            run_id=step.run_id,
            workflow=asset,
            measurement_id=measurement_id,
            partition=partition,
            parameter_set_id=parameters.id if parameters else None,
            parameter_set_hash=parameters.content_hash if parameters else None,
            code_version=step_code_version(asset),
            image_digest=step.image_digest,
            inputs=[
                schema.ResultLocation(name=n, uri=u, sha256=s)
                for n, (u, s) in sorted(record.inputs.items())
            ],
            outputs=[
                schema.ResultLocation(
                    name=n,
                    uri=u,
                    sha256=record.checksums[n].sha256 if n in record.checksums else None,
                    size=record.checksums[n].size if n in record.checksums else None,
                )
                for n, u in sorted(record.outputs.items())
            ],
            status=schema.RunStatus.FAILED if error else schema.RunStatus.SUCCEEDED,
            started_at=started_at,
            finished_at=utc_timestamp(),
            duration_s=round(time.perf_counter() - started, 6),
            error=error,
        )
        step.store.update(run, None)


def manifest_inputs(record: RunRecord, name: str, manifests: Mapping) -> None:
    """Record upstream manifests as inputs (their content hash stands for what was read)."""
    for key, manifest in manifests.items():
        data = json.dumps(manifest, sort_keys=True).encode()
        record.read(f"{name}[{key}]", manifest.get("folder", ""), sha256_bytes(data))
