"""``qc_report``: is the measurement good enough to analyse further?

Each QC check of the parameter set (TIC coverage, median SNR, empty-pixel fraction, lock-mass
accuracy) is a blocking Dagster asset check: when one fails, the peak table and ion images are
not computed for that measurement, and the Measurement document becomes ``FAILED`` with the
reason. When all pass, it becomes ``READY``.
"""

from typing import Any

import dagster as dg
import numpy as np

from em2q_assets.adapters import Partition, partitions_of, step_context
from em2q_assets.io_managers import PARAMETER_DEPENDENT
from em2q_assets.measurements import measurement_grid
from em2q_assets.partitions import by_measurement, measurement_partitions
from em2q_assets.provenance import (
    StepContext,
    StepResult,
    manifest_inputs,
    recorded_run,
)
from em2q_assets.storage_io import read_npy, result_key, write_json
from em2q_msi.qc import (
    concatenate_metrics,
    lock_mass_errors_ppm,
    mean_spectrum_peaks,
    measurement_summary,
)
from em2q_resources import lifecycle
from em2q_resources.metadata.resource import MetadataStoreResource
from em2q_resources.parameter_sets import ParameterSetResource, ResolvedParameters
from em2q_resources.storage import StorageResource

QC_CHECKS = {
    "tic_coverage": "Fraction of spectra with a TIC of at least a share of the median TIC.",
    "median_snr": "Median over spectra of the base-peak signal-to-noise ratio.",
    "empty_pixel_fraction": "Share of acquired pixels whose spectrum is empty (pixels outside "
    "the scanned area are not acquired, not empty).",
    "lock_mass_error_ppm": "Largest ppm error of the lock masses (passes when none are set).",
}


def assess_quality(
    step: StepContext, partition: Partition, inputs: dict, parameters: ResolvedParameters | None
) -> StepResult:
    """The QC verdict; moves the measurement to READY, or FAILED with the failed checks."""
    assert parameters is not None, "qc_report needs a parameter set"
    measurement_id, storage = partition.measurement_id, step.storage
    chunks, mean = inputs["preprocessed_chunks"], inputs["mean_spectrum"]
    qc = parameters.params.qc
    folder = result_key(measurement_id, "qc_report", parameters.content_hash, None)
    with recorded_run(
        step, "qc_report", str(partition), measurement_id=measurement_id, parameters=parameters
    ) as record:
        manifest_inputs(record, "preprocessed_chunks", chunks)
        parts = [
            {
                name[len("metric_") :]: read_npy(storage, uri)
                for name, uri in manifest["outputs"].items()
                if name.startswith("metric_")
            }
            for _, manifest in sorted(chunks.items())
        ]
        metrics = concatenate_metrics(parts)
        errors = None
        if qc.lock_masses:
            mz = read_npy(storage, mean["outputs"]["mz"])
            intensity = read_npy(storage, mean["outputs"]["intensity"])
            peak_mz, _ = mean_spectrum_peaks(mz, intensity, parameters.params.peak_picking)
            errors = lock_mass_errors_ppm(peak_mz, qc.lock_masses, qc.lock_mass_search_ppm)
        grid = measurement_grid(inputs["raw_measurement"])
        summary = measurement_summary(metrics, grid, errors, qc)
        report = {
            **summary.to_dict(),
            "measurement_id": measurement_id,
            "parameter_set": parameters.id,
            "per_spectrum_tic": [float(v) for v in metrics["tic"]],
            "snr": _stats(metrics["snr"], "noise estimate 0, SNR not a number"),
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
        lifecycle.fail(
            step.store,
            measurement_id,
            lifecycle.Reason(
                lifecycle.Kind.QC,
                f"QC failed with parameter set {parameters.id}: {reason}",
                asset="qc_report",
                partition=str(partition),
                run_id=step.run_id,
            ),
            actor=lifecycle.Actor.STEP,
        )
    else:
        lifecycle.ready(
            step.store, measurement_id, f"QC passed with parameter set {parameters.id}",
            run_id=step.run_id, asset="qc_report",
        )  # fmt: skip
    return StepResult(
        {
            "measurement_id": measurement_id,
            "folder": folder,
            "parameter_hash": parameters.content_hash,
            "ok": summary.ok,
            "qc": uri,
        },
        metadata={
            "verdict": "good enough to analyse" if summary.ok else "not good enough",
            "parameter set": parameters.id,
            **{c.name: _fmt(c.value) for c in summary.checks},
        },
        checks=list(summary.checks),
    )


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
    step = step_context(context, metadata, storage)
    partition = partitions_of(context, None)[0]
    inputs = {
        "raw_measurement": raw_measurement,
        "preprocessed_chunks": preprocessed_chunks,
        "mean_spectrum": mean_spectrum,
    }
    result = assess_quality(step, partition, inputs, parameter_set.resolve())
    yield dg.Output(result.manifest, metadata=result.metadata)
    for check in result.checks:
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


def _stats(values: np.ndarray, not_finite: str = "not a number") -> dict[str, Any]:
    """min, median and max over the finite values; values that are not finite numbers (e.g.
    the SNR of a spectrum whose noise is 0) are left out, counted, and ``reason`` says why."""
    values = np.asarray(values, dtype=np.float64)
    finite = values[np.isfinite(values)]
    out: dict[str, Any] = {"min": None, "median": None, "max": None}
    if finite.size:
        out = {
            "min": float(finite.min()),
            "median": float(np.median(finite)),
            "max": float(finite.max()),
        }
    left_out = int(values.size - finite.size)
    if values.size == 0:
        out["reason"] = "no spectra"
    elif left_out:
        out["not_finite"] = left_out
        out["reason"] = f"{left_out} of {values.size} spectra left out: {not_finite}"
    return out


def _fmt(value: float | None) -> str:
    return "n/a" if value is None or not np.isfinite(value) else f"{value:.4g}"
