"""The web catalog over HTTP (FastAPI's TestClient) on the real Elasticsearch and storage."""

from __future__ import annotations

import base64
import json
import re

import numpy as np
import pytest
from fastapi.testclient import TestClient

from em2q.setup_file import measurement_from_setup
from em2q.upload import file_sha256
from em2q.web import create_app
from em2q_resources.metadata import load_schema
from em2q_resources.metadata.schema import utc_now
from tests.web.conftest import (
    EXAMPLE_IBD,
    EXAMPLE_IMZML,
    EXAMPLE_SETUP,
    SMALL_GRIDS,
    STRICT_PEAKS,
    setup_form_values,
    with_csrf,
)

S = load_schema()
JSON = {"Accept": "application/json"}


def post_upload(client, values, imzml=EXAMPLE_IMZML, ibd=EXAMPLE_IBD, headers=None):
    with imzml.open("rb") as imzml_file, ibd.open("rb") as ibd_file:
        return client.post(
            "/upload",
            data=values,
            files={"imzml": (imzml.name, imzml_file), "ibd": (ibd.name, ibd_file)},
            headers=headers or {},
            follow_redirects=False,
        )


def plotly_array(value) -> np.ndarray:
    """A data array of a plotly.py figure (plain list or base64 ``bdata`` with dtype/shape)."""
    if isinstance(value, dict):
        flat = np.frombuffer(base64.b64decode(value["bdata"]), dtype=value["dtype"])
        shape = value.get("shape")
        return flat.reshape([int(n) for n in str(shape).split(",")]) if shape else flat
    return np.asarray(value, dtype=float)


def catalog_ids(html: str) -> list[str]:
    return re.findall(r'<tr data-id="([^"]+)"', html)


def test_upload_form_is_generated_from_the_schema_with_required_marks_choices_and_units(client):
    html = client.get("/upload").text
    polarity = re.search(r'<select id="f-settings.polarity".*?</select>', html, re.S).group(0)
    assert re.findall(r'<option value="(\w+)"', polarity) == ["POSITIVE", "NEGATIVE", "MIXED"]
    pixel = re.search(r'<label for="f-settings.pixel_size_x_um">.*?data-error-for', html, re.S)
    assert '<span class="unit">µm</span>' in pixel.group(0) and 'class="req"' not in pixel.group(0)
    title = re.search(r'<label for="f-title">.*?</label>', html, re.S).group(0)
    assert 'class="req"' in title
    assert 'name="sample.matrix_application"' in html and 'name="status"' not in html


def test_setup_problems_are_named_next_to_their_fields_and_nothing_is_registered(client):
    values = setup_form_values(EXAMPLE_SETUP)
    values["settings.polarity"] = ""
    values["settings.resolving_power"] = "very high"
    del values["sample.organism"]  # the sample is described, so its organism is required
    answer = post_upload(client, values, headers=JSON)
    assert answer.status_code == 422
    errors = answer.json()["errors"]
    assert set(errors) == {"settings.polarity", "settings.resolving_power", "sample.organism"}
    assert "very high" in errors["settings.resolving_power"]
    assert catalog_ids(client.get("/catalog").text) == []


def test_file_problems_are_shown_beside_the_file_inputs_without_javascript(client, tmp_path):
    truncated = tmp_path / "Example_Continuous.ibd"
    truncated.write_bytes(EXAMPLE_IBD.read_bytes()[:5000])
    answer = post_upload(client, setup_form_values(EXAMPLE_SETUP), ibd=truncated)
    assert answer.status_code == 422
    slot = re.search(r'data-error-for="ibd"[^>]*>([^<]*)<', answer.text).group(1)
    assert "ibd_truncated" in slot or "offset_out_of_range" in slot
    assert catalog_ids(client.get("/catalog").text) == []


