"""The provenance pages (issue 17) on the session's processed example measurement."""

from __future__ import annotations

from em2q_resources.catalog import CATALOG


def test_stale_page_says_nothing_is_stale_after_processing(processed_client):
    page = processed_client.get("/provenance/stale")
    assert page.status_code == 200
    assert "<strong>0</strong> partitions" in page.text and "Nothing is stale" in page.text


def test_stale_api_lists_the_partitions_another_parameter_set_would_redo(
    processed, processed_client
):
    _, store, _, measurement_id = processed
    store.save_parameter_set("web-stale", {"peak_picking": {"snr_threshold": 40}}, author="ada")
    answer = processed_client.get(
        "/api/provenance/stale", params={"p": "web-stale", "m": measurement_id}
    ).json()  # the session's other measurements (``three_processed``) are left out
    assert answer["parameter_set"] == "web-stale@v1"
    redone = CATALOG.parameter_dependent  # every result made with the other parameter set
    assert {row["asset"] for row in answer["partitions"]} == redone
    chunks = sum(1 for row in answer["partitions"] if row["asset"] == "preprocessed_chunks")
    assert chunks == 2  # the session's K
    assert answer["count"] == len(answer["partitions"]) == chunks + len(redone) - 1
    assert {row["measurement_id"] for row in answer["partitions"]} == {measurement_id}


def test_certificate_page_shows_the_verified_chain(processed, processed_client):
    _, _, _, measurement_id = processed
    page = processed_client.get(f"/measurements/{measurement_id}/certificate/peak_table")
    assert page.status_code == 200
    assert "<strong>Verified</strong>" in page.text
    answer = processed_client.get(
        f"/api/measurements/{measurement_id}/certificate/peak_table"
    ).json()
    assert answer["verified"] is True and answer["problems"] == []
    assert [s["asset"] for s in answer["steps"]][0] == "raw_measurement"
    assert answer["steps"][-1]["asset"] == "peak_table"


def test_certificate_of_an_unknown_result_is_not_found(processed, processed_client):
    _, _, _, measurement_id = processed
    page = processed_client.get(f"/measurements/{measurement_id}/certificate/no_such_asset")
    assert page.status_code == 404
