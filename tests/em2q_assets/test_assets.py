"""The asset graph materialized partition by partition, as the UI or the sensor would."""

from __future__ import annotations

import json
from pathlib import Path

import dagster as dg
import fsspec
import numpy as np
import pytest
from pyimzml.ImzMLParser import ImzMLParser

from em2q_assets.partitions import chunk_keys
from em2q_resources import lifecycle
from em2q_resources.launcher import StepLauncherResource
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
    assert all(r.success for r in results)  # the example passes the default QC: no check fails
    measurement = store.get(S.Measurement, "cont").doc
    assert measurement.facts.spectra_count == 9
    assert measurement.facts.mode == S.ImzMLMode.CONTINUOUS
    status = S.MeasurementStatus._VALUES_TO_NAMES[measurement.status]
    qc = results[-1].output_for_node("qc_report")
    report = read_json_url(qc["qc"])
    assert report["ok"] is True and status == "READY"
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


def _files_under(url_root: str) -> dict[str, bytes]:
    fs, root = fsspec.core.url_to_fs(url_root)
    return {path[len(root) :]: fs.cat_file(path) for path in fs.find(root)}


def test_rematerializing_a_partition_gives_byte_identical_results(platform):
    defs, instance, store, tmp = platform
    register_copy(store, tmp / "upload", "Example_Processed", "proc")
    materialize_measurement(defs, instance, "proc")
    results = str(tmp / "storage" / "results" / "proc")
    first = _files_under(results)
    materialize_measurement(defs, instance, "proc")
    second = _files_under(results)
    assert first.keys() == second.keys()
    assert [k for k in first if first[k] != second[k]] == []
    assert any(k.endswith("qc.json") for k in first) and any(k.endswith(".png") for k in first)


def test_a_new_parameter_set_writes_results_beside_the_old_ones(platform):
    defs, instance, store, tmp = platform
    register_copy(store, tmp / "upload", "Example_Continuous", "cont")
    materialize_measurement(defs, instance, "cont")
    store.save_parameter_set("strict", {"peak_picking": {"snr_threshold": 50}}, author="ada")
    strict = {"resources": {"parameter_set": {"config": {"name": "strict"}}}}
    assets = list(defs.assets)
    for chunk in chunk_keys(CHUNKS):
        key = dg.MultiPartitionKey({"measurement": "cont", "spectra_chunk": chunk})
        assert dg.materialize(
            assets, selection=["preprocessed_chunks"], partition_key=key, instance=instance,
            resources=defs.resources, run_config=strict,
        ).success  # fmt: skip
    base = tmp / "storage/results/cont/preprocessed_chunks"
    folders = sorted(p.name for p in base.iterdir())
    assert len(folders) == 2  # default and strict, side by side

    store.refresh()
    runs = store.search(
        S.WorkflowRun,
        filters={"measurement_id": "cont", "workflow": "preprocessed_chunks"},
        page_size=100,
    ).hits
    # which folder holds which set: the one its runs wrote to
    written: dict[str, set[str]] = {}
    for run in runs:
        folder = {f for f in folders for o in run.outputs if f"/{f}/" in o.uri}
        written.setdefault(run.parameter_set_id, set()).update(folder)
    assert sorted(written) == ["default@v1", "strict@v1"]
    (default,), (strict,) = written["default@v1"], written["strict@v1"]
    assert default != strict
    default, strict = base / default, base / strict
    n_default = n_strict = 0
    for chunk in sorted(p.name for p in default.iterdir()):
        loose_mz = np.load(default / chunk / "peaks_mz.npy")
        strict_mz = np.load(strict / chunk / "peaks_mz.npy")
        strict_snr = np.load(strict / chunk / "peaks_snr.npy")
        # the same spectra and preprocessing, a higher bar: strict keeps a subset of the peaks,
        # each at least 50 × the noise above the floor
        assert set(strict_mz.tolist()) <= set(loose_mz.tolist()), chunk
        assert np.all(strict_snr >= 50.0), chunk
        n_default, n_strict = n_default + loose_mz.size, n_strict + strict_mz.size
    assert 0 < n_strict < n_default  # fewer, and not none: the example has strong peaks


def test_failed_blocking_qc_check_stops_analysis_and_marks_the_measurement_failed(platform):
    defs, instance, store, tmp = platform
    register_copy(store, tmp / "upload", "Example_Continuous", "cont")
    store.save_parameter_set("default", {"qc": {"min_median_snr": 1e9}}, author="ada")
    results = materialize_measurement(defs, instance, "cont")
    final = results[-1]
    assert not final.success
    checks = {
        e.asset_check_evaluation_data.check_name: e.asset_check_evaluation_data.passed
        for e in final.all_events
        if e.event_type_value == "ASSET_CHECK_EVALUATION"
    }
    assert checks["median_snr"] is False
    materialized = {e.asset_key.path[-1] for e in final.get_asset_materialization_events()}
    assert "qc_report" in materialized
    assert not {"peak_table", "ion_images"} & materialized
    measurement = store.get(S.Measurement, "cont").doc
    assert measurement.status == S.MeasurementStatus.FAILED
    assert "median_snr" in measurement.status_reason
    reason = lifecycle.reason_of(measurement)
    assert (reason.kind, reason.asset, reason.partition) == (lifecycle.Kind.QC, "qc_report", "cont")
    assert reason.next_action == lifecycle.Action.CHANGE_PARAMETERS


