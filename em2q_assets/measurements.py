"""``raw_measurement``: an uploaded imzML/ibd pair, validated, its facts in the catalog."""

import hashlib

import dagster as dg

from em2q_assets.adapters import Partition, run_step, step_context
from em2q_assets.partitions import measurement_partitions
from em2q_assets.provenance import StepContext, StepFailure, StepResult, recorded_run, set_status
from em2q_assets.storage_io import result_key
from em2q_msi.facts import measurement_facts
from em2q_msi.imzml import ImzML
from em2q_msi.validation import validate
from em2q_resources.metadata import load_schema
from em2q_resources.metadata.resource import MetadataStoreResource
from em2q_resources.parameters import ResolvedParameters
from em2q_resources.storage import StorageResource, measurement_prefixes


def imzml_uri(measurement, storage: StorageResource) -> tuple[str, str]:
    """URL and SHA-256 of the measurement's imzML file (the .ibd lies beside it); only a URL in
    the platform's storage under ``measurements/<id>/`` (``UnsafeKey`` otherwise)."""
    schema = load_schema()
    for stored in measurement.files or []:
        if stored.role == schema.FileRole.IMZML:
            uploads, _ = measurement_prefixes(measurement.id)
            return storage.checked_url(stored.uri, within=uploads), stored.checksum
    raise StepFailure(f"measurement {measurement.id} has no imzML file on record")


def ingest(
    step: StepContext,
    partition: Partition,
    inputs: dict,
    parameters: ResolvedParameters | None = None,
) -> StepResult:
    """Validate the uploaded pair and write its facts to the Measurement document."""
    schema = load_schema()
    store, storage = step.store, step.storage
    measurement_id = partition.measurement_id
    measurement = store.get(schema.Measurement, measurement_id).doc
    url, checksum = imzml_uri(measurement, storage)
    set_status(store, measurement_id, "PROCESSING", f"ingest run {step.run_id}")
    with recorded_run(
        step, "raw_measurement", str(partition), measurement_id=measurement_id
    ) as record:
        record.read("imzml", url, checksum)
        for stored in measurement.files or []:
            if stored.role == schema.FileRole.IBD:
                record.read("ibd", stored.uri, stored.checksum)
        report = validate(url, storage_options=storage.storage_options)
        if not report.ok:
            reason = "; ".join(p.message for p in report.problems[:5])
            set_status(store, measurement_id, "FAILED", f"validation: {reason}")
            raise StepFailure(
                f"{measurement_id} failed validation: {reason}",
                metadata={"problems": [p.to_dict() for p in report.problems]},
            )
        reader = ImzML.open(url, storage_options=storage.storage_options)
        facts = measurement_facts(reader)
        grid = facts["pixel_grid"]
        set_status(
            store,
            measurement_id,
            "PROCESSING",
            f"ingest run {step.run_id}",
            facts=schema.ImzMLFacts(
                mode=schema.ImzMLMode._NAMES_TO_VALUES[facts["mode"].upper()],
                pixels_x=int(grid["max_x"]),
                pixels_y=int(grid["max_y"]),
                pixels_z=int(grid["max_z"]),
                spectra_count=int(facts["n_spectra"]),
                mz_range=schema.MassRange(min_mz=facts["mz_min"], max_mz=facts["mz_max"]),
                uuid=facts["uuid"],
                mz_dtype=facts["mz_dtype"],
                intensity_dtype=facts["intensity_dtype"],
            ),
        )
        manifest = {
            "measurement_id": measurement_id,
            "folder": result_key(measurement_id, "raw_measurement", None, None),
            "imzml_uri": url,
            "mode": facts["mode"],
            "n_spectra": int(facts["n_spectra"]),
            "grid_shape": [int(grid["max_y"]), int(grid["max_x"])],
            "mz_range": [facts["mz_min"], facts["mz_max"]],
        }
    return StepResult(
        manifest,
        metadata={
            "spectra": int(facts["n_spectra"]),
            "mode": facts["mode"],
            "pixel grid": f"{grid['max_x']} × {grid['max_y']}",
            "m/z range": f"{facts['mz_min']:.4f} – {facts['mz_max']:.4f}",
            "imzML": dg.MetadataValue.url(url) if "://" in url else url,
        },
        data_version=hashlib.sha256(f"{checksum}".encode()).hexdigest()[:24],
    )


@dg.asset(
    partitions_def=measurement_partitions,
    group_name="ingest",
    kinds={"imzml", "elasticsearch"},
    code_version="1",
    description="The uploaded imzML/ibd pair, validated; its facts written to the catalog.",
)
def raw_measurement(
    context: dg.AssetExecutionContext,
    metadata: MetadataStoreResource,
    storage: StorageResource,
) -> dg.Output[dict]:
    return run_step(context, ingest, step_context(context, metadata, storage), inputs={})
