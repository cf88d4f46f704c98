"""Defining a study from a catalog search on the web: the "create a study from these" form,
grouped by a measurement field or by a group typed per row, behind the CSRF token."""

from __future__ import annotations

import re

from fastapi.testclient import TestClient

from em2q.web import create_app
from em2q_resources import studies
from em2q_resources.metadata import load_schema
from em2q_resources.metadata.synthetic import measurement

S = load_schema()


def register(store, index: int, condition: str) -> str:
    doc = measurement(S, index)
    doc.sample.condition = S.SampleCondition._NAMES_TO_VALUES[condition]
    doc.title = f"kidney section {index}"
    store.create(doc, refresh=True)
    return doc.id


def form_of(page: str) -> str:
    return re.search(
        r'<form method="post" action="/studies" id="study-form">.*?</form>', page, re.S
    ).group(0)


def test_the_search_results_offer_a_study_form_with_every_row_as_a_member(client, metadata_store):
    ids = [register(metadata_store, i, c) for i, c in ((1, "HEALTHY"), (2, "DISEASED"))]
    form = form_of(client.get("/catalog?q=kidney").text)
    assert re.findall(r'name="m" value="([^"]+)"', form) == ids
    assert 'name="csrf_token"' in form
    assert '<option value="sample.condition">' in form and 'value="manual"' in form


def test_a_study_grouped_by_a_field_is_created_and_its_page_opened(client, metadata_store):
    a, b = register(metadata_store, 1, "HEALTHY"), register(metadata_store, 2, "DISEASED")
    answer = client.post(
        "/studies",
        data={
            "study_id": "from-search",
            "title": "Kidney",
            "design": "sample.condition",
            "m": [a, b],
        },
        follow_redirects=False,
    )
    assert answer.status_code == 303, answer.text
    assert answer.headers["location"] == "/studies/from-search"
    study = studies.get(metadata_store, "from-search")
    assert study.title == "Kidney" and study.design == ["sample.condition"]
    assert studies.member_groups(metadata_store, study) == {a: "HEALTHY", b: "DISEASED"}
    assert client.get("/studies/from-search").status_code == 200


def test_a_study_grouped_by_hand_keeps_the_group_typed_per_row(client, metadata_store):
    a, b, c = (register(metadata_store, i, "HEALTHY") for i in (1, 2, 3))
    answer = client.post(
        "/studies",
        data={"study_id": "by-hand", "design": "manual", "m": [a, b, c],
              "group_" + a: "tumour", "group_" + b: "healthy", "group_" + c: " tumour "},
    )  # fmt: skip
    assert answer.status_code == 200 and "groups set by hand" in answer.text
    study = studies.get(metadata_store, "by-hand")
    assert studies.member_groups(metadata_store, study) == {a: "tumour", b: "healthy", c: "tumour"}


def test_a_manual_study_without_a_group_for_a_row_is_refused_naming_it(client, metadata_store):
    a, b = register(metadata_store, 1, "HEALTHY"), register(metadata_store, 2, "HEALTHY")
    answer = client.post(
        "/studies", data={"study_id": "half", "design": "manual", "m": [a, b], "group_" + a: "x"}
    )
    assert answer.status_code == 400
    assert f"member {b!r} has no group" in answer.text.replace("&#39;", "'")
    assert not metadata_store.exists(S.Study, "half")


def test_the_study_form_posted_without_the_csrf_token_is_refused(
    web_settings, metadata_store, storage
):
    a = register(metadata_store, 1, "HEALTHY")
    with TestClient(create_app(web_settings, store=metadata_store, storage=storage)) as browser:
        browser.get("/static/em2q.css")  # the cookie, but no token: a forged form at most
        answer = browser.post(
            "/studies", data={"study_id": "forged", "design": "sample.condition", "m": [a]}
        )
    assert answer.status_code == 403
    assert not metadata_store.exists(S.Study, "forged")
