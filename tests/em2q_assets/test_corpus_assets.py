"""The corpus's size and type extremes through the real asset graph, with K = 8 chunks: fewer
spectra than chunks (empty chunks), zero-length, all-zero, one-value and 10**6-point spectra,
16-bit float and zlib-compressed arrays."""

from __future__ import annotations

import dagster as dg
import numpy as np
import pytest

from em2q_assets.definitions import build_definitions
from em2q_assets.partitions import chunk_keys
from em2q_resources.results_layout import read_json, read_npy
from em2q_resources.settings import Settings
from tests.corpus import build_corpus
from tests.corpus.reference import reference_spectra
from tests.em2q_assets.conftest import register_pair, remember_storage

K = 8
SPECTRA_LEVEL = ["spectra_chunks", "preprocessed_chunks"]
MEASUREMENT_LEVEL = ["mean_spectrum", "tic_image", "qc_report", "peak_table", "ion_images"]
RANGE_START, RANGE_END = "dagster/asset_partition_range_start", "dagster/asset_partition_range_end"
EXTREMES = [
    "one-spectrum",
    "six-spectra",
    "zero-length-spectra",
    "all-zero-spectra",
    "one-mz-value-processed",
    "one-mz-value-continuous",
    "long-spectrum",
    "continuous-mzf64-intf16",
    "processed-zlib",
]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return {f.name: f for f in build_corpus(tmp_path_factory.mktemp("corpus"))}


@pytest.fixture
def platform8(metadata_store, elasticsearch_url, tmp_path):
    settings = remember_storage(
        Settings(
            elasticsearch_url=elasticsearch_url,
            index_prefix=metadata_store.prefix,
            storage=str(tmp_path / "storage"),
            cache_dir=tmp_path / "cache",
            spectra_chunks=K,
        )
    )
    return build_definitions(settings), dg.DagsterInstance.ephemeral(), metadata_store, tmp_path


def register(store, corpus_file, folder, measurement_id):
    register_pair(store, corpus_file.imzml, corpus_file.ibd, measurement_id, folder)


#: QC that passes whatever the data, so the assets after the blocking QC checks run too
LENIENT_QC = {
    "qc": {
        "min_median_snr": 0.0,
        "min_tic_coverage": 0.0,
        "max_empty_pixel_fraction": 1.0,
    }
}
LENIENT = {"resources": {"parameter_set": {"config": {"name": "lenient"}}}}


def materialize_all(defs, instance, store, measurement_id):
    """raw → all K chunks in one run (as backfills do) → every measurement-level asset, with
    a parameter set whose QC thresholds every file passes."""
    instance.add_dynamic_partitions("measurement", [measurement_id])
    store.save_parameter_set("lenient", LENIENT_QC, author="corpus")
    assets, resources = list(defs.assets), defs.resources
    first, last = (
        str(dg.MultiPartitionKey({"measurement": measurement_id, "spectra_chunk": c}))
        for c in (chunk_keys(K)[0], chunk_keys(K)[-1])
    )
    return [
        dg.materialize(
            assets, selection=["raw_measurement"], partition_key=measurement_id,
            instance=instance, resources=resources, raise_on_error=False,
        ),
        dg.materialize(
            assets, selection=SPECTRA_LEVEL, instance=instance, resources=resources,
            tags={RANGE_START: first, RANGE_END: last, "em2q/parameter_set": "lenient"},
            raise_on_error=False,
        ),
        dg.materialize(
            assets, selection=MEASUREMENT_LEVEL, partition_key=measurement_id,
            instance=instance, resources=resources, run_config=LENIENT, raise_on_error=False,
        ),
    ]  # fmt: skip


def _failures(results) -> list[str]:
    out = []
    for result in results:
        for event in result.all_events:
            if event.event_type_value == "STEP_FAILURE":
                error = event.event_specific_data.error
                out.append(f"{event.step_key}: {error.cls_name}: {error.message.strip()[:300]}")
    return out


@pytest.mark.parametrize("name", EXTREMES)
def test_size_and_type_extremes_run_through_every_asset(platform8, corpus, name):
    defs, instance, store, tmp = platform8
    measurement_id = name.replace("_", "-").lower()
    register(store, corpus[name], tmp / "upload", measurement_id)
    results = materialize_all(defs, instance, store, measurement_id)
    assert _failures(results) == []
    _, spectra = reference_spectra(corpus[name].imzml)
    storage = defs.resources["storage"]
    outputs = {
        key: results[2].output_for_node(key)["outputs"] for key in ("tic_image", "peak_table")
    }
    expected_tic = [float(np.sum(i, dtype=np.float64)) for _, i in spectra]
    np.testing.assert_allclose(
        read_npy(storage, outputs["tic_image"]["tic"]), expected_tic, rtol=1e-12
    )
    # one column per spectrum, none lost
    assert read_json(storage, outputs["peak_table"]["shape"])[1] == len(spectra)
