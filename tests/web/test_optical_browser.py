"""The optical image page in a real headless Chromium: upload, three landmark clicks on the
optical image and on the TIC image, the fit with its residuals, the overlay's opacity slider
(screenshot in /tmp/em2q-shots/)."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image
from selenium.webdriver.common.by import By

from tests.web.test_browser import shot, wait
from tests.web.test_spatial_browser import click_at, spatial_server  # noqa: F401  (fixture)

#: the same places, as fractions of each image, clicked on both: a pure scaling between them
PLACES = [(0.2, 0.2), (0.8, 0.3), (0.3, 0.8)]


@pytest.fixture
def section_png(tmp_path):
    path = tmp_path / "section.png"
    pixels = np.zeros((90, 120, 3), np.uint8)
    pixels[..., 0] = np.linspace(0, 255, 120, dtype=np.uint8)
    Image.fromarray(pixels).save(path)
    return path


def test_an_optical_image_is_uploaded_registered_by_three_clicks_and_overlaid(
    spatial_server,  # noqa: F811
    browser,
    section_png,
):
    url, measurement_id = spatial_server
    browser.get(f"{url}/measurements/{measurement_id}/optical")
    browser.find_element(By.ID, "optical-file").send_keys(str(section_png))
    browser.find_element(By.CSS_SELECTOR, "#optical-upload button").click()
    # the session's measurement may have an optical image already (other tests): wait for ours
    wait(browser).until(lambda d: "120 × 90 px" in d.find_element(By.ID, "optical").text)
    image = browser.find_element(By.ID, "optical-image")
    wait(browser).until(lambda d: d.execute_script("return arguments[0].naturalWidth", image))
    tic = browser.find_element(By.ID, "optical-tic")
    for fx, fy in PLACES:
        click_at(browser, image, fx, fy)
        click_at(browser, tic, fx, fy)
    rows = browser.find_elements(By.CSS_SELECTOR, "#landmarks tbody tr")
    assert len(rows) == 3
    browser.find_element(By.ID, "landmarks-fit").click()
    wait(browser).until(
        lambda d: "Registered: RMS residual" in d.find_element(By.ID, "registration").text
    )
    residuals = [
        float(r.find_elements(By.TAG_NAME, "td")[3].text)
        for r in browser.find_elements(By.CSS_SELECTOR, "#landmarks tbody tr")
    ]
    assert len(residuals) == 3 and max(residuals) < 0.1  # one scaling fits all three clicks
    layer = browser.find_element(By.ID, "overlay-layer-img")
    wait(browser).until(lambda d: d.execute_script("return arguments[0].naturalWidth", layer))
    assert browser.execute_script("return arguments[0].naturalWidth", layer) == 120
    slider = browser.find_element(By.ID, "overlay-opacity")
    browser.execute_script(
        "arguments[0].value = '0.8'; arguments[0].dispatchEvent(new Event('input'))", slider
    )
    assert layer.value_of_css_property("opacity") == "0.8"
    shot(browser, "11-optical-registered-and-overlaid")
    # a rectangle drawn on the optical image is saved as a ROI in MSI pixels (same fractions)
    section = browser.find_element(By.ID, "optical")
    nx, ny = (int(section.get_attribute(f"data-{a}")) for a in ("nx", "ny"))
    browser.find_element(By.CSS_SELECTOR, "#optical-roi-shape option[value=rectangle]").click()
    draw = browser.find_element(By.ID, "optical-roi-svg")
    click_at(browser, draw, 0.1, 0.1)
    click_at(browser, draw, 0.6, 0.6)
    browser.find_element(By.ID, "optical-roi-name").send_keys("he-box")
    browser.find_element(By.CSS_SELECTOR, "#optical-roi-form button[type=submit]").click()
    wait(browser).until(
        lambda d: "Saved ROI he-box" in d.find_element(By.ID, "optical-roi-saved").text
    )
    rois = browser.execute_async_script(
        "const done = arguments[arguments.length - 1];"
        f"fetch('/api/measurements/{measurement_id}/rois').then(r => r.json()).then(done);"
    )
    [box] = [r for r in rois if r["name"] == "he-box"]
    corners = np.asarray(box["geometry"]["coordinates"][0], float)
    np.testing.assert_allclose(corners.min(axis=0), [0.1 * nx, 0.1 * ny], atol=0.05 * max(nx, ny))
    np.testing.assert_allclose(corners.max(axis=0), [0.6 * nx, 0.6 * ny], atol=0.05 * max(nx, ny))
    assert box["pixel_count"] > 0


def test_two_landmarks_are_refused_on_the_page_with_the_reason(
    spatial_server,  # noqa: F811
    browser,
    processed_client,
    section_png,
):
    url, measurement_id = spatial_server
    uploaded = processed_client.post(
        f"/api/measurements/{measurement_id}/optical",
        files={"image": ("section.png", section_png.read_bytes(), "image/png")},
    )
    assert uploaded.status_code == 201, uploaded.text
    browser.get(f"{url}/measurements/{measurement_id}/optical")
    image = wait(browser).until(lambda d: d.find_element(By.ID, "optical-image"))
    tic = browser.find_element(By.ID, "optical-tic")
    for fx, fy in PLACES[:2]:
        click_at(browser, image, fx, fy)
        click_at(browser, tic, fx, fy)
    browser.find_element(By.ID, "landmarks-fit").click()
    wait(browser).until(
        lambda d: "at least 3 landmark pairs, got 2"
        in d.find_element(By.ID, "landmarks-problem").text
    )
