"""The catalog's m/z search form on the real Elasticsearch: planted peaks, facets, refusals."""

from __future__ import annotations

import re

import numpy as np

from em2q_resources.metadata import load_schema
from em2q_resources.metadata.peak_index import PeakFeatures, index_peak_table
from em2q_resources.metadata.synthetic import measurement

S = load_schema()


def _ids(html: str) -> list[str]:
    return re.findall(r'<tr data-id="([^"]+)"', html)


def test_catalog_mz_search_lists_the_measurements_with_the_peak_and_its_match(
    client, metadata_store
):
    metadata_store.bulk_put([measurement(S, i) for i in (1, 2, 3)], refresh=True)
    for i, mz in ((1, 760.5851), (2, 760.5851 * (1 + 4e-6)), (3, 760.5855)):
        features = PeakFeatures(np.array([mz]), np.array([0.3]), np.array([50.0]), 10, 1000.0)
        index_peak_table(metadata_store, f"m-{i:07d}", "default@v1", "ef" * 32, features)
    metadata_store.refresh("PeakFeature")
    page = client.get("/catalog", params={"mz": "760.5851", "ppm": "3", "min_tic_percent": "1"})
    assert page.status_code == 200
    assert _ids(page.text) == ["m-0000001", "m-0000003"]
    assert "760.5855 (+0.5 ppm, 5.00 % TIC)" in page.text
    assert re.search(r'<strong id="total">2</strong>', page.text)


def test_catalog_mz_search_refuses_a_word_for_an_mz(client):
    page = client.get("/catalog", params={"mz": "heavy"})
    assert page.status_code == 400
    assert "mz" in page.text and "heavy" in page.text
