"""The study comparison page: volcano plot, PCA, sortable feature table."""

from __future__ import annotations

import base64
import json
import re

import dagster as dg
import numpy as np
import pytest

from em2q_assets.definitions import build_definitions
from em2q_resources import studies
from tests.em2q_assets.study_data import feed_member, small_study


def plotly_array(value) -> np.ndarray:
    """A figure JSON's array: a list, or plotly's typed array ``{dtype, bdata, shape}``."""
    if isinstance(value, dict):
        return np.frombuffer(base64.b64decode(value["bdata"]), dtype=value["dtype"])
    return np.asarray(value, dtype=float)


STUDY_ASSETS = ["study_reference_peaks", "aligned_features", "study_comparison"]


def test_the_study_page_shows_the_volcano_pca_and_a_table_sorted_by_q(
    client, metadata_store, storage, web_settings
):
    synthetic = small_study()
    members = [feed_member(metadata_store, storage, synthetic, i) for i in range(len(synthetic))]
    studies.create(metadata_store, "web-st", title="Lesions", design=["sample.condition"],
                   members=members)  # fmt: skip
    defs = build_definitions(web_settings)
    instance = dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions("study", ["web-st"])
    dg.materialize(list(defs.assets), selection=STUDY_ASSETS, partition_key="web-st",
                   instance=instance, resources=defs.resources)  # fmt: skip
    page = client.get("/studies/web-st")
    assert page.status_code == 200, page.text
    volcano = re.search(r'<svg class="volcano".*?</svg>', page.text, re.S).group(0)
    n_features = len(re.findall(r"<circle", volcano))
    assert n_features >= 180  # one point per feature of the 200 planted (noise may add)
    significant = re.search(r"(\d+) of (\d+) features with q", page.text)
    assert int(significant.group(2)) == n_features
    assert len(re.findall(r'class="sig"', volcano)) == int(significant.group(1)) > 0
    pca = re.search(r'<svg class="pca".*?</svg>', page.text, re.S).group(0)
    assert len(re.findall(r"<circle", pca)) == len(members)
    table = re.search(r'<table class="plain" id="study-features">.*?</table>', page.text, re.S)
    row = (
        r'<tr><td class="num"><a [^>]*>[^<]*</a></td><td class="num">[^<]*</td>'
        r'<td class="num">([^<]*)</td>'
    )
    q_values = [float(v) for v in re.findall(row, table.group(0))]
    assert q_values == sorted(q_values) and q_values
    by_mz = client.get("/studies/web-st?sort=mz&desc=true").text
    mz = [float(v) for v in re.findall(r'<tr><td class="num"><a [^>]*>([0-9.]+)</a>', by_mz)]
    assert mz == sorted(mz, reverse=True) and len(mz) > 1
    # the most significant feature's ion images: every member, grouped, on one colour scale
    feature = re.search(r"feature=(\d+)", table.group(0)).group(1)
    images_page = client.get(f"/studies/web-st?feature={feature}").text
    figure = json.loads(
        re.search(r'id="study-images-figure">(.*?)</script>', images_page, re.S).group(1)
    )
    assert len(figure["data"]) == len(members)
    assert {trace["coloraxis"] for trace in figure["data"]} == {"coloraxis"}
    titles = [a["text"] for a in figure["layout"]["annotations"]][: len(members)]
    assert [t.endswith("(CONTROL)") for t in titles] == [True] * 3 + [False] * 3
    top = max(np.nanmax(plotly_array(t["z"])) for t in figure["data"])
    assert figure["layout"]["coloraxis"]["cmax"] == pytest.approx(top)


def test_a_study_not_computed_yet_says_how_to_run_it(client, metadata_store):
    studies.create(metadata_store, "web-empty", title="t", design=["sample.condition"])
    page = client.get("/studies/web-empty")
    assert page.status_code == 200
    assert "em2q study run web-empty" in page.text and 'class="volcano"' not in page.text
    listed = client.get("/studies")
    assert 'href="/studies/web-empty"' in listed.text


def test_an_mz_search_hit_links_the_study_comparing_that_feature(
    client, metadata_store, storage, web_settings
):
    from em2q.study_results import comparison_table, current_manifests
    from em2q_resources.metadata.peak_index import PeakFeatures, index_peak_table

    synthetic = small_study()
    members = [feed_member(metadata_store, storage, synthetic, i) for i in range(len(synthetic))]
    studies.create(metadata_store, "mz-st", title="t", design=["sample.condition"],
                   members=members)  # fmt: skip
    defs = build_definitions(web_settings)
    instance = dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions("study", ["mz-st"])
    dg.materialize(list(defs.assets), selection=STUDY_ASSETS, partition_key="mz-st",
                   instance=instance, resources=defs.resources)  # fmt: skip
    table = comparison_table(
        storage, current_manifests(metadata_store, storage, "mz-st")["study_comparison"]
    )
    best = table.sort_values("q_value").iloc[0]
    mz = float(best["mz"])
    for member, summed in ((members[0], 50.0), (members[1], 0.0)):
        features = PeakFeatures(np.array([mz if summed else mz + 5]), np.array([0.5]),
                                np.array([summed or 5.0]), 60, 1000.0)  # fmt: skip
        index_peak_table(metadata_store, member, "default@v1", "ab" * 32, features, refresh=True)
    page = client.get(f"/catalog?mz={mz:.5f}&ppm=3")
    assert page.status_code == 200, page.text
    row = re.search(rf'<tr data-id="{members[0]}">.*?</tr>', page.text, re.S).group(0)
    assert f'href="/studies/mz-st?feature={int(best["feature"])}"' in row
    assert f'<tr data-id="{members[1]}">' not in page.text  # its peak is elsewhere


def test_a_deleted_member_shows_as_missing_on_the_study_page(client, metadata_store, storage):
    from em2q.client import delete_measurement
    from em2q_resources.auth import Role, User
    from em2q_resources.metadata.synthetic import measurement

    s = metadata_store.schema
    ids = []
    for i in (1, 2):
        doc = measurement(s, i)
        doc.sample.condition = s.SampleCondition.HEALTHY
        metadata_store.create(doc, refresh=True)
        ids.append(doc.id)
    studies.create(metadata_store, "gone-st", title="t", design=["sample.condition"], members=ids)
    delete_measurement(metadata_store, storage, ids[0], User("ada", Role.ADMIN))
    page = client.get("/studies/gone-st")
    assert page.status_code == 200, page.text
    missing = re.search(r'<tr class="missing"><td>([^<]+)</td>', page.text)
    assert missing and missing.group(1) == ids[0]
    assert f'<a href="/measurements/{ids[1]}">' in page.text
