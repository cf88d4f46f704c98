"""The optical image routes on the processed example (3×3 pixels): upload, registration by
landmarks through the web API, the overlay, and bad input refused with the problem named."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from em2q_resources.metadata import load_schema

#: optical (x, y) → MSI (x, y): 20 optical pixels per MSI pixel, a little rotated and shifted
KNOWN = np.array([[0.05, -0.004, 0.2], [0.004, 0.05, -0.1]])
WIDTH, HEIGHT = 60, 45


def _image(fmt: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    pixels = np.zeros((HEIGHT, WIDTH, 3), np.uint8)
    pixels[:, :, 1] = np.linspace(0, 255, WIDTH, dtype=np.uint8)  # a green ramp
    Image.fromarray(pixels).save(buffer, format=fmt)
    return buffer.getvalue()


def _landmarks(points) -> list[list[float]]:
    points = np.asarray(points, float)
    return np.hstack([points, points @ KNOWN[:, :2].T + KNOWN[:, 2]]).tolist()


@pytest.fixture(scope="module")
def registered(processed, processed_client):
    """The example's optical image uploaded and registered with 4 landmark pairs."""
    _, _, _, mid = processed
    answer = processed_client.post(
        f"/api/measurements/{mid}/optical", files={"image": ("section.png", _image(), "image/png")}
    )
    assert answer.status_code == 201, answer.text
    fit = processed_client.post(
        f"/api/measurements/{mid}/optical/registration",
        json={"landmarks": _landmarks([[5, 5], [55, 4], [6, 40], [50, 42]])},
    )
    assert fit.status_code == 200, fit.text
    return mid, answer.json(), fit.json()


def test_an_uploaded_optical_image_is_stored_with_its_format_and_size(processed, registered):
    _, store, storage, _ = processed
    mid, uploaded, _ = registered
    assert (uploaded["format"], uploaded["width_px"], uploaded["height_px"]) == ("PNG", 60, 45)
    doc = store.get(load_schema().OpticalImage, mid).doc
    with storage.open(storage.key_of(doc.url)) as stored:
        assert stored.read() == _image()


def test_a_known_affine_is_recovered_from_landmarks_and_stored(
    processed, processed_client, registered
):
    mid, _, fit = registered
    np.testing.assert_allclose(fit["matrix"], KNOWN, atol=1e-9)
    assert max(fit["residuals_px"]) < 1e-9
    stored = processed_client.get(f"/api/measurements/{mid}/optical").json()["transform"]
    np.testing.assert_allclose(stored["matrix"], KNOWN, atol=1e-9)
    assert len(stored["landmarks"]) == 4


def test_the_overlay_is_an_image_of_the_optical_size(processed_client, registered):
    mid, _, _ = registered
    answer = processed_client.get(
        f"/measurements/{mid}/optical/overlay.png", params={"layer": "tic", "opacity": 0.6}
    )
    assert answer.status_code == 200 and answer.headers["content-type"] == "image/png"
    overlay = np.asarray(Image.open(io.BytesIO(answer.content)).convert("RGB"))
    assert overlay.shape == (HEIGHT, WIDTH, 3)
    base = np.asarray(Image.open(io.BytesIO(_image())).convert("RGB"))
    # the MSI image (3×3 pixels) covers about 60×60 optical pixels: the TIC is drawn over the
    # optical image there, and the optical image shows alone where the transform leaves it
    inside = KNOWN[:, :2] @ np.array([20.0, 20.0]) + KNOWN[:, 2]
    assert 0 < inside[0] < 3 and 0 < inside[1] < 3
    assert not np.array_equal(overlay[20, 20], base[20, 20])
    layer = processed_client.get(f"/measurements/{mid}/optical/layer.png")
    assert Image.open(io.BytesIO(layer.content)).size == (WIDTH, HEIGHT)


def test_the_registration_page_has_both_images_to_click(processed_client, registered):
    mid, _, _ = registered
    page = processed_client.get(f"/measurements/{mid}/optical")
    assert page.status_code == 200
    assert 'id="optical-image"' in page.text and 'id="optical-tic"' in page.text
    assert 'id="overlay-opacity" type="range"' in page.text
    assert 'id="optical-roi-svg"' in page.text  # ROIs are drawn on the optical image too
    assert (
        f'href="/measurements/{mid}/optical?' in processed_client.get(f"/measurements/{mid}").text
    )


def test_a_file_that_is_not_an_image_is_refused_and_nothing_changes(
    processed, processed_client, registered
):
    _, _, storage, _ = processed
    mid, uploaded, _ = registered
    before = sorted(storage.find(f"measurements/{mid}/optical"))
    answer = processed_client.post(
        f"/api/measurements/{mid}/optical",
        files={"image": ("notes.png", b"these are notes, not pixels", "image/png")},
    )
    assert answer.status_code == 400
    assert "notes.png: not a readable PNG, JPEG or TIFF image" in answer.json()["message"]
    assert sorted(storage.find(f"measurements/{mid}/optical")) == before
    now = processed_client.get(f"/api/measurements/{mid}/optical").json()
    assert now["sha256"] == uploaded["sha256"] and now["transform"] is not None


