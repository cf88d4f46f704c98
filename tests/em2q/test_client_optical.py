"""The optical image from the notebook client and the CLI: stored, registered, refused."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from em2q.cli import main
from em2q_resources.metadata import SchemaViolation
from tests.em2q.test_client_rois import NX, NY, section_measurement  # noqa: F401  (fixture)

#: optical (x, y) → MSI (x, y) of the 12×10 section: 4 optical pixels per MSI pixel
KNOWN = np.array([[0.25, 0.0, 0.5], [0.0, 0.25, 0.25]])


def _jpeg(tmp_path):
    path = tmp_path / "he.jpg"
    Image.fromarray(np.full((40, 48, 3), 180, np.uint8)).save(path, format="JPEG")
    return path


def _pairs(points):
    points = np.asarray(points, float)
    return np.hstack([points, points @ KNOWN[:, :2].T + KNOWN[:, 2]]).tolist()


def test_the_client_stores_and_registers_an_optical_image(section_measurement, tmp_path):  # noqa: F811
    m, _ = section_measurement
    doc = m.add_optical_image(_jpeg(tmp_path))
    assert (doc["format"], doc["width_px"], doc["height_px"]) == ("JPEG", 48, 40)
    transform = m.register_optical(_pairs([[0, 0], [40, 2], [3, 36]]))
    np.testing.assert_allclose(transform["matrix"], KNOWN, atol=1e-9)
    stored = m.catalog.store.get(m.catalog.store.schema.OpticalImage, m.id).doc
    assert json.loads(stored.transform)["matrix"] == transform["matrix"]
    with m.catalog.storage.open(m.catalog.storage.key_of(stored.display_url)) as display:
        assert Image.open(io.BytesIO(display.read())).size == (48, 40)


def test_the_client_refuses_two_landmarks_naming_the_field(section_measurement, tmp_path):  # noqa: F811
    m, _ = section_measurement
    m.add_optical_image(_jpeg(tmp_path))
    with pytest.raises(SchemaViolation, match="OpticalImage.transform: .*got 2"):
        m.register_optical(_pairs([[0, 0], [40, 2]]))


def test_the_cli_adds_and_registers_an_optical_image(section_measurement, tmp_path):  # noqa: F811
    m, _ = section_measurement
    settings = m.catalog.settings
    env = {
        "EM2Q_ELASTICSEARCH_URL": settings.elasticsearch_url,
        "EM2Q_INDEX_PREFIX": settings.index_prefix,
        "EM2Q_STORAGE": str(settings.storage),
        "EM2Q_CACHE_DIR": str(tmp_path / "cli-cache"),
    }
    runner = CliRunner()
    added = runner.invoke(main, ["optical", "add", m.id, str(_jpeg(tmp_path)), "--json"], env=env)
    assert added.exit_code == 0, added.output
    assert json.loads(added.output)["format"] == "JPEG"
    landmarks = [f"--landmark={','.join(map(str, p))}" for p in _pairs([[0, 0], [40, 2], [3, 36]])]
    fitted = runner.invoke(main, ["optical", "register", m.id, *landmarks, "--json"], env=env)
    assert fitted.exit_code == 0, fitted.output
    np.testing.assert_allclose(json.loads(fitted.output)["matrix"], KNOWN, atol=1e-9)
    collinear = [f"--landmark={','.join(map(str, p))}" for p in _pairs([[0, 0], [1, 1], [2, 2]])]
    refused = runner.invoke(main, ["optical", "register", m.id, *collinear], env=env)
    assert refused.exit_code == 1 and "lie on one line" in refused.output


def test_deleting_the_measurement_removes_its_optical_image(section_measurement, tmp_path):  # noqa: F811
    from em2q.client import delete_measurement
    from em2q_resources.auth import Role, User

    m, _ = section_measurement
    m.add_optical_image(_jpeg(tmp_path))
    store, storage = m.catalog.store, m.catalog.storage
    assert storage.find(f"measurements/{m.id}/optical")
    delete_measurement(store, storage, m.id, User("ada", Role.ADMIN))
    assert not store.exists(store.schema.OpticalImage, m.id)
    assert not storage.find(f"measurements/{m.id}/optical")


def _upload_env(metadata_store, elasticsearch_url, tmp_path) -> dict:
    return {
        "EM2Q_ELASTICSEARCH_URL": elasticsearch_url,
        "EM2Q_INDEX_PREFIX": metadata_store.prefix,
        "EM2Q_STORAGE": str(tmp_path / "storage"),
        "EM2Q_CACHE_DIR": str(tmp_path / "cache"),
    }


def test_cli_upload_with_optical_stores_the_image_with_the_measurement(
    metadata_store, elasticsearch_url, tmp_path
):
    from em2q.dev import EXAMPLE_SETUP
    from tests.em2q.test_upload import copy_example

    env = _upload_env(metadata_store, elasticsearch_url, tmp_path)
    imzml = copy_example(tmp_path / "src")
    result = CliRunner().invoke(
        main, ["upload", str(imzml), "--setup", str(EXAMPLE_SETUP), "--optical",
               str(_jpeg(tmp_path))], env=env,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    measurement_id = result.stdout.strip()
    doc = metadata_store.get(metadata_store.schema.OpticalImage, measurement_id).doc
    assert (doc.filename, doc.format, doc.width_px) == ("he.jpg", "JPEG", 48)


def test_cli_upload_with_a_bad_optical_image_uploads_nothing(
    metadata_store, elasticsearch_url, tmp_path
):
    from em2q.dev import EXAMPLE_SETUP
    from tests.em2q.test_upload import copy_example

    env = _upload_env(metadata_store, elasticsearch_url, tmp_path)
    not_an_image = tmp_path / "slide.tif"
    not_an_image.write_bytes(b"II*\0 broken tiff")
    result = CliRunner().invoke(
        main, ["upload", str(copy_example(tmp_path / "src")), "--setup", str(EXAMPLE_SETUP),
               "--optical", str(not_an_image)], env=env,
    )  # fmt: skip
    assert result.exit_code == 1
    assert "--optical" in result.output and "not a readable PNG, JPEG or TIFF" in result.output
    metadata_store.refresh()
    assert metadata_store.search(metadata_store.schema.Measurement).total == 0
    assert not (tmp_path / "storage" / "measurements").exists()


def test_a_roi_drawn_on_the_optical_image_is_its_msi_pixels_through_the_registration(
    section_measurement,  # noqa: F811
    tmp_path,
):
    from matplotlib.path import Path as Outline

    m, section = section_measurement
    m.add_optical_image(_jpeg(tmp_path))
    m.register_optical(_pairs([[0, 0], [40, 2], [3, 36]]))
    drawn = [(3.0, 2.0), (41.0, 6.0), (30.0, 37.0), (9.0, 30.0)]  # optical image pixels
    roi = m.add_roi("on-he", drawn, on="optical")
    # the direct mapping: each MSI pixel centre carried back onto the optical image
    rows, cols = np.mgrid[0:NY, 0:NX]
    centres = np.column_stack([cols.ravel() + 0.5, rows.ravel() + 0.5])
    inverse = np.linalg.inv(np.vstack([KNOWN, [0, 0, 1]]))[:2]
    on_optical = centres @ inverse[:, :2].T + inverse[:, 2]
    expected = Outline(drawn).contains_points(on_optical).reshape(NY, NX)
    assert 0 < expected.sum() < NX * NY
    np.testing.assert_array_equal(roi.mask, expected)
    assert m.rois().loc["on-he", "pixels"] == expected.sum()
    block = m.roi("on-he").spectra()
    np.testing.assert_array_equal(
        block.intensity, section.block.intensity[np.flatnonzero(expected.reshape(-1))]
    )


def test_a_roi_on_an_unregistered_optical_image_is_refused_and_not_saved(
    section_measurement,  # noqa: F811
    tmp_path,
):
    from em2q_resources.optical import NotRegistered

    m, _ = section_measurement
    with pytest.raises(NotRegistered, match="has no optical image"):
        m.add_roi("early", [(0, 0), (20, 0), (0, 20)], on="optical")
    m.add_optical_image(_jpeg(tmp_path))
    with pytest.raises(NotRegistered, match="not registered yet"):
        m.add_roi("early", [(0, 0), (20, 0), (0, 20)], on="optical")
    assert m.rois().empty
