"""Search by m/z against a real Elasticsearch: planted peaks are found, neighbours are not."""

from __future__ import annotations

import uuid

import numpy as np
import pytest

from em2q_resources.metadata import MetadataStore, load_schema
from em2q_resources.metadata.peak_index import (
    InvalidMzQuery,
    PeakFeatures,
    index_peak_table,
    search_mz,
)
from em2q_resources.metadata.synthetic import measurement

S = load_schema()
PLANTED = 760.5851


def _features(mz: list[float], summed: list[float], total_tic: float = 1000.0) -> PeakFeatures:
    n = len(mz)
    return PeakFeatures(
        np.asarray(mz), np.full(n, 0.5), np.asarray(summed, float), spectra=100, total_tic=total_tic
    )


def _shifted(ppm: float) -> float:
    return PLANTED * (1 + ppm * 1e-6)


@pytest.fixture(scope="module")
def planted(elasticsearch_url):
    """Six measurements: three hold the planted m/z (±1 ppm), one holds it at 0.5 % of the
    TIC, two hold only neighbours 4 ppm away (one store for the module: these tests read)."""
    store = MetadataStore.connect(elasticsearch_url, index_prefix=f"test-{uuid.uuid4().hex[:8]}")
    store.ensure_indices()
    peaks = {
        1: ([300.1, _shifted(0.8), 900.2], [10, 50, 10]),
        2: ([_shifted(-1.0), 812.3], [30, 5]),
        3: ([PLANTED], [20]),
        4: ([_shifted(0.2), 500.0], [5, 40]),  # 0.5 % of the TIC
        5: ([_shifted(4.0), 300.1], [50, 50]),
        6: ([_shifted(-4.0)], [80]),
    }
    store.bulk_put([measurement(S, i) for i in peaks], refresh=True)
    for i, (mz, summed) in peaks.items():
        index_peak_table(store, f"m-{i:07d}", "default@v1", "ab" * 32, _features(mz, summed))
    store.refresh("PeakFeature")
    yield store
    store.drop_all()


def test_mz_search_returns_exactly_the_measurements_holding_the_planted_peak(planted):
    found = search_mz(planted, PLANTED, ppm=3)
    assert {m.id for m in found.hits} == {"m-0000001", "m-0000002", "m-0000003", "m-0000004"}


def test_peaks_four_ppm_away_are_outside_a_three_ppm_window(planted):
    found = search_mz(planted, _shifted(4.0), ppm=1)
    assert {m.id for m in found.hits} == {"m-0000005"}


def test_min_tic_fraction_drops_measurements_where_the_peak_is_weak(planted):
    found = search_mz(planted, PLANTED, ppm=3, min_tic_fraction=0.01)
    assert {m.id for m in found.hits} == {"m-0000001", "m-0000002", "m-0000003"}


def test_each_match_names_its_feature_and_ppm_error(planted):
    found = search_mz(planted, PLANTED, ppm=3)
    match = found.matches["m-0000002"]
    assert match.ppm_error == pytest.approx(-1.0, abs=1e-6)
    assert match.tic_fraction == pytest.approx(0.03)


def test_facets_count_the_matched_measurements_fields(planted):
    found = search_mz(planted, PLANTED, ppm=3, facets=["sample.organ"])
    organs = [planted.get(S.Measurement, f"m-{i:07d}").doc.sample.organ for i in (1, 2, 3, 4)]
    expected = {o.lower(): organs.count(o) for o in organs}
    assert {k.lower(): v for k, v in found.facets["sample.organ"]} == expected


def test_text_and_filters_narrow_an_mz_search(planted):
    polarity = planted.get(S.Measurement, "m-0000003").doc.settings.polarity
    name = S.Polarity._VALUES_TO_NAMES[polarity]
    found = search_mz(planted, PLANTED, ppm=3, filters={"settings.polarity": name})
    ids = {m.id for m in found.hits}
    assert "m-0000003" in ids
    assert all(m.settings.polarity == polarity for m in found.hits)


def test_reindexing_a_smaller_table_removes_its_old_features(metadata_store):
    store, table = metadata_store, _features([300.1, PLANTED], [10, 30])
    store.bulk_put([measurement(S, 7)], refresh=True)
    index_peak_table(store, "m-0000007", "default@v1", "ab" * 32, table)
    index_peak_table(store, "m-0000007", "default@v1", "ab" * 32, _features([300.1], [10]))
    store.refresh("PeakFeature")
    assert search_mz(store, PLANTED, ppm=3).total == 0
    assert search_mz(store, 300.1, ppm=3).total == 1


@pytest.mark.parametrize(
    ("mz", "ppm", "fraction", "field"),
    [(-1.0, 3.0, 0.0, "mz"), (760.0, 0.0, 0.0, "ppm"), (760.0, 3.0, 1.5, "min_tic_fraction")],
)
def test_an_impossible_mz_query_is_refused_naming_the_field(planted, mz, ppm, fraction, field):
    with pytest.raises(InvalidMzQuery) as refused:
        search_mz(planted, mz, ppm, fraction)
    assert refused.value.field == field