@pytest.mark.parametrize(
    ("landmarks", "problem"),
    [
        ([[5, 5], [55, 4]], "at least 3 landmark pairs, got 2"),
        ([[5, 5], [10, 10], [20, 20]], "lie on one line"),
    ],
)
def test_bad_landmarks_are_refused_with_400_naming_the_problem(
    processed_client, registered, landmarks, problem
):
    mid, _, fit = registered
    answer = processed_client.post(
        f"/api/measurements/{mid}/optical/registration", json={"landmarks": _landmarks(landmarks)}
    )
    assert answer.status_code == 400
    assert problem in answer.json()["message"]
    kept = processed_client.get(f"/api/measurements/{mid}/optical").json()["transform"]
    assert kept["matrix"] == fit["matrix"]


# ---------------------------------------------------------------- the upload form


def _post_upload(client, optical: tuple[str, bytes]):
    from tests.web.conftest import EXAMPLE_IBD, EXAMPLE_IMZML, EXAMPLE_SETUP, setup_form_values

    with EXAMPLE_IMZML.open("rb") as imzml, EXAMPLE_IBD.open("rb") as ibd:
        return client.post(
            "/upload",
            data=setup_form_values(EXAMPLE_SETUP),
            files={"imzml": (EXAMPLE_IMZML.name, imzml), "ibd": (EXAMPLE_IBD.name, ibd),
                   "optical": optical},
            headers={"Accept": "application/json"},
        )  # fmt: skip


def test_the_upload_form_stores_the_optical_image_with_the_measurement(client, metadata_store):
    answer = _post_upload(client, ("he.jpg", _image("JPEG")))
    assert answer.status_code == 201, answer.text
    doc = metadata_store.get(load_schema().OpticalImage, answer.json()["id"]).doc
    assert (doc.filename, doc.format, doc.width_px) == ("he.jpg", "JPEG", WIDTH)


def test_the_upload_form_refuses_a_bad_optical_image_and_uploads_nothing(client, metadata_store):
    answer = _post_upload(client, ("he.tif", b"II*\x00 not a tiff"))
    assert answer.status_code == 422
    assert "he.tif: not a readable PNG, JPEG or TIFF" in answer.json()["errors"]["optical"]
    metadata_store.refresh()
    assert metadata_store.search(load_schema().Measurement).total == 0


# ---------------------------------------------------------------- ROIs drawn on the image


def test_a_roi_drawn_on_the_optical_image_is_saved_in_msi_pixels(
    processed, processed_client, registered
):
    from matplotlib.path import Path as Outline

    from em2q_msi.spatial import roi_mask

    mid, _, _ = registered
    drawn = [[2.0, 2.0], [58.0, 3.0], [4.0, 44.0], [2.0, 2.0]]
    answer = processed_client.post(
        f"/api/measurements/{mid}/optical/rois",
        json={"name": "he-drawn", "geometry": {"type": "Polygon", "coordinates": [drawn]}},
    )
    assert answer.status_code == 201, answer.text
    saved = answer.json()
    inverse = np.linalg.inv(np.vstack([KNOWN, [0, 0, 1]]))[:2]
    rows, cols = np.mgrid[0:3, 0:3]
    centres = np.column_stack([cols.ravel() + 0.5, rows.ravel() + 0.5])
    expected = Outline(drawn).contains_points(centres @ inverse[:, :2].T + inverse[:, 2])
    assert 0 < expected.sum() < 9
    np.testing.assert_array_equal(roi_mask(saved["geometry"], (3, 3)).ravel(), expected)
    assert saved["pixel_count"] == expected.sum()
    listed = processed_client.get(f"/api/measurements/{mid}/rois").json()
    assert "he-drawn" in [r["name"] for r in listed]
    processed_client.delete(f"/api/measurements/{mid}/rois/he-drawn")


def test_a_roi_on_an_unregistered_optical_image_is_refused_with_400(
    processed, processed_client, registered
):
    _, store, _, _ = processed
    mid, _, _ = registered
    stored = store.get(load_schema().OpticalImage, mid)
    transform, stored.doc.transform = stored.doc.transform, None
    store.update(stored.doc, stored, refresh=True)
    try:
        answer = processed_client.post(
            f"/api/measurements/{mid}/optical/rois",
            json={"name": "early", "geometry": {"type": "Polygon",
                  "coordinates": [[[0, 0], [40, 0], [0, 40], [0, 0]]]}},
        )  # fmt: skip
        assert answer.status_code == 400
        assert "not registered yet" in answer.json()["message"]
        names = [r["name"] for r in processed_client.get(f"/api/measurements/{mid}/rois").json()]
        assert "early" not in names
    finally:
        again = store.get(load_schema().OpticalImage, mid)
        again.doc.transform = transform
        store.update(again.doc, again, refresh=True)
