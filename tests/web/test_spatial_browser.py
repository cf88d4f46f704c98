"""Drawing a ROI on the TIC image in a real headless Chromium, its mean spectrum overlaid, and
the segment map beside it (screenshots in /tmp/em2q-shots/)."""

from __future__ import annotations

import pytest
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By
from selenium.webdriver.support.select import Select

from em2q.web import create_app
from em2q.web.server import serve_in_thread
from tests.web.test_browser import shot, wait


@pytest.fixture(scope="module")
def spatial_server(processed):
    settings, store, storage, measurement_id = processed
    with serve_in_thread(create_app(settings, store=store, storage=storage)) as url:
        yield url, measurement_id


def click_at(driver, element, fx: float, fy: float) -> None:
    """Click at a fraction (fx, fy) of the element's box."""
    box = element.rect
    ActionChains(driver).move_to_element_with_offset(
        element, int(box["width"] * (fx - 0.5)), int(box["height"] * (fy - 0.5))
    ).click().perform()


def test_a_rectangle_drawn_on_the_tic_is_saved_and_its_spectrum_overlaid(spatial_server, browser):
    url, measurement_id = spatial_server
    browser.get(f"{url}/measurements/{measurement_id}")
    svg = browser.find_element(By.ID, "roi-svg")
    browser.execute_script("arguments[0].scrollIntoView()", svg)
    wait(browser).until(lambda d: d.find_elements(By.CSS_SELECTOR, "#segment-list li"))
    Select(browser.find_element(By.ID, "roi-shape")).select_by_value("rectangle")
    click_at(browser, svg, 0.02, 0.02)
    click_at(browser, svg, 0.64, 0.64)  # 3×3 pixels: the upper-left 2×2
    browser.find_element(By.ID, "roi-name").send_keys("browser-box")
    browser.find_element(By.ID, "roi-save").click()
    link = wait(browser).until(
        lambda d: d.find_element(By.CSS_SELECTOR, '#roi-list a[data-roi="browser-box"]')
    )
    assert "4 px" in link.find_element(By.XPATH, "..").text
    link.click()
    traces = "return document.getElementById('mean-spectrum').data.map((t) => t.name || '')"
    wait(browser).until(lambda d: "ROI browser-box (4 px)" in d.execute_script(traces))
    assert browser.execute_script("return document.getElementById('segment-map').naturalWidth") == 3
    shot(browser, "10-roi-drawn-and-segment-map")
    browser.find_element(By.CSS_SELECTOR, '#roi-list button[data-delete="browser-box"]').click()
    wait(browser).until(
        lambda d: not d.find_elements(By.CSS_SELECTOR, '#roi-list a[data-roi="browser-box"]')
    )
