"""ROIs in the real Elasticsearch store: save, list, change, delete, copy, and who may."""

from __future__ import annotations

import json

import pytest

from em2q_msi.spatial import rectangle
from em2q_resources import rois
from em2q_resources.auth import Forbidden, Role, User
from em2q_resources.metadata import DocumentNotFound, load_schema
from em2q_resources.metadata.errors import AlreadyExists
from em2q_resources.metadata.schema import SchemaViolation
from em2q_resources.metadata.synthetic import measurement
from em2q_resources.policy import NotYours

S = load_schema()
ADMIN = User("ada", Role.ADMIN)
SAM = User("sam", Role.SCIENTIST)
KIM = User("kim", Role.SCIENTIST)
TESS = User("tess", Role.TECHNICIAN)


def _measurement(store, measurement_id: str, nx: int = 40, ny: int = 30):
    doc = measurement(S, 1, id=measurement_id)
    doc.facts.pixels_x, doc.facts.pixels_y = nx, ny
    doc.facts.origin_x = doc.facts.origin_y = doc.facts.origin_z = 1
    store.create(doc, refresh=True)
    return doc


@pytest.fixture
def store(metadata_store):
    _measurement(metadata_store, "m-a")
    _measurement(metadata_store, "m-b")
    _measurement(metadata_store, "m-small", nx=10, ny=10)
    return metadata_store


def test_saved_roi_is_listed_with_its_geometry_pixel_count_and_author(store):
    saved = rois.save(store, SAM, "m-a", "tumour", rectangle(2, 3, 12, 8), colour="#ff0000")
    listed = rois.list_rois(store, "m-a")
    assert [r.name for r in listed] == ["tumour"]
    roi = listed[0]
    assert roi.id == "m-a/tumour" == saved.id
    assert roi.author == "sam" and roi.colour == "#ff0000"
    assert roi.pixel_count == 10 * 5
    assert rois.geometry_of(roi) == rectangle(2, 3, 12, 8)
    assert rois.list_rois(store, "m-b") == []


def test_rois_without_a_colour_get_distinct_ones(store):
    rois.save(store, SAM, "m-a", "one", rectangle(0, 0, 2, 2))
    rois.save(store, SAM, "m-a", "two", rectangle(2, 2, 4, 4))
    colours = [r.colour for r in rois.list_rois(store, "m-a")]
    assert colours == list(rois.COLOURS[:2])


def test_geometry_given_as_geojson_text_is_accepted(store):
    text = json.dumps(rectangle(0, 0, 3, 3))
    assert rois.save(store, SAM, "m-a", "text", text).pixel_count == 9


@pytest.mark.parametrize(
    "geometry, message",
    [
        ({"type": "Point", "coordinates": [1, 1]}, "not an area"),
        ("{not json", "not JSON"),
        (rectangle(100, 100, 120, 120), "covers no pixel of m-a's 40×30 image"),
    ],
)
def test_unusable_geometry_is_refused_naming_the_field(store, geometry, message):
    with pytest.raises(SchemaViolation, match=message) as caught:
        rois.save(store, SAM, "m-a", "bad", geometry)
    assert caught.value.field == "Roi.geometry"
    assert rois.list_rois(store, "m-a") == []


def test_bad_name_and_colour_are_refused(store):
    with pytest.raises(SchemaViolation, match="Roi.name"):
        rois.save(store, SAM, "m-a", "../evil", rectangle(0, 0, 2, 2))
    with pytest.raises(SchemaViolation, match="colour like"):
        rois.save(store, SAM, "m-a", "ok", rectangle(0, 0, 2, 2), colour="red")


def test_roi_of_an_unknown_measurement_is_refused(store):
    with pytest.raises(DocumentNotFound):
        rois.save(store, SAM, "m-missing", "r", rectangle(0, 0, 2, 2))


def test_technicians_may_not_draw_rois(store):
    with pytest.raises(Forbidden):
        rois.save(store, TESS, "m-a", "r", rectangle(0, 0, 2, 2))


def test_a_name_taken_is_refused_unless_replaced_by_its_author(store):
    rois.save(store, SAM, "m-a", "r", rectangle(0, 0, 2, 2))
    with pytest.raises(AlreadyExists):
        rois.save(store, SAM, "m-a", "r", rectangle(0, 0, 4, 4))
    with pytest.raises(NotYours, match="drawn by sam"):
        rois.save(store, KIM, "m-a", "r", rectangle(0, 0, 4, 4), replace=True)
    changed = rois.save(store, SAM, "m-a", "r", rectangle(0, 0, 4, 4), replace=True)
    assert changed.pixel_count == 16 and changed.updated_at is not None
    assert rois.get(store, "m-a", "r").pixel_count == 16


def test_only_the_author_or_an_admin_deletes(store):
    rois.save(store, SAM, "m-a", "r", rectangle(0, 0, 2, 2))
    with pytest.raises(NotYours):
        rois.delete(store, KIM, "m-a", "r")
    rois.delete(store, ADMIN, "m-a", "r")
    assert rois.list_rois(store, "m-a") == []
    with pytest.raises(DocumentNotFound):
        rois.get(store, "m-a", "r")


def test_rois_are_copied_to_measurements_of_the_same_grid_only(store):
    rois.save(store, SAM, "m-a", "cortex", rectangle(0, 0, 10, 10))
    rois.save(store, SAM, "m-a", "medulla", rectangle(10, 10, 20, 20))
    copies = rois.copy(store, KIM, "m-a", ["m-b"])
    assert sorted(c.id for c in copies) == ["m-b/cortex", "m-b/medulla"]
    assert {r.author for r in rois.list_rois(store, "m-b")} == {"kim"}
    with pytest.raises(SchemaViolation, match="10×10"):
        rois.copy(store, KIM, "m-a", ["m-small"])
    assert rois.list_rois(store, "m-small") == []
    with pytest.raises(AlreadyExists):  # nothing half-copied: refused before writing
        rois.copy(store, KIM, "m-a", ["m-b"])
