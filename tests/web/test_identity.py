"""Who the web catalog believes, and what it opens: identity headers only from the trusted
proxy, never a token together with a role header, file locations only in its own storage."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator

import httpx
import pytest
from fastapi.testclient import TestClient

from em2q.setup_file import measurement_from_setup
from em2q.web import create_app
from em2q.web.server import serve_in_thread
from em2q_resources.auth import TokensFile
from em2q_resources.metadata import load_schema
from em2q_resources.metadata.schema import to_document, utc_now
from tests.web.conftest import EXAMPLE_SETUP, with_csrf

S = load_schema()
JSON = {"Accept": "application/json"}
SPOOF = {"X-Forwarded-User": "mallory", "X-Forwarded-Role": "admin"}


def _register(store, measurement_id: str) -> None:
    store.create(
        measurement_from_setup(EXAMPLE_SETUP, id=measurement_id, uploaded_at=utc_now()),
        refresh=True,
    )


@pytest.fixture
def proxied(web_settings, metadata_store, storage, tmp_path):
    """Header mode behind a proxy at 10.0.0.5; API tokens from a hashed tokens file."""
    tokens = tmp_path / "tokens.yaml"
    _, token = TokensFile(tokens).add("tess", "technician")
    settings = web_settings.with_overrides(
        auth_mode="header", trusted_proxies=("10.0.0.5",), tokens_file=tokens
    )
    with TestClient(create_app(settings, store=metadata_store, storage=storage)) as client:
        yield with_csrf(client), token  # a page's own request: only the identity is forged


def test_identity_headers_from_a_plain_client_are_refused_and_nothing_is_deleted(
    proxied, metadata_store
):
    client, _ = proxied
    _register(metadata_store, "kept")
    answer = client.post("/measurements/kept/delete", headers={**SPOOF, **JSON})
    assert answer.status_code == 401
    assert "trusted reverse proxy" in answer.json()["message"]
    assert metadata_store.exists(S.Measurement, "kept")


def test_a_token_with_a_role_header_is_refused_and_nothing_is_saved(proxied, metadata_store):
    client, token = proxied
    headers = {"Authorization": f"Bearer {token}", "X-Forwarded-Role": "scientist", **JSON}
    values = {"name": "escalated", "value:qc.min_median_snr": "20"}
    answer = client.post("/parameter-sets", data=values, headers=headers)
    assert answer.status_code == 401 and "never both" in answer.json()["message"]
    assert metadata_store.parameter_sets("escalated") == []
    alone = client.post("/parameter-sets", data=values, headers={"Authorization": f"Bearer {token}", **JSON})  # fmt: skip
    assert alone.status_code == 403  # the token's own role: a technician


def test_x_forwarded_for_does_not_make_a_client_the_trusted_proxy(
    web_settings, metadata_store, storage
):
    _register(metadata_store, "kept-too")
    settings = web_settings.with_overrides(auth_mode="header", trusted_proxies=("10.0.0.5",))
    app = create_app(settings, store=metadata_store, storage=storage)
    with serve_in_thread(app) as url, httpx.Client(base_url=url) as client:
        client.get("/static/em2q.css")  # the CSRF cookie, as a page visit sets it
        csrf = {"X-CSRF-Token": client.cookies["em2q_csrf"]}
        headers = {**SPOOF, "X-Forwarded-For": "10.0.0.5", "X-Real-IP": "10.0.0.5", **JSON, **csrf}
        answer = client.post("/measurements/kept-too/delete", headers=headers)
    assert answer.status_code == 401
    assert metadata_store.exists(S.Measurement, "kept-too")


class _Recorder(http.server.BaseHTTPRequestHandler):
    hits: list[str] = []

    def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
        _Recorder.hits.append(self.path)
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b"<mzML/>")

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def internal_service() -> Iterator[str]:
    """An HTTP service only the server can reach, counting the requests it gets."""
    _Recorder.hits = []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Recorder)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    thread.join(timeout=10)


@pytest.mark.parametrize("where", ["internal", "file:///etc/passwd"])
def test_a_record_pointing_outside_storage_is_never_fetched_or_opened(
    client, metadata_store, internal_service, where
):
    """A record written before URIs were checked (straight into the index) is not followed."""
    uri = f"{internal_service}/internal/admin.imzML" if where == "internal" else where
    document = to_document(measurement_from_setup(EXAMPLE_SETUP, id="ssrf", uploaded_at=utc_now()))
    document["files"] = [
        {"role": "IMZML", "uri": uri, "size_bytes": 1, "checksum_type": "SHA256", "checksum": "0"}
    ]
    metadata_store.client.index(
        index=metadata_store.alias("Measurement"), id="ssrf", document=document, refresh=True
    )
    answers = [
        client.get("/measurements/ssrf"),
        client.get("/measurements/ssrf/tic.png"),
        client.get("/measurements/ssrf", params={"mz": "500.0"}),
    ]
    assert _Recorder.hits == []
    assert all(answer.status_code < 500 for answer in answers), [a.status_code for a in answers]
    assert "root:" not in "".join(answer.text for answer in answers)


@pytest.mark.parametrize(
    "path",
    ["/measurements/%2e%2e/delete", "/measurements/..%2Fmeasurements/delete",
     "/measurements/%EF%BC%8E%EF%BC%8E/delete", "/measurements/..%5Cmeasurements/delete"],
)  # fmt: skip
def test_deleting_a_traversal_id_from_the_web_removes_no_file(
    client, storage, metadata_store, path
):
    # a record with the id "..", as an unchecked Thrift service once stored it
    document = to_document(measurement_from_setup(EXAMPLE_SETUP, id="x", uploaded_at=utc_now()))
    metadata_store.client.index(
        index=metadata_store.alias("Measurement"), id="..", document={**document, "id": ".."},
        refresh=True,
    )  # fmt: skip
    for measurement in ("m1", "m2"):
        with storage.open(f"measurements/{measurement}/data.imzML", "wb") as handle:
            handle.write(b"x")
    before = storage.find("measurements")
    answer = client.post(path, headers=JSON, follow_redirects=False)
    assert answer.status_code in (400, 404), answer.text
    assert (
        storage.find("measurements")
        == before
        == [
            "measurements/m1/data.imzML",
            "measurements/m2/data.imzML",
        ]
    )