def test_continuous_and_processed_examples_give_the_same_tic(platform):
    defs, instance, store, tmp = platform
    register_copy(store, tmp / "a", "Example_Continuous", "cont")
    register_copy(store, tmp / "b", "Example_Processed", "proc")
    tics = {}
    for measurement_id in ("cont", "proc"):
        results = materialize_measurement(defs, instance, measurement_id)
        tics[measurement_id] = read_json_url(results[-1].output_for_node("qc_report")["qc"])[
            "per_spectrum_tic"
        ]
    assert tics["cont"] == pytest.approx(tics["proc"], rel=1e-9)


def test_io_manager_stores_manifests_under_the_runs_parameter_set(platform):
    defs, instance, store, tmp = platform
    register_copy(store, tmp / "upload", "Example_Continuous", "cont")
    materialize_measurement(defs, instance, "cont")
    saved = store.save_parameter_set("strict", {"peak_picking": {"snr_threshold": 50}}, author="a")
    key = dg.MultiPartitionKey({"measurement": "cont", "spectra_chunk": chunk_keys(CHUNKS)[0]})
    dg.materialize(
        list(defs.assets), selection=["preprocessed_chunks"], partition_key=key, instance=instance,
        resources=defs.resources,
        run_config={"resources": {"parameter_set": {"config": {"name": "strict"}}}},
    )  # fmt: skip
    folder = tmp / "storage/results/cont/preprocessed_chunks" / saved.content_hash[:16]
    manifest = json.loads((folder / "chunk-0000" / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["parameter_set"] == "strict@v1"


RANGE_START, RANGE_END = "dagster/asset_partition_range_start", "dagster/asset_partition_range_end"


def test_all_chunks_in_one_run_match_chunk_by_chunk_runs(platform):
    """What automation and backfills do (BackfillPolicy.single_run): every chunk of a
    measurement in one run, with the parameter set named by the run's tag."""
    defs, instance, store, tmp = platform
    register_copy(store, tmp / "upload", "Example_Processed", "proc")
    materialize_measurement(defs, instance, "proc")
    results = str(tmp / "storage" / "results" / "proc")
    chunk_by_chunk = _files_under(results)
    first, last = (
        str(dg.MultiPartitionKey({"measurement": "proc", "spectra_chunk": c}))
        for c in (chunk_keys(CHUNKS)[0], chunk_keys(CHUNKS)[-1])
    )
    store.save_parameter_set("strict", {"peak_picking": {"snr_threshold": 50}}, author="ada")
    for tags in ({}, {"em2q/parameter_set": "strict"}):
        result = dg.materialize(
            list(defs.assets), selection=SPECTRA_LEVEL, instance=instance,
            resources=defs.resources, tags={RANGE_START: first, RANGE_END: last, **tags},
        )  # fmt: skip
        assert result.success
        materialized = result.get_asset_materialization_events()
        assert len(materialized) == 2 * CHUNKS  # one event per asset partition
    in_one_run = _files_under(results)
    assert [k for k in chunk_by_chunk if chunk_by_chunk[k] != in_one_run[k]] == []
    store.refresh()
    runs = store.search(
        S.WorkflowRun,
        filters={"measurement_id": "proc", "workflow": "preprocessed_chunks"},
        page_size=100,
    ).hits
    strict = [r for r in runs if r.parameter_set_id == "strict@v1"]
    assert len(strict) == CHUNKS and len({r.run_id for r in strict}) == 1
    assert sorted(r.partition for r in strict) == [f"proc|{c}" for c in chunk_keys(CHUNKS)]


def test_chunks_written_by_a_launched_step_match_those_written_in_process(platform):
    """EM2Q_STEP_LAUNCHER=local: the chunk is written by `python -m em2q_msi.steps chunk` in a
    subprocess (Dagster Pipes); the asset reads its sums back and records the same results."""
    defs, instance, store, tmp = platform
    register_copy(store, tmp / "upload", "Example_Processed", "proc")
    materialize_measurement(defs, instance, "proc")
    in_process = tmp / "storage" / "results" / "proc" / "spectra_chunks" / "raw"
    expected = {p.relative_to(in_process): p.read_bytes() for p in in_process.rglob("*.npy")}
    launched = {**defs.resources, "step_launcher": StepLauncherResource(mode="local")}
    key = dg.MultiPartitionKey({"measurement": "proc", "spectra_chunk": chunk_keys(CHUNKS)[1]})
    result = dg.materialize(
        list(defs.assets), selection=["spectra_chunks"], partition_key=key, instance=instance,
        resources=launched,
    )  # fmt: skip
    assert result.success
    assert result.output_for_node("spectra_chunks")["first_spectrum"] == 3
    written = {p.relative_to(in_process): p.read_bytes() for p in in_process.rglob("*.npy")}
    assert written.keys() == expected.keys()
    chunk = Path("chunk-0001")
    for name in ("tic.npy", "spectra/intensity.npy", "spectra/mz.npy", "spectra/offsets.npy"):
        assert written[chunk / name] == expected[chunk / name], name
    meta = json.loads((in_process / chunk / "spectra" / "meta.json").read_text(encoding="utf-8"))
    assert meta["extra"]["chunk_index"] == 1  # written by the step command, not in process


def test_a_materialized_peak_table_is_searchable_by_its_features_mz(platform):
    from em2q_resources.metadata.peak_index import search_mz

    defs, instance, store, tmp = platform
    register_copy(store, tmp / "upload-mz", "Example_Continuous", "mz-search")
    results = materialize_measurement(defs, instance, "mz-search")
    table = results[-1].output_for_node("peak_table")
    store.refresh()
    mz = table["frequent_mz"][0]
    found = search_mz(store, mz, ppm=1)
    assert "mz-search" in {m.id for m in found.hits}
    assert found.matches["mz-search"].parameter_set_id == "default@v1"
