"""``qc_report``: is the measurement good enough to analyse further?

Each QC check of the parameter set (TIC coverage, median SNR, empty-pixel fraction, lock-mass
accuracy; declared with the asset in ``em2q_resources.catalog``) is a blocking Dagster asset
check: when one fails, the peak table and ion images are
not computed for that measurement, and the Measurement document becomes ``FAILED`` with the
reason. When all pass, it becomes ``READY``.
"""

from em2q_assets.adapters import Partition, format_number
from em2q_assets.measurements import measurement_grid
from em2q_assets.provenance import (
    StepContext,
    StepResult,
    manifest_inputs,
    recorded_run,
)
from em2q_msi.qc import (
    concatenate_metrics,
    lock_mass_errors_ppm,
    mean_spectrum_peaks,
    measurement_summary,
)
from em2q_msi.qc_report import build_qc_report
from em2q_resources import lifecycle
from em2q_resources.parameter_sets import ResolvedParameters
from em2q_resources.results_layout import read_npy, result_key, write_qc_report


def qc_report(
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
        about = {"measurement_id": measurement_id, "parameter_set": parameters.id}
        uri = write_qc_report(storage, folder, build_qc_report(metrics, summary, about))
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
            "checksums": record.checksums_json(),
        },
        metadata={
            "verdict": "good enough to analyse" if summary.ok else "not good enough",
            "parameter set": parameters.id,
            **{c.name: _fmt(c.value) for c in summary.checks},
        },
        checks=list(summary.checks),
    )


_fmt = format_number
