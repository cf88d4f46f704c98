"""The parameter-set diff page and the client's ``Measurement.diff`` on the example measurement
processed under two parameter sets (the session's ``processed_two_sets``)."""

from __future__ import annotations

import re

import pytest

from em2q.client import Catalog
from em2q.results import MeasurementResults, peak_table_of
from em2q_resources.auth import Role, User
from tests.web.conftest import STRICT_PEAKS


def _cell(html: str, cell_id: str) -> str:
    return re.search(rf'id="{cell_id}">([^<]*)<', html).group(1)


def test_a_parameter_set_diffed_with_itself_changes_nothing(processed_client, processed_two_sets):
    measurement_id = processed_two_sets[3]
    page = processed_client.get(
        "/diff", params={"m": measurement_id, "a": "default", "b": "default"}
    )
    assert page.status_code == 200
    assert (_cell(page.text, "gained"), _cell(page.text, "lost")) == ("0", "0")
    assert _cell(page.text, "overlap") == "1.000" and _cell(page.text, "tic-ratio") == "1"


def test_the_client_and_the_page_give_the_same_diff_of_two_sets(
    processed_client, processed_two_sets
):
    settings, store, storage, measurement_id = processed_two_sets
    catalog = Catalog(settings, user=User("sam", Role.SCIENTIST), store=store, storage=storage)
    diff = catalog.measurement(measurement_id).diff("default", STRICT_PEAKS, tolerance_ppm=5.0)
    mz_a = peak_table_of(
        MeasurementResults(measurement_id, "default", store=store, storage=storage)
    )[0]
    assert diff.paired + diff.lost_mz.size == diff.features_a == mz_a.size
    assert diff.paired + diff.gained_mz.size == diff.features_b
    page = processed_client.get(
        "/diff", params={"m": measurement_id, "a": "default", "b": STRICT_PEAKS, "ppm": "5"}
    )
    assert int(_cell(page.text, "paired")) == diff.paired
    assert float(_cell(page.text, "overlap")) == pytest.approx(diff.overlap, abs=5e-4)
    assert float(_cell(page.text, "tic-ratio")) == pytest.approx(diff.tic_ratio, rel=1e-3)
