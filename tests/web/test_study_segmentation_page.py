"""The study page shows the study's segmentation: one segment map per member, a tissue in the
same colour in every member."""

from __future__ import annotations

import io

import dagster as dg
import numpy as np
from PIL import Image

from em2q_assets.definitions import build_definitions
from em2q_msi.synthetic import planted_regions
from em2q_resources import parameter_sets, studies
from tests.em2q_assets.study_data import feed_region_member
from tests.em2q_assets.test_study_segmentation import ASSETS, ION_MZ, ION_REGION, NX, NY


def test_the_study_page_shows_each_members_segment_map_in_shared_colours(
    client, metadata_store, storage, web_settings
):
    parameter_sets.save(metadata_store, "three", {"segmentation": {"k": 3}}, author="t")
    mirrored = np.array([2, 1, 0])[planted_regions(NX, NY)[:, ::-1]]
    regions = {"p-left": planted_regions(NX, NY), "p-mirror": mirrored}
    for seed, (mid, planted) in enumerate(regions.items()):
        feed_region_member(metadata_store, storage, mid, planted, ION_MZ, ION_REGION, seed,
                           "three")  # fmt: skip
    studies.create(metadata_store, "seg-st", title="Sections", design=["sample.condition"],
                   members=list(regions), parameter_set="three")  # fmt: skip
    page = client.get("/studies/seg-st")
    assert page.status_code == 200 and 'id="study-segmentation"' not in page.text
    defs = build_definitions(web_settings)
    instance = dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions("study", ["seg-st"])
    dg.materialize(list(defs.assets), selection=ASSETS, partition_key="seg-st",
                   instance=instance, resources=defs.resources)  # fmt: skip
    page = client.get("/studies/seg-st")
    assert 'id="study-segmentation"' in page.text
    colours = {}
    for mid, planted in regions.items():
        assert f'src="/studies/seg-st/segmentation/{mid}.png"' in page.text
        answer = client.get(f"/studies/seg-st/segmentation/{mid}.png")
        assert answer.status_code == 200 and answer.headers["content-type"] == "image/png"
        rgba = np.asarray(Image.open(io.BytesIO(answer.content)).convert("RGBA"))
        assert rgba.shape[:2] == (NY, NX)
        for tissue in range(3):
            colours[mid, tissue] = {tuple(c) for c in rgba[planted == tissue]}
    for tissue in range(3):
        assert len(colours["p-left", tissue]) == 1
        assert colours["p-left", tissue] == colours["p-mirror", tissue]
    assert client.get("/studies/seg-st/segmentation/other.png").status_code == 404
