"""The asset graph materialized partition by partition, as the UI or the sensor would."""

from __future__ import annotations

import json

import dagster as dg
import fsspec
import numpy as np
import pytest
from pyimzml.ImzMLParser import ImzMLParser

from em2q_assets.partitions import chunk_keys
from em2q_resources.metadata import load_schema
from tests.em2q_assets.conftest import CHUNKS, EXAMPLES, register_copy

S = load_schema()
SPECTRA_LEVEL = ["spectra_chunks", "preprocessed_chunks"]
MEASUREMENT_LEVEL = ["mean_spectrum", "tic_image", "qc_report", "peak_table", "ion_images"]


def materialize_measurement(defs, instance, measurement_id, resources=None):
    """raw → every chunk → measurement-level assets; returns the results in order."""
    instance.add_dynamic_partitions("measurement", [measurement_id])
    assets = list(defs.assets)
    all_resources = {**defs.resources, **(resources or {})}
    results = [
        dg.materialize(
            assets, selection=["raw_measurement"], partition_key=measurement_id,
            instance=instance, resources=all_resources,
        )
    ]  # fmt: skip
    for chunk in chunk_keys(CHUNKS):
        key = dg.MultiPartitionKey({"measurement": measurement_id, "spectra_chunk": chunk})
        results.append(
            dg.materialize(
                assets, selection=SPECTRA_LEVEL, partition_key=key, instance=instance,
                resources=all_resources,
            )
        )  # fmt: skip
    results.append(
        dg.materialize(
            assets, selection=MEASUREMENT_LEVEL, partition_key=measurement_id, instance=instance,
            resources=all_resources, raise_on_error=False,
        )
    )  # fmt: skip
    return results


def read_json_url(url):
    with fsspec.open(url, "rb") as handle:
        return json.load(handle)


def test_example_measurement_goes_from_uploaded_to_a_verdict_with_results(platform):
    defs, instance, store, tmp = platform
    register_copy(store, tmp / "upload", "Example_Continuous", "cont")
    results = materialize_measurement(defs, instance, "cont")
    assert all(r.success for r in results[:-1])
    measurement = store.get(S.Measurement, "cont").doc
    assert measurement.facts.spectra_count == 9
    assert measurement.facts.mode == S.ImzMLMode.CONTINUOUS
    status = S.MeasurementStatus._VALUES_TO_NAMES[measurement.status]
    qc = results[-1].output_for_node("qc_report")
    report = read_json_url(qc["qc"])
    assert status == ("READY" if report["ok"] else "FAILED")
    parser = ImzMLParser(str(EXAMPLES / "Example_Continuous.imzML"))
    expected_tic = [float(np.sum(parser.getspectrum(i)[1], dtype=np.float64)) for i in range(9)]
    assert report["per_spectrum_tic"] == pytest.approx(expected_tic, rel=1e-12)
    store.refresh()
    runs = store.search(S.WorkflowRun, filters={"measurement_id": "cont"}, page_size=100).hits
    workflows = sorted({r.workflow for r in runs})
    assert {"raw_measurement", "spectra_chunks", "preprocessed_chunks", "qc_report"} <= set(
        workflows
    )
    assert all(r.status == S.RunStatus.SUCCEEDED for r in runs)
    preprocessed = [r for r in runs if r.workflow == "preprocessed_chunks"]
    assert len(preprocessed) == CHUNKS
    assert all(
        r.parameter_set_id == "default@v1" and len(r.parameter_set_hash) == 64 for r in preprocessed
    )
    partitions = store.search(
        S.SpectraPartition, filters={"measurement_id": "cont"}, sort=["chunk_index"]
    ).hits
    assert [(p.first_spectrum, p.stop_spectrum) for p in partitions] == [(0, 3), (3, 6), (6, 9)]
