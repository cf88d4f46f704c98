"""The study comparison page in a real headless Chromium: the volcano plot, the PCA and the
feature table render; clicking a feature shows every member's ion image of it (screenshots in
/tmp/em2q-shots/)."""

from __future__ import annotations

import dagster as dg
from selenium.webdriver.common.by import By

from em2q_assets.definitions import build_definitions
from em2q_resources import studies
from tests.em2q_assets.study_data import feed_member, small_study
from tests.web.test_browser import shot, wait

STUDY_ASSETS = ["study_reference_peaks", "aligned_features", "study_comparison"]


def test_the_study_page_renders_its_plots_and_a_clicked_feature_shows_its_ion_images(
    live_server, browser, metadata_store, storage, web_settings
):
    synthetic = small_study()
    members = [feed_member(metadata_store, storage, synthetic, i) for i in range(len(synthetic))]
    studies.create(metadata_store, "browser-st", title="Lesions", design=["sample.condition"],
                   members=members)  # fmt: skip
    defs = build_definitions(web_settings)
    instance = dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions("study", ["browser-st"])
    dg.materialize(list(defs.assets), selection=STUDY_ASSETS, partition_key="browser-st",
                   instance=instance, resources=defs.resources)  # fmt: skip

    browser.get(f"{live_server}/studies/browser-st")
    volcano = browser.find_element(By.CSS_SELECTOR, "svg.volcano")
    assert volcano.is_displayed() and volcano.size["width"] > 100
    assert len(volcano.find_elements(By.CSS_SELECTOR, "circle.sig")) > 0
    pca = browser.find_element(By.CSS_SELECTOR, "svg.pca")
    assert len(pca.find_elements(By.TAG_NAME, "circle")) == len(members)
    rows = browser.find_elements(By.CSS_SELECTOR, "#study-features tbody tr")
    assert len(rows) > 10
    shot(browser, "study-page")

    link = rows[0].find_element(By.CSS_SELECTOR, "td a")
    mz = link.text
    link.click()
    wait(browser).until(lambda d: d.find_elements(By.CSS_SELECTOR, "#study-images .main-svg"))
    heading = browser.find_element(By.XPATH, "//h2[contains(., 'Ion images of m/z')]").text
    assert mz in heading
    panels = browser.execute_script(
        "return document.getElementById('study-images').data.length"
    )  # Plotly keeps the drawn traces on the element: one image per member
    assert panels == len(members)
    browser.execute_script("document.getElementById('study-images').scrollIntoView()")
    shot(browser, "study-feature-ion-images")
