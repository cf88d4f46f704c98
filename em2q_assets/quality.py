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


def qc_trends(
    step: StepContext, partition: Partition, inputs: dict, parameters: ResolvedParameters | None
) -> StepResult:
    """The measurement's QC numbers recorded in the catalog and charted with its instrument's
    earlier ones; the ``qc_control_limits`` check warns naming each metric out of limits."""
    from em2q_msi.qc import QCCheck
    from em2q_msi.qc_trends import control_chart, out_of_limits, qc_numbers
    from em2q_resources.metadata.qc_records import (
        instrument_history,
        numbers_of,
        record_qc,
    )
    from em2q_resources.results_layout import read_qc_report, write_json

    assert parameters is not None, "qc_trends needs a parameter set"
    measurement_id, storage, store = partition.measurement_id, step.storage, step.store
    folder = result_key(measurement_id, "qc_trends", parameters.content_hash, None)
    with recorded_run(
        step, "qc_trends", str(partition), measurement_id=measurement_id, parameters=parameters
    ) as record:
        qc_uri = inputs["qc_report"]["qc"]
        record.read("qc", qc_uri)
        numbers = qc_numbers(read_qc_report(storage, qc_uri))
        measurement = store.get(store.schema.Measurement, measurement_id).doc
        mine = record_qc(store, measurement, parameters.id, numbers)
        # the search may not see the record just written (no refresh wait: up to 1 s of
        # latency per measurement); it is this step's own, so it is added here
        history = [
            r
            for r in instrument_history(store, mine.instrument, parameters.id)
            if r.measurement_id != mine.measurement_id
        ]
        key = (mine.acquired_at, mine.measurement_id)
        history = sorted([*history, mine], key=lambda r: (r.acquired_at, r.measurement_id))
        before = [numbers_of(r) for r in history if (r.acquired_at, r.measurement_id) < key]
        outside = out_of_limits(before, numbers)
        upto = [r for r in history if (r.acquired_at, r.measurement_id) <= key]
        charts = {
            metric: {
                **control_chart(
                    metric, [numbers_of(r).get(metric, float("nan")) for r in upto]
                ).to_dict(),
                "measurements": [r.measurement_id for r in upto],
                "acquired_at": [r.acquired_at for r in upto],
            }
            for metric in sorted(numbers)
        }
        uri = write_json(
            storage,
            f"{folder}/qc_trends.json",
            {"instrument": mine.instrument, "parameter_set": parameters.id, "charts": charts},
        )
        record.wrote("charts", uri)
    detail = "; ".join(
        f"{metric} = {_fmt(value)} outside [{_fmt(low)}, {_fmt(high)}]"
        for metric, (value, low, high) in sorted(outside.items())
    )
    check = QCCheck(
        "qc_control_limits",
        float(len(outside)),
        0.0,
        "<=",
        not outside,
        (f"{detail} (±3σ of the earlier measurements of {mine.instrument})" if outside
         else f"within the control limits of {mine.instrument} ({len(before)} earlier)"),
    )  # fmt: skip
    return StepResult(
        {
            "measurement_id": measurement_id,
            "folder": folder,
            "parameter_hash": parameters.content_hash,
            "instrument": mine.instrument,
            "outside_limits": sorted(outside),
            "charts": uri,
        },
        metadata={
            "instrument": mine.instrument,
            "earlier measurements": len(before),
            "outside the control limits": ", ".join(sorted(outside)) or "none",
        },
        checks=[check],
    )
