"""``qc_report``: is the measurement good enough to analyse further?

Each QC check of the parameter set (TIC coverage, median SNR, empty-pixel fraction, lock-mass
accuracy) is a blocking Dagster asset check: when one fails, the peak table and ion images are
not computed for that measurement, and the Measurement document becomes ``FAILED`` with the
reason. When all pass, it becomes ``READY``.
"""

import dagster as dg
import numpy as np

from em2q_assets.io_managers import PARAMETER_DEPENDENT
from em2q_assets.partitions import by_measurement, measurement_partitions
from em2q_assets.provenance import manifest_inputs, recorded_run, set_status
from em2q_assets.storage_io import read_npy, result_key, write_json
from em2q_msi.qc import (
    concatenate_metrics,
    lock_mass_errors_ppm,
    mean_spectrum_peaks,
    measurement_summary,
)
from em2q_resources.metadata.resource import MetadataStoreResource
from em2q_resources.parameters import ParameterSetResource
from em2q_resources.storage import StorageResource

QC_CHECKS = {
    "tic_coverage": "Fraction of spectra with a TIC of at least a share of the median TIC.",
    "median_snr": "Median over spectra of the base-peak signal-to-noise ratio.",
    "empty_pixel_fraction": "Share of grid pixels without a spectrum or with an empty one.",
    "lock_mass_error_ppm": "Largest ppm error of the lock masses (passes when none are set).",
}


@dg.asset(
    partitions_def=measurement_partitions,
    ins={"preprocessed_chunks": dg.AssetIn(partition_mapping=by_measurement())},
    group_name="quality",
    kinds={"numpy"},
    code_version="1",
    metadata={PARAMETER_DEPENDENT: True},
    automation_condition=dg.AutomationCondition.eager(),
    check_specs=[
        dg.AssetCheckSpec(name, asset="qc_report", description=text, blocking=True)
        for name, text in QC_CHECKS.items()
    ],
    description="QC verdict with the numbers behind it; blocking checks gate further analysis.",
)
def qc_report(
    context: dg.AssetExecutionContext,
    raw_measurement: dict,
    preprocessed_chunks: dict,
    mean_spectrum: dict,
    metadata: MetadataStoreResource,
    storage: StorageResource,
    parameter_set: ParameterSetResource,
):
    measurement_id = context.partition_key
    store = metadata.get_store()
    resolved = parameter_set.resolve()
    qc = resolved.params.qc
    folder = result_key(measurement_id, "qc_report", resolved.content_hash, None)
    with recorded_run(context, store, measurement_id=measurement_id, parameters=resolved) as record:
        manifest_inputs(record, "preprocessed_chunks", preprocessed_chunks)
        parts = [
            {
                name[len("metric_") :]: read_npy(storage, uri)
                for name, uri in manifest["outputs"].items()
                if name.startswith("metric_")
            }
            for manifest in preprocessed_chunks.values()
        ]
        metrics = concatenate_metrics(parts)
        errors = None
        if qc.lock_masses:
            mz = read_npy(storage, mean_spectrum["outputs"]["mz"])
            intensity = read_npy(storage, mean_spectrum["outputs"]["intensity"])
            peak_mz, _ = mean_spectrum_peaks(mz, intensity, resolved.params.peak_picking)
            errors = lock_mass_errors_ppm(peak_mz, qc.lock_masses, qc.lock_mass_search_ppm)
        summary = measurement_summary(metrics, tuple(raw_measurement["grid_shape"]), errors, qc)
        report = {
            **summary.to_dict(),
            "measurement_id": measurement_id,
            "parameter_set": resolved.id,
            "per_spectrum_tic": [float(v) for v in metrics["tic"]],
            "snr": _stats(metrics["snr"]),
            "noise": _stats(metrics["noise"]),
            "peaks_per_spectrum": _stats(metrics["n_peaks"]),
        }
        uri = write_json(storage, f"{folder}/qc.json", report)
        record.wrote("qc", uri)
    failed = [c for c in summary.checks if c.passed is False]
    if failed:
        reason = "; ".join(
            f"{c.name} = {_fmt(c.value)} (needs {c.comparison} {c.threshold})" for c in failed
        )
        set_status(store, measurement_id, "FAILED", f"QC failed: {reason}")
    else:
        set_status(store, measurement_id, "READY", f"QC passed with parameter set {resolved.id}")
    yield dg.Output(
        {
            "measurement_id": measurement_id,
            "folder": folder,
            "parameter_hash": resolved.content_hash,
            "ok": summary.ok,
            "qc": uri,
        },
        metadata={
            "verdict": "good enough to analyse" if summary.ok else "not good enough",
            "parameter set": resolved.id,
            **{c.name: _fmt(c.value) for c in summary.checks},
        },
    )
    for check in summary.checks:
        yield dg.AssetCheckResult(
            check_name=check.name,
            passed=check.passed is not False,
            severity=dg.AssetCheckSeverity.ERROR,
            metadata={
                "value": _fmt(check.value),
                "threshold": f"{check.comparison} {check.threshold}",
                "detail": check.detail,
            },
        )


def _stats(values: np.ndarray) -> dict[str, float]:
    values = np.asarray(values, dtype=np.float64)
    if values.size == 0:
        return {"min": 0.0, "median": 0.0, "max": 0.0}
    return {
        "min": float(values.min()),
        "median": float(np.median(values)),
        "max": float(values.max()),
    }


def _fmt(value: float | None) -> str:
    return "n/a" if value is None or not np.isfinite(value) else f"{value:.4g}"