def test_an_upload_is_registered_and_its_page_reports_the_status(client, metadata_store):
    answer = post_upload(client, setup_form_values(EXAMPLE_SETUP))
    assert answer.status_code == 303
    measurement_id = answer.headers["location"].rsplit("/", 1)[1]
    page = client.get(answer.headers["location"]).text
    assert 'id="status"' in page and ">UPLOADED<" in page
    assert "Example_Continuous.ibd" in page
    stored = metadata_store.get(S.Measurement, measurement_id).doc
    assert {f.checksum for f in stored.files} == {
        file_sha256(EXAMPLE_IMZML),
        file_sha256(EXAMPLE_IBD),
    }
    status = client.get(f"/api/measurements/{measurement_id}/status").json()
    assert (status["id"], status["status"], status["final"]) == (measurement_id, "UPLOADED", False)
    assert status["reason"] == "files committed to storage"
    assert (status["detail"]["kind"], status["detail"]["actor"]) == ("uploaded", "upload")
    assert status["next"] == "wait: the platform is processing it"
    again = post_upload(client, setup_form_values(EXAMPLE_SETUP), headers=JSON)
    assert again.status_code == 422
    assert measurement_id in again.json()["errors"]["imzml"]


def test_a_request_that_is_not_the_upload_form_is_refused(client):
    plain = client.post("/upload", data={"title": "x"}, headers=JSON)
    assert plain.status_code == 400 and "multipart" in plain.json()["message"]
    with EXAMPLE_IBD.open("rb") as extra:
        other = client.post("/upload", files={"other": ("x.bin", extra)}, headers=JSON)
    assert other.status_code == 400 and "'other'" in other.json()["message"]


def _register(store, measurement_id, **changes):
    setup = json.loads(json.dumps(EXAMPLE_SETUP))
    for path, value in changes.items():
        *parents, name = path.split(".")
        target = setup
        for part in parents:
            target = target[part]
        target[name] = value
    store.create(measurement_from_setup(setup, id=measurement_id, uploaded_at=utc_now()))


def test_catalog_searches_filters_sorts_and_pages_and_values_link_to_more(client, metadata_store):
    _register(
        metadata_store,
        "mouse-brain",
        title="Mouse brain lipids",
        **{"sample.organism": "Mus musculus"},
    )
    _register(metadata_store, "mouse-kidney", title="Mouse kidney", **{"sample.organism": "Mus musculus", "settings.polarity": "NEGATIVE"})  # fmt: skip
    _register(
        metadata_store, "rat-liver", title="Rat liver", **{"sample.organism": "Rattus norvegicus"}
    )
    metadata_store.refresh()
    mouse = catalog_ids(client.get("/catalog", params={"q": "mouse"}).text)
    assert sorted(mouse) == ["mouse-brain", "mouse-kidney"]
    negative = client.get("/catalog", params={"f": "settings.polarity=NEGATIVE"}).text
    assert catalog_ids(negative) == ["mouse-kidney"]
    by_title = client.get("/catalog", params={"sort": "-title"}).text
    assert catalog_ids(by_title) == ["rat-liver", "mouse-kidney", "mouse-brain"]
    first = client.get("/catalog", params={"page_size": 2}).text
    assert catalog_ids(first) == ["mouse-brain", "mouse-kidney"]
    following = re.search(r'id="next-page" href="([^"]+)"', first).group(1).replace("&amp;", "&")
    assert catalog_ids(client.get(following).text) == ["rat-liver"]
    organism_facet = re.search(r'data-facet="sample.organism">.*?</section>', first, re.S).group(0)
    assert re.search(r"mus musculus</a>\s*<span class=\"count\">2<", organism_facet)
    without_files = client.get("/measurements/rat-liver", params={"mz": "300"})
    assert without_files.status_code == 200 and "no ion images" in without_files.text
    page = client.get("/measurements/rat-liver").text
    link = re.search(r'<a href="([^"]+)">POSITIVE</a>', page).group(1)
    assert catalog_ids(client.get(link.replace("&amp;", "&")).text) == ["mouse-brain", "rat-liver"]


