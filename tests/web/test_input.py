"""Bad values in forms and query parameters are refused with 4xx naming the field."""

from __future__ import annotations

import base64
import json

import pytest

from tests.web.conftest import EXAMPLE_SETUP, setup_form_values
from tests.web.test_pages import JSON, _register, post_upload


@pytest.mark.parametrize(
    "field, value, named",
    [
        ("acquired_at", "yesterday", "expected a date like 2024-05-31"),
        ("project_id", "p" * 60_000, "at most 1000 characters"),
        ("settings.pixel_size_x_um", "inf", "expected a finite number"),
    ],
)
def test_an_upload_field_that_cannot_be_stored_is_named(client, field, value, named):
    answer = post_upload(client, {**setup_form_values(EXAMPLE_SETUP), field: value}, headers=JSON)
    assert answer.status_code == 422
    assert named in answer.json()["errors"][field]


@pytest.mark.parametrize("name", ["x" * 300 + ".imzML", "a\r\nb.imzML", "a\x00b.imzML"])
def test_hostile_file_names_are_refused_or_made_safe_without_a_500(client, tmp_path, name):
    values = setup_form_values(EXAMPLE_SETUP)
    answer = client.post(
        "/upload",
        data=values,
        files={"imzml": (name, b"<mzML/>"), "ibd": ("a.ibd", b"\0" * 16)},
        headers=JSON,
    )
    assert answer.status_code in (400, 422), answer.text[:200]


@pytest.mark.parametrize(
    "params, field",
    [
        ({"uploaded_from": "2020-13-45"}, "uploaded_from"),
        ({"uploaded_to": "garbage"}, "uploaded_to"),
        ({"f": "uploaded_at>=garbage"}, "uploaded_at"),
        ({"q": " ".join(["word"] * 10_000)}, "q"),
        ({"page_token": base64.urlsafe_b64encode(b"not json").decode()}, "page_token"),
        (
            {"page_token": base64.urlsafe_b64encode(json.dumps([{"a": 1}]).encode()).decode()},
            "page_token",
        ),  # fmt: skip
        (
            {"page_token": base64.urlsafe_b64encode(json.dumps(["x", "y", "z"]).encode()).decode()},
            "query",
        ),  # fmt: skip
    ],
)
def test_bad_catalog_parameters_are_a_400_naming_the_field(client, params, field):
    answer = client.get("/catalog", params=params, headers=JSON)
    assert answer.status_code == 400, answer.text[:300]
    assert answer.json()["message"].startswith(field)


@pytest.mark.parametrize(
    "params, problem",
    [
        ({"mz": "760.5", "ppm": "nan"}, "ppm must be a finite number"),
        ({"mz": "760.5", "ppm": "-3"}, "ppm must be a finite number"),
        ({"mz": "inf"}, "m/z must be a finite number"),
        ({"mz": ", ".join(["760.5"] * 300)}, "at most 12 m/z values"),
    ],
)
def test_bad_mz_and_ppm_are_named_on_the_measurement_page(client, metadata_store, params, problem):
    _register(metadata_store, "kept")
    answer = client.get("/measurements/kept", params=params)
    assert answer.status_code == 200 and problem in answer.text
