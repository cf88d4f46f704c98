"""The segmentation asset materialized on a planted-region section, as a run would."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import fsspec
import numpy as np
import pytest
from PIL import Image
from sklearn.metrics import adjusted_rand_score

from em2q.client import Catalog
from em2q_msi.synthetic import synthetic_regions, write_regions_imzml
from em2q_resources import parameter_sets
from em2q_resources.auth import Role, User
from em2q_resources.connections import set_up_metadata_store
from em2q_resources.metadata.store import MetadataStore
from em2q_resources.settings import Settings
from tests.em2q_assets.conftest import CHUNKS, register_pair, remember_storage
from tests.fixtures.dagster import materialize_measurement

NX, NY = 24, 18


@pytest.fixture(scope="module")
def segmented(elasticsearch_url, tmp_path_factory):
    """A planted-region section uploaded, ingested, chunked, processed and segmented with a
    parameter set naming k = 3 (BIC on a peak table: see docs/processing.md)."""
    tmp = tmp_path_factory.mktemp("segmentation")
    settings = remember_storage(
        Settings(
            elasticsearch_url=elasticsearch_url,
            index_prefix=f"test-seg-{uuid.uuid4().hex[:8]}",
            storage=str(tmp / "storage"),
            cache_dir=tmp / "cache",
            spectra_chunks=CHUNKS,
        )
    )
    store = MetadataStore.connect(elasticsearch_url, index_prefix=settings.index_prefix)
    set_up_metadata_store(store)
    try:
        parameter_sets.save(store, "three", {"segmentation": {"k": 3}}, author="sam")
        section = synthetic_regions(nx=NX, ny=NY, n_bins=800, seed=4)
        imzml = Path(write_regions_imzml(tmp / "section", section))
        register_pair(store, imzml, imzml.with_suffix(".ibd"), "seg", tmp / "upload")
        results = materialize_measurement(settings, "seg", parameter_set="three")
        yield section, results, settings, store
    finally:
        store.drop_all()


def _read(url: str) -> bytes:
    with fsspec.open(url, "rb") as handle:
        return handle.read()


def test_segmentation_asset_recovers_the_planted_regions(segmented):
    section, results, *_ = segmented
    assert all(r.success for r in results)
    manifest = results[-1].output_for_node("segmentation")
    labels = np.load(fsspec.open(manifest["outputs"]["labels"], "rb").open())
    assert manifest["k"] == 3
    assert adjusted_rand_score(section.labels, labels) >= 0.8


def test_segmentation_asset_writes_map_mean_spectra_and_top_ions(segmented):
    _, results, *_ = segmented
    manifest = results[-1].output_for_node("segmentation")
    outputs = manifest["outputs"]
    png = Image.open(fsspec.open(outputs["png"], "rb").open())
    assert png.size == (NX, NY)
    means = np.load(fsspec.open(outputs["mean_spectra"], "rb").open())
    feature_mz = np.load(fsspec.open(outputs["feature_mz"], "rb").open())
    assert means.shape == (3, feature_mz.size)
    summary = json.loads(_read(outputs["top_ions"]))
    assert [s["pixels"] for s in summary["segments"]] == sorted(
        (s["pixels"] for s in summary["segments"]), reverse=True
    )
    assert sum(s["pixels"] for s in summary["segments"]) == NX * NY
    assert all(len(s["top"]) > 0 and s["top"][0]["effect_size"] > 1 for s in summary["segments"])


def test_segmentation_materialization_shows_the_map_in_dagster(segmented):
    _, results, *_ = segmented
    (event,) = [
        e
        for e in results[-1].get_asset_materialization_events()
        if e.asset_key.path[-1] == "segmentation"
    ]
    metadata = event.materialization.metadata
    assert metadata["segments"].value == 3
    assert "segment map" in metadata


def _measurement(segmented):
    _, _, settings, store = segmented
    return Catalog(settings, user=User("sam", Role.SCIENTIST), store=store).measurement("seg")


def test_client_reads_the_segmentation_of_a_parameter_set(segmented):
    section = segmented[0]
    result = _measurement(segmented).segmentation("three")
    assert result["k"] == 3 and result["segment_map"].shape == (NY, NX)
    assert adjusted_rand_score(section.labels, result["labels"]) >= 0.8


def test_client_colocalisation_ranks_ions_of_the_same_region_first(segmented):
    section = segmented[0]
    marker = int(np.flatnonzero(section.ion_region == 1)[0])
    table = _measurement(segmented).colocalisation(
        section.ion_mz[marker], top=3, parameter_set="three"
    )
    partners = set(np.round(section.ion_mz[section.ion_region == 1], 0)) - {
        round(section.ion_mz[marker], 0)
    }
    assert set(np.round(table["mz"], 0)) == partners
    assert list(table["similarity"]) == sorted(table["similarity"], reverse=True)
