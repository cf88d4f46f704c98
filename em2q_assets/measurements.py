"""``raw_measurement``: an uploaded imzML/ibd pair, validated, its facts in the catalog."""

import hashlib

import dagster as dg

from em2q_assets.adapters import Partition
from em2q_assets.provenance import StepContext, StepResult, recorded_run
from em2q_msi.errors import StepFailed
from em2q_msi.facts import grid_facts, measurement_facts, pixel_grid
from em2q_msi.geometry import PixelGrid
from em2q_msi.imzml import ImzML
from em2q_msi.validation import validate
from em2q_resources import lifecycle
from em2q_resources.metadata import load_schema
from em2q_resources.metadata.schema import utc_now
from em2q_resources.parameter_sets import ResolvedParameters
from em2q_resources.results_layout import result_key
from em2q_resources.storage import StorageResource, measurement_prefixes


def imzml_uri(measurement, storage: StorageResource) -> tuple[str, str]:
    """URL and SHA-256 of the measurement's imzML file (the .ibd lies beside it); only a URL in
    the platform's storage under ``measurements/<id>/`` (``UnsafeKey`` otherwise)."""
    schema = load_schema()
    for stored in measurement.files or []:
        if stored.role == schema.FileRole.IMZML:
            uploads, _ = measurement_prefixes(measurement.id)
            return storage.checked_url(stored.uri, within=uploads), stored.checksum
    raise StepFailed(f"measurement {measurement.id} has no imzML file on record")


def measurement_grid(raw_manifest: dict) -> PixelGrid:
    """The measurement's pixel grid as ``raw_measurement`` recorded it (a manifest written
    before grids were recorded: the shape from (1, 1))."""
    if "grid" in raw_manifest:
        return PixelGrid.from_dict(raw_manifest["grid"])
    return PixelGrid.coerce(raw_manifest["grid_shape"])


def raw_measurement(
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
    lifecycle.start(
        store, measurement_id, f"ingest run {step.run_id}", actor=lifecycle.Actor.STEP,
        run_id=step.run_id, asset="raw_measurement",
    )  # fmt: skip
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
            lifecycle.fail(
                store,
                measurement_id,
                lifecycle.Reason(
                    lifecycle.Kind.VALIDATION,
                    f"validation: {reason}",
                    error_type=report.problems[0].code,
                    error_message=reason,
                    asset="raw_measurement",
                    partition=str(partition),
                    run_id=step.run_id,
                ),
                actor=lifecycle.Actor.STEP,
            )
            raise StepFailed(
                f"{measurement_id} failed validation: {reason}",
                metadata={"problems": [p.to_dict() for p in report.problems]},
            )
        reader = ImzML.open(url, storage_options=storage.storage_options)
        facts = measurement_facts(reader)
        settings = measurement.settings
        grid = pixel_grid(
            reader,
            (settings.pixel_size_x_um, settings.pixel_size_y_um) if settings else None,
        )
        facts_doc = schema.ImzMLFacts(
            mode=schema.ImzMLMode._NAMES_TO_VALUES[facts["mode"].upper()],
            **grid_facts(grid),
            spectra_count=int(facts["n_spectra"]),
            mz_range=schema.MassRange(min_mz=facts["mz_min"], max_mz=facts["mz_max"]),
            uuid=facts["uuid"],
            mz_dtype=facts["mz_dtype"],
            intensity_dtype=facts["intensity_dtype"],
        )

        def record_facts(doc) -> None:  # not a status change: the lifecycle is not involved
            doc.facts = facts_doc
            doc.updated_at = utc_now()

        store.modify(schema.Measurement, measurement_id, record_facts)
        manifest = {
            "measurement_id": measurement_id,
            "folder": result_key(measurement_id, "raw_measurement", None, None),
            "imzml_uri": url,
            "mode": facts["mode"],
            "n_spectra": int(facts["n_spectra"]),
            "grid_shape": list(grid.image_shape),
            "grid": grid.to_dict(),
            "mz_range": [facts["mz_min"], facts["mz_max"]],
        }
    return StepResult(
        manifest,
        metadata={
            "spectra": int(facts["n_spectra"]),
            "mode": facts["mode"],
            "pixel grid": " × ".join(str(n) for n in grid.shape[::-1])
            + f" from ({', '.join(str(v) for v in grid.origin)})",
            "m/z range": f"{facts['mz_min']:.4f} – {facts['mz_max']:.4f}",
            "imzML": dg.MetadataValue.url(url) if "://" in url else url,
        },
        data_version=hashlib.sha256(f"{checksum}".encode()).hexdigest()[:24],
    )
