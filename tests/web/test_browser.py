"""The web catalog in a real headless Chromium (Debian's chromium + chromedriver, Selenium).

Screenshots of every step land in /tmp/em2q-shots/ (look at them after a change to a page).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as ec
from selenium.webdriver.support.select import Select
from selenium.webdriver.support.ui import WebDriverWait

from em2q.dagster_api import PARAMETER_SET_TAG, DagsterAPI
from em2q.dev import EXAMPLES_DIR
from em2q.upload import upload_measurement
from em2q.web import create_app
from em2q.web.server import serve_in_thread
from em2q_msi.synthetic import write_imzml
from em2q_resources.storage import StorageResource
from tests.web.conftest import (
    EXAMPLE_IBD,
    EXAMPLE_IMZML,
    EXAMPLE_SETUP,
    STRICT_PEAKS,
    materialize_measurement,
)

SHOTS = Path("/tmp/em2q-shots")


def shot(driver, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    driver.save_screenshot(str(SHOTS / f"{name}.png"))


def wait(driver, seconds: float = 20) -> WebDriverWait:
    return WebDriverWait(driver, seconds)


def fill_setup(driver, setup: dict, prefix: str = "") -> None:
    """Type a setup document into the generated form, field by field."""
    for key, value in setup.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict):
            fill_setup(driver, value, f"{path}.")
            continue
        element = driver.find_element(By.ID, f"f-{path}")
        if element.tag_name == "select":
            Select(element).select_by_value(str(value))
        elif element.get_attribute("type") == "date":
            continue  # typed dates depend on the browser's locale; the field is optional
        else:
            element.clear()
            element.send_keys(", ".join(value) if isinstance(value, list) else str(value))


def error_beside(driver, path: str) -> str:
    return driver.find_element(By.CSS_SELECTOR, f'[data-error-for="{path}"]').text


def test_technician_uploads_sees_errors_finds_it_in_the_catalog_and_follows_its_status(
    live_server, browser, web_settings
):
    browser.get(f"{live_server}/upload")
    fill_setup(browser, {**EXAMPLE_SETUP, "settings": {**EXAMPLE_SETUP["settings"]}})
    Select(browser.find_element(By.ID, "f-settings.polarity")).select_by_value("")
    browser.find_element(By.ID, "f-imzml").send_keys(str(EXAMPLE_IMZML))
    other_ibd = EXAMPLES_DIR / "Example_Processed.ibd"  # another measurement's .ibd: UUID differs
    browser.find_element(By.ID, "f-ibd").send_keys(str(other_ibd))
    browser.find_element(By.ID, "upload-submit").click()
    wait(browser).until(lambda d: error_beside(d, "settings.polarity"))
    assert "required" in error_beside(browser, "settings.polarity")
    wait(browser).until(lambda d: error_beside(d, "ibd"))
    assert "uuid" in error_beside(browser, "ibd").lower()
    assert browser.find_element(By.ID, "upload-progress").get_attribute("value") == "100"
    shot(browser, "01-upload-refused")

    Select(browser.find_element(By.ID, "f-settings.polarity")).select_by_value("POSITIVE")
    browser.find_element(By.ID, "f-ibd").send_keys(str(EXAMPLE_IBD))
    browser.find_element(By.ID, "upload-submit").click()
    wait(browser).until(ec.url_contains("/measurements/"))
    measurement_id = browser.current_url.rsplit("/", 1)[1]
    assert browser.find_element(By.ID, "status").text == "UPLOADED"
    shot(browser, "02-uploaded")

    browser.get(f"{live_server}/catalog")
    search = browser.find_element(By.CSS_SELECTOR, "#search input[name=q]")
    search.send_keys("example 3x3")
    search.submit()
    wait(browser).until(ec.url_contains("q=example"))
    rows = browser.find_elements(By.CSS_SELECTOR, "#hits tbody tr[data-id]")
    assert [r.get_attribute("data-id") for r in rows] == [measurement_id]
    facet = browser.find_element(By.CSS_SELECTOR, '[data-facet="settings.polarity"] a')
    facet.click()
    wait(browser).until(ec.url_contains("settings.polarity"))
    shot(browser, "03-catalog")
    browser.find_element(By.CSS_SELECTOR, f'tr[data-id="{measurement_id}"] a.title').click()
    wait(browser).until(ec.url_contains(f"/measurements/{measurement_id}"))
    assert "Example_Continuous.imzML" in browser.find_element(By.ID, "files").text

    # the page follows the status while the standard workflow runs, then shows the results
    assert browser.find_element(By.ID, "status").text == "UPLOADED"
    assert all(r.success for r in materialize_measurement(web_settings, measurement_id))
    wait(browser, 30).until(lambda d: d.find_elements(By.ID, "tic-image"))
    # the example passes the default QC: the page follows the status to READY
    wait(browser, 30).until(lambda d: d.find_element(By.ID, "status").text == "READY")


@pytest.fixture(scope="module")
def processed_server(processed_two_sets):
    settings, store, storage, measurement_id = processed_two_sets
    with serve_in_thread(create_app(settings, store=store, storage=storage)) as url:
        yield url, measurement_id


def test_results_render_tic_image_zoomable_spectrum_ion_images_and_compare(
    processed_server, browser
):
    url, measurement_id = processed_server
    browser.get(f"{url}/measurements/{measurement_id}?mz=329,152.9&ppm=300")
    tic = browser.find_element(By.ID, "tic-image")
    wait(browser).until(lambda d: d.execute_script("return arguments[0].complete", tic))
    assert browser.execute_script("return arguments[0].naturalWidth", tic) > 0
    wait(browser).until(lambda d: d.find_elements(By.CSS_SELECTOR, "#mean-spectrum svg.main-svg"))
    wait(browser).until(lambda d: d.find_elements(By.CSS_SELECTOR, "#ion-images .heatmaplayer"))
    assert len(browser.find_elements(By.CSS_SELECTOR, "#ion-images .hm")) == 2
    assert browser.find_element(By.ID, "verdict").text == "good enough to analyse"  # the example
    shot(browser, "04-measurement-results")
    browser.execute_script("document.getElementById('ion-images-section').scrollIntoView()")
    shot(browser, "05-measurement-ion-images-and-runs")

    drag_to_zoom(browser, "mean-spectrum")

    browser.get(f"{url}/compare?m={measurement_id}&p=default&p={STRICT_PEAKS}&mz=329&ppm=300")
    wait(browser).until(lambda d: d.find_elements(By.CSS_SELECTOR, "#compare-spectra svg.main-svg"))
    wait(browser).until(lambda d: d.find_elements(By.CSS_SELECTOR, "#compare-images .hm"))
    legend = [
        e.text for e in browser.find_elements(By.CSS_SELECTOR, "#compare-spectra .legendtext")
    ]
    assert legend == [f"{measurement_id} · default@v1", f"{measurement_id} · {STRICT_PEAKS}@v1"]
    assert len(browser.find_elements(By.CSS_SELECTOR, "#compare-images .hm")) == 2
    shot(browser, "06-compare")
    browser.execute_script("document.getElementById('compare-spectra').scrollIntoView()")
    shot(browser, "06b-compare-spectra-and-images")


def x_range(browser, plot_id: str) -> list[float]:
    return browser.execute_script(
        "return document.getElementById(arguments[0])._fullLayout.xaxis.range.slice()", plot_id
    )


def drag_to_zoom(browser, plot_id: str) -> None:
    """Drag the mouse across the middle of a plot, from 30 % to 60 % of its width: the x axis
    must then show the dragged m/z region (Plotly's box zoom), not the whole spectrum."""
    # Headless Chromium here gets no WebGL context: the page must then draw the spectrum as
    # SVG, not Plotly's "no WebGL" notice (which would also take the mouse)
    wait(browser).until(
        lambda d: d.execute_script(
            "return document.getElementById(arguments[0]).querySelector('.no-webgl') === null",
            plot_id,
        ),
        "the plot shows Plotly's 'WebGL is not supported' notice instead of the spectrum",
    )
    area = browser.find_element(By.CSS_SELECTOR, f"#{plot_id} .nsewdrag")
    browser.execute_script("arguments[0].scrollIntoView({block: 'center'})", area)
    width = area.size["width"]
    covered_by = browser.execute_script(
        "const r = arguments[0].getBoundingClientRect();"
        "return document.elementFromPoint(r.left + 0.3 * r.width, r.top + r.height / 2)"
        ".getAttribute('class');",
        area,
    )
    assert covered_by and "nsewdrag" in covered_by, f"the plot is covered by {covered_by!r}"
    start_px, stop_px = round(0.3 * width), round(0.6 * width)
    center_px = width // 2  # Selenium's offsets count from the element's centre
    before = x_range(browser, plot_id)
    # the m/z under the two mouse positions, in the axis's own pixel → data conversion
    expected = browser.execute_script(
        "const xa = document.getElementById(arguments[0])._fullLayout.xaxis;"
        "return [xa.p2l(arguments[1]), xa.p2l(arguments[2])];",
        plot_id,
        start_px,
        stop_px,
    )
    per_px = (before[1] - before[0]) / width
    steps = 10
    chain = ActionChains(browser).move_to_element_with_offset(area, start_px - center_px, 0)
    chain.click_and_hold()
    for _ in range(steps):
        chain.move_by_offset((stop_px - start_px) // steps, 0)
    chain.move_to_element_with_offset(area, stop_px - center_px, 0).release().perform()
    wait(browser).until(lambda d: x_range(d, plot_id) != before)
    after = x_range(browser, plot_id)
    shot(browser, f"05b-{plot_id}-zoomed")
    assert before[0] < after[0] < after[1] < before[1]  # zoomed in, inside the old range
    assert after == pytest.approx(expected, abs=3 * per_px)  # onto the dragged region


def test_a_workflow_started_from_the_page_is_a_dagster_backfill(
    dagster_platform, browser, tmp_path
):
    settings, store = dagster_platform.settings, dagster_platform.store
    storage = StorageResource.from_settings(settings)
    # a file of its own: the session's platform may hold the example files already
    imzml = write_imzml(tmp_path / "run", n_x=3, n_y=3, seed=int.from_bytes(os.urandom(4)))
    measurement = upload_measurement(
        imzml, setup=EXAMPLE_SETUP, store=store, storage=storage, progress=False,
        measurement_id=f"web-run-{id(browser) % 10_000}",
    )  # fmt: skip
    with serve_in_thread(create_app(settings, store=store, storage=storage)) as url:
        browser.get(f"{url}/measurements/{measurement.id}")
        Select(browser.find_element(By.ID, "start-workflow")).select_by_value("qc")
        browser.find_element(By.ID, "start-run").click()
        wait(browser, 60).until(lambda d: d.find_elements(By.ID, "launched"))
        backfill_id = browser.find_element(By.ID, "launched").get_attribute("data-launch")
        link = browser.find_element(By.CSS_SELECTOR, "#launched a").get_attribute("href")
        shot(browser, "07-workflow-started")
    assert link.startswith(dagster_platform.url) and backfill_id in link
    with DagsterAPI(dagster_platform.url) as api:
        status = api.run_status(backfill_id)
    assert status.kind == "backfill"
    assert status.tags[PARAMETER_SET_TAG] == "default@v1"
    assert status.tags["em2q/workflow"] == "qc"


def test_a_technician_is_refused_saving_a_parameter_set_with_the_role_it_needs(
    web_settings, metadata_store, storage, browser
):
    technician = web_settings.with_overrides(local_user="tess", local_role="technician")
    with serve_in_thread(create_app(technician, store=metadata_store, storage=storage)) as url:
        browser.get(f"{url}/parameter-sets/new?from=default")
        name = browser.find_element(By.ID, "ps-name")
        name.clear()
        name.send_keys("stricter")
        snr = browser.find_element(By.ID, "v-qc.min_median_snr")
        snr.clear()
        snr.send_keys("20")
        shot(browser, "08-parameter-set-editor")
        browser.find_element(By.ID, "save-parameter-set").click()
        wait(browser).until(lambda d: d.find_elements(By.ID, "refusal"))
        message = browser.find_element(By.CSS_SELECTOR, "#refusal .message").text
        shot(browser, "09-refused")
    assert "tess has the technician role" in message and "scientist" in message
    assert metadata_store.parameter_sets("stricter") == []
