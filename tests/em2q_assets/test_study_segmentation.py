"""The study_segmentation asset: one segmentation of every member, so a segment number names
the same planted region in each member."""

from __future__ import annotations

import dagster as dg
import numpy as np
import pytest

from em2q.study_results import study_segmentation
from em2q_msi.synthetic import planted_regions
from em2q_resources import parameter_sets, studies
from em2q_resources.results_layout import read_bytes, read_json, read_npy
from tests.em2q_assets.study_data import feed_region_member

ASSETS = ["study_reference_peaks", "aligned_features", "study_segmentation"]
NX, NY = 12, 9
ION_MZ = np.array([150.1, 210.2, 260.3, 330.4, 400.5, 480.6, 555.7, 610.8, 700.9])
ION_REGION = np.array([0, 1, 2, 0, 1, 2, 0, 1, 2])


@pytest.fixture
def segmented_study(platform):
    defs, instance, store, _ = platform
    storage = defs.resources["storage"]
    parameter_sets.save(store, "three", {"segmentation": {"k": 3}}, author="t")
    # the same three tissues, laid out differently: mirrored, and the band and the rest swap
    # tissues, so the largest region (what a per-member numbering would call segment 0) is
    # another tissue in each member
    mirrored = np.array([2, 1, 0])[planted_regions(NX, NY)[:, ::-1]]
    regions = {"m-left": planted_regions(NX, NY), "m-mirror": mirrored}
    largest = {m: int(np.bincount(r.ravel()).argmax()) for m, r in regions.items()}
    assert largest["m-left"] != largest["m-mirror"]
    for seed, (mid, planted) in enumerate(regions.items()):
        feed_region_member(store, storage, mid, planted, ION_MZ, ION_REGION, seed, "three")
    studies.create(store, "st-seg", title="t", design=["sample.condition"],
                   members=list(regions), parameter_set="three")  # fmt: skip
    instance.add_dynamic_partitions("study", ["st-seg"])
    dg.materialize(
        list(defs.assets), selection=ASSETS, partition_key="st-seg", instance=instance,
        resources=defs.resources, raise_on_error=True,
    )  # fmt: skip
    return store, storage, regions


def test_the_same_planted_region_gets_the_same_segment_in_every_member(segmented_study):
    store, storage, regions = segmented_study
    found = study_segmentation(store, storage, "st-seg")
    assert found["k"] == 3 and found["note"] is None
    segment_of = {}
    for mid, planted in regions.items():
        image = read_npy(storage, found["members"][mid]["segment_map"])
        assert image.shape == (NY, NX)
        for r in range(3):
            labels = np.unique(image[planted == r])
            assert labels.size == 1, f"{mid}: region {r} split into segments {labels}"
            segment_of[mid, r] = int(labels[0])
    for r in range(3):
        assert segment_of["m-left", r] == segment_of["m-mirror", r]
    assert len({segment_of["m-left", r] for r in range(3)}) == 3


def test_each_segments_top_feature_is_an_ion_of_its_region(segmented_study):
    store, storage, regions = segmented_study
    found = study_segmentation(store, storage, "st-seg")
    summary = read_json(storage, found["outputs"]["top_ions"])
    image = read_npy(storage, found["members"]["m-left"]["segment_map"])
    for segment in summary["segments"]:
        region = int(np.bincount(regions["m-left"][image == segment["segment"]]).argmax())
        nearest = int(np.argmin(np.abs(ION_MZ - segment["top"][0]["mz"])))
        assert ION_REGION[nearest] == region
    png = read_bytes(storage, found["members"]["m-mirror"]["png"])
    assert png.startswith(b"\x89PNG")


def test_the_notebook_client_reads_the_study_segmentation(
    segmented_study, platform, elasticsearch_url
):
    from em2q.client import Catalog, Study
    from em2q_resources.auth import Role, User
    from em2q_resources.settings import Settings

    store, storage, regions = segmented_study
    settings = Settings(
        elasticsearch_url=elasticsearch_url, index_prefix=store.prefix, storage=storage.root,
        cache_dir=platform[3] / "client-cache",
    )  # fmt: skip
    catalog = Catalog(settings, user=User("sam", Role.SCIENTIST), store=store)
    result = Study(catalog, "st-seg").segmentation()
    found = study_segmentation(store, storage, "st-seg")
    assert result["k"] == 3 and set(result["maps"]) == set(regions)
    for mid in regions:
        expected = read_npy(storage, found["members"][mid]["segment_map"])
        np.testing.assert_array_equal(result["maps"][mid], expected)