def test_measurement_page_shows_qc_numbers_tic_spectrum_ion_images_and_runs(
    processed_client, processed
):
    measurement_id = processed[3]
    page = processed_client.get(
        f"/measurements/{measurement_id}", params={"mz": "329", "ppm": 300}
    ).text
    assert 'id="verdict"' in page and "median snr" in page
    assert "grid pixels not acquired" in page and 'id="tic-legend"' in page
    figure = json.loads(re.search(r'id="mean-spectrum-figure">(.*?)</script>', page, re.S).group(1))
    assert (
        figure["data"][0]["type"] == "scattergl"
        and plotly_array(figure["data"][0]["x"]).size > 1000
    )
    images = json.loads(re.search(r'id="ion-images-figure">(.*?)</script>', page, re.S).group(1))
    assert images["data"][0]["type"] == "heatmap" and plotly_array(images["data"][0]["z"]).max() > 0
    assert "ion_images" in page and "/runs/" in page and "lineage" in page
    png = processed_client.get(f"/measurements/{measurement_id}/tic.png")
    assert png.headers["content-type"] == "image/png" and png.content[:4] == b"\x89PNG"


def compare_row(page: str, header: str) -> list[str]:
    """The cells of one row of the compare page's QC table, as text."""
    row = re.search(rf"<tr><th>{re.escape(header)}</th>(.*?)</tr>", page, re.S).group(1)
    cells = re.findall(r"<td[^>]*>(.*?)</td>", row, re.S)
    return [" ".join(re.sub(r"<[^>]+>", " ", c).split()) for c in cells]


def compare_figure(page: str, name: str) -> dict:
    return json.loads(re.search(rf'id="{name}-figure">(.*?)</script>', page, re.S).group(1))


def test_compare_one_measurement_under_two_sets_shows_where_their_results_differ(
    processed_client, processed_two_sets
):
    measurement_id = processed_two_sets[3]
    page = processed_client.get(
        "/compare",
        params={"m": measurement_id, "p": ["default", STRICT_PEAKS], "mz": "329", "ppm": 300},
    ).text
    header = re.search(r'<table class="plain" id="compare-qc">\s*<thead>(.*?)</thead>', page, re.S)
    columns = re.findall(r'<a href="/measurements/([^"?]+)\?p=([^"]+)"', header.group(1))
    assert columns == [(measurement_id, "default@v1"), (measurement_id, f"{STRICT_PEAKS}@v1")]
    # each column shows its own set's results: the QC bar it was judged by …
    default_snr, strict_snr = compare_row(page, "median snr")
    assert "&gt;= 10.0" in default_snr and "&gt;= 2.0" in strict_snr
    # … and its own peaks: SNR ≥ 10 keeps fewer per spectrum than the default SNR ≥ 3
    default_peaks, strict_peaks = map(float, compare_row(page, "median peaks per spectrum"))
    assert 0 < strict_peaks < default_peaks
    spectra = compare_figure(page, "compare-spectra")
    assert [trace["name"] for trace in spectra["data"]] == [
        f"{measurement_id} · default@v1",
        f"{measurement_id} · {STRICT_PEAKS}@v1",
    ]
    images = compare_figure(page, "compare-images")
    assert len(images["data"]) == 2 and {d["coloraxis"] for d in images["data"]} == {"coloraxis"}


def test_compare_three_measurements_puts_each_in_its_own_column(processed_client, three_processed):
    page = processed_client.get("/compare", params={"m": three_processed}).text
    header = re.search(r'<table class="plain" id="compare-qc">\s*<thead>(.*?)</thead>', page, re.S)
    columns = re.findall(r'<a href="/measurements/([^"?]+)\?p=([^"]+)"', header.group(1))
    assert columns == [(m, "default@v1") for m in three_processed]
    assert compare_row(page, "spectra") == ["9", *(str(x * y) for x, y in SMALL_GRIDS.values())]
    spectra = compare_figure(page, "compare-spectra")
    assert [trace["name"] for trace in spectra["data"]] == [
        f"{m} · default@v1" for m in three_processed
    ]


