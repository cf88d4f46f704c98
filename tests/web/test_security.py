"""Cross-site request forgery and security headers of the web catalog (local mode: admin)."""

from __future__ import annotations

import re

import pytest
from fastapi.testclient import TestClient

from em2q.web import create_app
from em2q_resources.metadata import load_schema
from tests.web.test_pages import _register

S = load_schema()
EVIL = "http://evil.example"
SAVE = {"name": "forged", "value:qc.min_median_snr": "20"}


@pytest.fixture
def browser_like(web_settings, metadata_store, storage):
    """A client with the catalog's cookie but without the token header (what a forged form
    from another page has at most)."""
    with TestClient(create_app(web_settings, store=metadata_store, storage=storage)) as client:
        client.get("/static/em2q.css")
        yield client


def _token(client: TestClient) -> str:
    return client.cookies["em2q_csrf"]


def test_a_form_posted_from_another_origin_saves_and_deletes_nothing(browser_like, metadata_store):
    _register(metadata_store, "kept")
    token = _token(browser_like)
    for headers in ({"Origin": EVIL}, {"Referer": f"{EVIL}/page.html"}, {"Origin": "null"}):
        saved = browser_like.post("/parameter-sets", data={**SAVE, "csrf_token": token}, headers=headers)  # fmt: skip
        deleted = browser_like.post("/measurements/kept/delete", data={"csrf_token": token}, headers=headers)  # fmt: skip
        assert (saved.status_code, deleted.status_code) == (403, 403), headers
        assert "another site" in deleted.text
    metadata_store.refresh()
    assert metadata_store.exists(S.Measurement, "kept")
    assert not metadata_store.search(S.ParameterSet, filters={"name": "forged"}).hits


def test_a_post_without_the_token_is_refused_and_changes_nothing(browser_like, metadata_store):
    _register(metadata_store, "kept")
    answer = browser_like.post("/measurements/kept/delete", follow_redirects=False)
    wrong = browser_like.post("/measurements/kept/delete", data={"csrf_token": "x"})
    assert answer.status_code == 403 and "security token" in answer.text
    assert wrong.status_code == 403
    assert metadata_store.exists(S.Measurement, "kept")


def test_a_post_without_the_cookie_is_refused(web_settings, metadata_store, storage):
    with TestClient(create_app(web_settings, store=metadata_store, storage=storage)) as client:
        answer = client.post("/parameter-sets", data=SAVE)
    assert answer.status_code == 403 and "reload the page" in answer.text


def test_a_cookie_from_another_secret_is_not_accepted(web_settings, metadata_store, storage):
    settings = web_settings.with_overrides(web_secret="one secret")
    other = web_settings.with_overrides(web_secret="another secret")
    with TestClient(create_app(other, store=metadata_store, storage=storage)) as forger:
        forger.get("/static/em2q.css")
        planted = _token(forger)
    with TestClient(create_app(settings, store=metadata_store, storage=storage)) as client:
        client.cookies.set("em2q_csrf", planted)
        answer = client.post("/parameter-sets", data={**SAVE, "csrf_token": planted})
    assert answer.status_code == 403


def test_the_token_in_a_form_field_or_header_from_the_same_origin_is_accepted(
    browser_like, metadata_store
):
    token = _token(browser_like)
    own = {"Origin": "http://testserver"}
    by_field = browser_like.post("/parameter-sets", data={**SAVE, "csrf_token": token}, headers=own, follow_redirects=False)  # fmt: skip
    changed = {**SAVE, "value:qc.min_median_snr": "30"}
    by_header = browser_like.post("/parameter-sets", data=changed, headers={"X-CSRF-Token": token}, follow_redirects=False)  # fmt: skip
    assert (by_field.status_code, by_header.status_code) == (303, 303)
    assert {by_field.headers["location"], by_header.headers["location"]} == {
        "/parameter-sets/forged@v1",
        "/parameter-sets/forged@v2",
    }


def test_a_multipart_form_carries_the_token_in_its_first_field(browser_like):
    token = _token(browser_like)
    first = browser_like.post(
        "/upload",
        files=[("csrf_token", (None, token)), ("title", (None, "x")), ("imzml", ("a.imzML", b"x"))],
        headers={"Accept": "application/json"},
    )
    after_file = browser_like.post(
        "/upload",
        files=[("imzml", ("a.imzML", b"x")), ("csrf_token", (None, token))],
        headers={"Accept": "application/json"},
    )
    assert first.status_code == 422  # past the token check: the form itself is refused
    assert after_file.status_code == 403


def test_the_token_cookie_is_same_site_strict_and_http_only(web_settings, metadata_store, storage):
    with TestClient(create_app(web_settings, store=metadata_store, storage=storage)) as client:
        cookie = client.get("/static/em2q.css").headers["set-cookie"]
    assert "SameSite=Strict" in cookie and "HttpOnly" in cookie


@pytest.mark.parametrize("path", ["/catalog", "/upload", "/static/em2q.css", "/no-such-page"])
def test_every_response_carries_the_security_headers(client, path):
    headers = client.get(path).headers
    policy = headers["content-security-policy"]
    assert "frame-ancestors 'none'" in policy and "script-src 'self';" in policy
    assert headers["x-content-type-options"] == "nosniff"
    assert headers["x-frame-options"] == "DENY"
    assert headers["referrer-policy"] == "same-origin"


def test_every_post_form_on_the_pages_carries_the_token(client, metadata_store):
    _register(metadata_store, "kept")
    token = _token(client)
    for path in ("/upload", "/parameter-sets/new", "/measurements/kept"):
        html = client.get(path).text
        forms = re.findall(r'<form[^>]*method="post".*?</form>', html, re.S)
        assert forms, path
        for form in forms:
            assert f'name="csrf_token" value="{token}"' in form, (path, form[:80])
        assert "onchange=" not in html and "onsubmit=" not in html  # no inline scripts
