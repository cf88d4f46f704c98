"""The web catalog on the real Elasticsearch (``metadata_store``) and a storage folder."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from em2q.dev import EXAMPLES_DIR
from em2q.setup_file import read_setup
from em2q.upload import upload_measurement
from em2q.web import create_app
from em2q.web.forms import setup_form_values  # noqa: F401  (the tests import it from here)
from em2q.web.server import serve_in_thread
from em2q_resources.connections import set_up_metadata_store
from em2q_resources.metadata import MetadataStore
from em2q_resources.settings import PROJECT_ROOT, Settings
from em2q_resources.storage import StorageResource
from tests.fixtures.dagster import materialize_measurement

EXAMPLE_SETUP = read_setup(PROJECT_ROOT / "examples" / "setup.yaml")
EXAMPLE_IMZML = EXAMPLES_DIR / "Example_Continuous.imzML"
EXAMPLE_IBD = EXAMPLES_DIR / "Example_Continuous.ibd"


def with_csrf(test_client: TestClient) -> TestClient:
    """A test client that sends the catalog's CSRF token like its pages do: the cookie from a
    first response, repeated in the ``X-CSRF-Token`` header of every request."""
    test_client.get("/static/em2q.css")
    test_client.headers["X-CSRF-Token"] = test_client.cookies["em2q_csrf"]
    return test_client


@pytest.fixture
def web_settings(metadata_store, elasticsearch_url, tmp_path) -> Settings:
    return Settings(
        elasticsearch_url=elasticsearch_url,
        index_prefix=metadata_store.prefix,
        storage=str(tmp_path / "storage"),
        cache_dir=tmp_path / "cache",
        spectra_chunks=3,
    )


@pytest.fixture
def storage(web_settings) -> StorageResource:
    return StorageResource.from_settings(web_settings)


@pytest.fixture
def client(web_settings, metadata_store, storage):
    app = create_app(web_settings, store=metadata_store, storage=storage)
    with TestClient(app) as test_client:
        yield with_csrf(test_client)


@pytest.fixture
def live_server(web_settings, metadata_store, storage) -> Iterator[str]:
    """The app on a fresh store and storage folder, served for a browser."""
    with serve_in_thread(create_app(web_settings, store=metadata_store, storage=storage)) as url:
        yield url


@pytest.fixture(scope="session")
def browser():
    """Debian's headless Chromium through its chromedriver (``make browser`` installs both)."""
    import shutil

    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    chromium, driver_path = shutil.which("chromium"), shutil.which("chromedriver")
    if not chromium or not driver_path:
        pytest.fail("chromium and chromedriver are needed: run `make browser`")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    # WebGL through the software renderer (SwiftShader): the spectra are WebGL plots, and
    # without it Plotly covers them with its "no WebGL" notice, which takes the mouse's drags
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                     "--window-size=1400,1000", "--disable-gpu", "--use-angle=swiftshader",
                     "--enable-unsafe-swiftshader"):  # fmt: skip
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(driver_path), options=options)
    driver.set_page_load_timeout(30)
    yield driver
    driver.quit()


@pytest.fixture(scope="session")
def processed(elasticsearch_url, tmp_path_factory):
    """The example measurement uploaded and processed (the standard workflow in process, once
    per session): ``(settings, store, storage, measurement id)``."""
    root = tmp_path_factory.mktemp("web-processed")
    settings = Settings(
        elasticsearch_url=elasticsearch_url,
        index_prefix=f"test-web-{uuid.uuid4().hex[:8]}",
        storage=str(root / "storage"),
        cache_dir=root / "cache",
        spectra_chunks=2,
    )
    store = MetadataStore.connect(elasticsearch_url, index_prefix=settings.index_prefix)
    set_up_metadata_store(store)
    storage = StorageResource.from_settings(settings)
    measurement = upload_measurement(
        EXAMPLE_IMZML, setup=EXAMPLE_SETUP, store=store, storage=storage, progress=False,
        measurement_id="processed-example",
    )  # fmt: skip
    results = materialize_measurement(settings, measurement.id)
    assert all(r.success for r in results), "the example measurement did not process"
    store.refresh()
    yield settings, store, storage, measurement.id
    store.drop_all()


@pytest.fixture(scope="session")
def processed_client(processed):
    settings, store, storage, _ = processed
    with TestClient(create_app(settings, store=store, storage=storage)) as test_client:
        yield with_csrf(test_client)


#: a parameter set whose results differ from the default's: a higher peak-picking bar (fewer
#: peaks per spectrum) and a lower QC bar for the median SNR (its threshold shows on the page)
STRICT_PEAKS = "strict-peaks"
STRICT_PEAKS_VALUES = {"peak_picking": {"snr_threshold": 10}, "qc": {"min_median_snr": 2}}


@pytest.fixture(scope="session")
def processed_two_sets(processed):
    """``processed``, its measurement also processed under :data:`STRICT_PEAKS`."""
    settings, store, _, measurement_id = processed
    store.save_parameter_set(STRICT_PEAKS, STRICT_PEAKS_VALUES, author="ada")
    results = materialize_measurement(settings, measurement_id, parameter_set=STRICT_PEAKS)
    assert all(r.success for r in results), "the example did not process under strict-peaks"
    store.refresh()
    return processed


#: the grids of the two small measurements processed beside the example (``three_processed``)
SMALL_GRIDS = {"small-2x2": (2, 2), "small-3x2": (3, 2)}


@pytest.fixture(scope="session")
def three_processed(processed, tmp_path_factory) -> list[str]:
    """The example and two small synthetic measurements of other sizes, all processed with the
    default set: their ids, the example first."""
    from em2q_msi.synthetic import write_imzml

    settings, store, storage, measurement_id = processed
    root = tmp_path_factory.mktemp("three")
    ids = [measurement_id]
    for seed, (name, (n_x, n_y)) in enumerate(SMALL_GRIDS.items(), start=11):
        imzml = write_imzml(root / name, n_x=n_x, n_y=n_y, seed=seed)
        upload_measurement(
            imzml, setup=EXAMPLE_SETUP, store=store, storage=storage, progress=False,
            measurement_id=name,
        )  # fmt: skip
        results = materialize_measurement(settings, name)
        assert results[0].success, f"{name} was not ingested"
        ids.append(name)
    store.refresh()
    return ids