@pytest.fixture
def header_auth_client(web_settings, metadata_store, storage):
    settings = web_settings.with_overrides(auth_mode="header", proxy_secret=PROXY_SECRET)
    with TestClient(create_app(settings, store=metadata_store, storage=storage)) as test_client:
        yield with_csrf(test_client)


PROXY_SECRET = "proxy-shared-secret"


def as_role(role: str) -> dict[str, str]:
    """What the authenticating proxy forwards: the identity and the secret that proves it."""
    return {
        "X-Forwarded-User": f"a-{role}",
        "X-Forwarded-Role": role,
        "X-EM2Q-Proxy-Secret": PROXY_SECRET,
    }


def test_forbidden_actions_are_refused_with_a_clear_message(header_auth_client, metadata_store):
    client = header_auth_client
    _register(metadata_store, "kept")
    assert client.get("/catalog").status_code == 401
    values = {"name": "mine", "value:qc.min_median_snr": "20"}
    refused = client.post("/parameter-sets", data=values, headers=as_role("technician"))
    assert refused.status_code == 403
    assert "a-technician has the technician role" in refused.text and "scientist" in refused.text
    deleting = client.post("/measurements/kept/delete", headers=as_role("scientist"), follow_redirects=False)  # fmt: skip
    assert deleting.status_code == 403 and "admin" in deleting.text
    api = client.post("/measurements/kept/delete", headers={**as_role("technician"), **JSON})
    assert api.status_code == 403 and "admin" in api.json()["message"]
    assert metadata_store.exists(S.Measurement, "kept")
    page = client.get("/measurements/kept", headers=as_role("technician")).text
    assert "No workflow is published for your role yet" in page and 'id="delete"' not in page
    start = client.post("/measurements/kept/runs", data={"workflow": "standard"}, headers=as_role("technician"))  # fmt: skip
    assert start.status_code == 403 and "not published" in start.text
    saved = client.post("/parameter-sets", data=values, headers=as_role("scientist"), follow_redirects=False)  # fmt: skip
    assert saved.status_code == 303 and saved.headers["location"] == "/parameter-sets/mine@v1"
    removed = client.post("/measurements/kept/delete", headers=as_role("admin"), follow_redirects=False)  # fmt: skip
    assert removed.status_code == 303 and not metadata_store.exists(S.Measurement, "kept")


def test_a_parameter_value_the_processing_core_refuses_is_named(client):
    answer = client.post(
        "/parameter-sets", data={"name": "bad", "value:binning.min_frequency": "2"}
    )
    assert answer.status_code == 422
    slot = re.search(r'data-error-for="binning.min_frequency">([^<]*)<', answer.text).group(1)
    assert slot.strip(), "the out-of-range value should be named next to its input"


def test_em2q_web_serves_the_catalog_on_the_configured_backends(web_settings, metadata_store):
    import os
    import subprocess
    import sys
    import time

    import httpx

    from em2q.web.server import free_port

    _register(metadata_store, "served")
    metadata_store.refresh()
    port = free_port()
    env = {
        **os.environ,
        "EM2Q_ELASTICSEARCH_URL": web_settings.elasticsearch_url,
        "EM2Q_INDEX_PREFIX": web_settings.index_prefix,
        "EM2Q_STORAGE": web_settings.storage,
    }
    command = [sys.executable, "-m", "em2q.cli", "web", "--port", str(port)]
    process = subprocess.Popen(
        command, env=env, stderr=subprocess.PIPE, text=True, encoding="utf-8"
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                answer = httpx.get(f"http://127.0.0.1:{port}/catalog", timeout=5)
                break
            except httpx.TransportError:
                assert process.poll() is None, process.stderr.read()
                assert time.monotonic() < deadline, "em2q web did not answer"
                time.sleep(0.2)
        assert answer.status_code == 200 and catalog_ids(answer.text) == ["served"]
    finally:
        process.terminate()
        process.wait(timeout=20)
