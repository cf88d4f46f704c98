"""The study assets materialized with Dagster against the real Elasticsearch: the same numbers
as the plain ``em2q_msi.study`` calls, incremental members, stale alignments flagged."""

from __future__ import annotations

import io

import dagster as dg
import numpy as np
import pandas as pd
import pytest

from em2q_msi import study as core
from em2q_resources import parameter_sets, studies
from em2q_resources.results_layout import read_bytes, read_csr_zarr, read_json, read_npy
from em2q_resources.results_layout import study_manifest_key as manifest_of
from tests.em2q_assets.study_data import feed_member, small_study

STUDY_ASSETS = ["study_reference_peaks", "aligned_features", "study_comparison"]


@pytest.fixture
def study_platform(platform):
    defs, instance, store, tmp = platform
    return defs, instance, store, defs.resources["storage"], small_study()


def materialize(defs, instance, study_id):
    instance.add_dynamic_partitions("study", [study_id])
    return dg.materialize(
        list(defs.assets), selection=STUDY_ASSETS, partition_key=study_id, instance=instance,
        resources=defs.resources, raise_on_error=True,
    )  # fmt: skip


def manifest(storage, asset, study_id):
    return read_json(storage, storage.url(manifest_of(asset, study_id)))


def test_study_assets_give_the_numbers_of_the_plain_core_calls(study_platform):
    defs, instance, store, storage, synthetic = study_platform
    members = [feed_member(store, storage, synthetic, i) for i in range(len(synthetic))]
    studies.create(store, "st-a", title="t", design=["sample.condition"], members=members)
    result = materialize(defs, instance, "st-a")
    params = parameter_sets.resolve(store, "default").study

    peaks = list(synthetic.measurements())
    own = [core.measurement_peaks(p.mz, p.intensity, p.offsets, params.tolerance_ppm,
                                  params.min_pixel_frequency).mz for p in peaks]  # fmt: skip
    reference = core.reference_peaks(own, params.tolerance_ppm, params.min_frequency)
    ref_manifest = manifest(storage, "study_reference_peaks", "st-a")
    np.testing.assert_array_equal(
        read_npy(storage, ref_manifest["outputs"]["axis_mz"]), reference.mz
    )

    aligned = manifest(storage, "aligned_features", "st-a")
    means = []
    for member, p in zip(members, peaks, strict=True):
        expected = core.align_to_reference(p.mz, p.intensity, p.offsets, reference.mz,
                                           params.tolerance_ppm)  # fmt: skip
        matrix, arrays = read_csr_zarr(storage, aligned["members"][member]["features"])
        assert (matrix != expected).nnz == 0
        np.testing.assert_array_equal(arrays["coordinates"], p.coordinates)
        factors = core.normalisation_factors(p.mz, p.intensity, p.offsets, params)
        means.append(core.measurement_means(expected, factors).mean)
    groups = [g for g in synthetic.truth.groups]
    labels = ["CONTROL" if g == "group1" else "TREATED" for g in groups]
    expected_table = core.compare_groups(np.stack(means), labels, reference.mz, params).table()
    comparison = manifest(storage, "study_comparison", "st-a")
    table = pd.read_csv(io.BytesIO(read_bytes(storage, comparison["outputs"]["table_csv"])))
    np.testing.assert_allclose(table["q_value"], expected_table["q_value"], rtol=1e-9)
    np.testing.assert_allclose(table["log2_fold_change"], expected_table["log2_fold_change"])
    assert comparison["contrasts"] == ["TREATED vs CONTROL"]
    [check] = result.get_asset_check_evaluations()
    assert check.check_name == "reference_drift" and check.passed


def test_adding_a_member_realigns_only_that_member(study_platform):
    defs, instance, store, storage, synthetic = study_platform
    members = [feed_member(store, storage, synthetic, i) for i in range(len(synthetic))]
    studies.create(store, "st-b", title="t", design=["sample.condition"], members=members[:-1])
    materialize(defs, instance, "st-b")
    first = manifest(storage, "aligned_features", "st-b")
    studies.add_members(store, "st-b", members[-1:])
    result = materialize(defs, instance, "st-b")
    second = manifest(storage, "aligned_features", "st-b")
    assert second["realigned"] == members[-1:]
    assert second["reused"] == members[:-1]
    assert second["axis_hash"] == first["axis_hash"]
    assert [c.passed for c in result.get_asset_check_evaluations()] == [True]
    assert len(manifest(storage, "study_comparison", "st-b")["members"]) == len(members)


def test_a_moved_reference_fails_the_drift_check_and_realigns_every_member(study_platform):
    defs, instance, store, storage, synthetic = study_platform
    parameter_sets.save(store, "tight", {"study": {"drift_tolerance_ppm": 0.001}}, author="t")
    members = [feed_member(store, storage, synthetic, i, "tight") for i in range(len(synthetic))]
    studies.create(store, "st-c", title="t", design=["sample.condition"],
                   members=members[:-1], parameter_set="tight")  # fmt: skip
    materialize(defs, instance, "st-c")
    first = manifest(storage, "aligned_features", "st-c")
    studies.add_members(store, "st-c", members[-1:])
    result = materialize(defs, instance, "st-c")
    [check] = result.get_asset_check_evaluations()
    assert not check.passed and check.severity == dg.AssetCheckSeverity.WARN
    drift = manifest(storage, "study_reference_peaks", "st-c")["drift"]
    assert drift["stale"] and drift["stale_members"] == members[:-1]
    second = manifest(storage, "aligned_features", "st-c")
    assert second["axis_hash"] != first["axis_hash"]
    assert second["realigned"] == members and second["reused"] == []


def test_a_member_without_peaks_for_the_parameter_set_fails_naming_it(study_platform):
    defs, instance, store, storage, synthetic = study_platform
    members = [feed_member(store, storage, synthetic, i) for i in range(2)]
    parameter_sets.save(store, "other", {"peak_picking": {"snr_threshold": 9.0}}, author="t")
    studies.create(store, "st-d", title="t", design=["sample.condition"], members=members,
                   parameter_set="other")  # fmt: skip
    instance.add_dynamic_partitions("study", ["st-d"])
    result = dg.materialize(
        list(defs.assets), selection=STUDY_ASSETS[:1], partition_key="st-d", instance=instance,
        resources=defs.resources, raise_on_error=False,
    )  # fmt: skip
    assert not result.success
    failure = result.get_step_failure_events()[0].step_failure_data.error.message
    assert members[0] in failure and "preprocessed_chunks" in failure
