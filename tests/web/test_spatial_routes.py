"""The spatial routes on the processed example (3×3 pixels): ROIs drawn, listed, their mean
spectrum, deleted; the segmentation map and segments; a segment as a ROI; colocalisation."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image
from pyimzml.ImzMLParser import ImzMLParser

from em2q_msi.spatial import rectangle
from tests.web.conftest import EXAMPLE_IMZML


@pytest.fixture
def roi_names(processed, processed_client):
    """Names this test draws, deleted afterwards (the processed example is shared)."""
    _, _, _, measurement_id = processed
    names: list[str] = []
    yield names
    for name in names:
        processed_client.delete(f"/api/measurements/{measurement_id}/rois/{name}")


def test_a_drawn_roi_is_saved_listed_and_gives_its_mean_spectrum(
    processed, processed_client, roi_names
):
    _, _, _, mid = processed
    roi_names.append("web-corner")
    answer = processed_client.post(
        f"/api/measurements/{mid}/rois",
        json={"name": "web-corner", "geometry": rectangle(0, 0, 2, 2), "colour": "#d62728"},
    )
    assert answer.status_code == 201, answer.text
    assert answer.json()["pixel_count"] == 4
    listed = processed_client.get(f"/api/measurements/{mid}/rois").json()
    assert [r["name"] for r in listed if r["name"] == "web-corner"] == ["web-corner"]
    spectrum = processed_client.get(f"/api/measurements/{mid}/rois/web-corner/spectrum").json()
    parser = ImzMLParser(str(EXAMPLE_IMZML))
    inside = [i for i, (x, y, _) in enumerate(parser.coordinates) if x <= 2 and y <= 2]
    direct = np.mean([parser.getspectrum(i)[1] for i in inside], axis=0, dtype=np.float64)
    assert spectrum["pixels"] == 4
    np.testing.assert_allclose(spectrum["intensity"], direct, rtol=1e-12)
    tics = [float(np.sum(parser.getspectrum(i)[1], dtype=np.float64)) for i in inside]
    qc = spectrum["qc"]  # from the ROI's spectra only
    assert qc["pixels"] == 4 and qc["empty_fraction"] == 0.0
    assert qc["tic_median"] == pytest.approx(np.median(tics), rel=1e-12)
    assert qc["tic_mean"] == pytest.approx(np.mean(tics), rel=1e-12)
    assert spectrum["parameter_set"] == "default@v1"


def test_a_roi_outside_the_image_is_refused_with_400(processed, processed_client):
    _, _, _, mid = processed
    answer = processed_client.post(
        f"/api/measurements/{mid}/rois",
        json={"name": "web-outside", "geometry": rectangle(10, 10, 12, 12)},
    )
    assert answer.status_code == 400
    assert "covers no pixel" in answer.text


def test_a_deleted_roi_is_no_longer_listed(processed, processed_client):
    _, _, _, mid = processed
    processed_client.post(
        f"/api/measurements/{mid}/rois",
        json={"name": "web-gone", "geometry": rectangle(0, 0, 1, 1)},
    )
    assert processed_client.delete(f"/api/measurements/{mid}/rois/web-gone").status_code == 204
    names = [r["name"] for r in processed_client.get(f"/api/measurements/{mid}/rois").json()]
    assert "web-gone" not in names
    missing = processed_client.delete(f"/api/measurements/{mid}/rois/web-gone")
    assert missing.status_code == 404


def test_segmentation_map_and_segments_are_served(processed, processed_client):
    _, _, _, mid = processed
    summary = processed_client.get(f"/api/measurements/{mid}/segmentation").json()
    assert len(summary["segments"]) == summary["k"]
    assert np.array(summary["map"]).shape == (3, 3)
    assert sum(s["pixels"] for s in summary["segments"]) == 9
    png = processed_client.get(f"/measurements/{mid}/segmentation.png")
    assert png.headers["content-type"] == "image/png"
    assert Image.open(io.BytesIO(png.content)).size == (3, 3)


def test_a_segment_becomes_a_roi_of_exactly_its_pixels(processed, processed_client, roi_names):
    _, _, _, mid = processed
    summary = processed_client.get(f"/api/measurements/{mid}/segmentation").json()
    roi_names.append("web-segment")
    answer = processed_client.post(
        f"/api/measurements/{mid}/segments/0/roi", json={"name": "web-segment"}
    )
    assert answer.status_code == 201, answer.text
    assert answer.json()["pixel_count"] == summary["segments"][0]["pixels"]
    assert answer.json()["colour"] == summary["segments"][0]["colour"]


def test_colocalisation_ranks_other_features_of_the_peak_table(processed, processed_client):
    _, _, _, mid = processed
    summary = processed_client.get(f"/api/measurements/{mid}/segmentation").json()
    some_mz = summary["segments"][0]["top"][0]["mz"]
    answer = processed_client.get(
        f"/api/measurements/{mid}/colocalisation", params={"mz": some_mz, "top": 5}
    ).json()
    assert answer["target_mz"] == pytest.approx(some_mz)
    scores = [r["similarity"] for r in answer["ranked"]]
    assert len(scores) == 5 and scores == sorted(scores, reverse=True)
    assert some_mz not in [r["mz"] for r in answer["ranked"]]
    far = processed_client.get(f"/api/measurements/{mid}/colocalisation", params={"mz": 1.5})
    assert far.status_code == 400 and "nearest is" in far.text


def test_measurement_page_has_the_roi_drawing_and_segment_map_next_to_the_tic(
    processed, processed_client
):
    _, _, _, mid = processed
    page = processed_client.get(f"/measurements/{mid}").text
    assert 'id="spatial"' in page and 'data-nx="3"' in page and 'data-ny="3"' in page
    assert f'src="/measurements/{mid}/segmentation.png?p=default@v1"' in page
    assert 'id="roi-svg" viewBox="0 0 3 3"' in page
    script = processed_client.get("/static/spatial.js")
    assert script.status_code == 200 and "/rois" in script.text
