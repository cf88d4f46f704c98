""" "Open in notebook" clicked in a real headless Chromium: the catalog writes the notebook into
the user's folder and the browser lands on it in the local Jupyter server that ``em2q dev``
starts (JupyterLab on loopback with a token; screenshot in /tmp/em2q-shots/)."""

from __future__ import annotations

import socket

import pytest
from selenium.common.exceptions import StaleElementReferenceException
from selenium.webdriver.common.by import By
from selenium.webdriver.support.wait import WebDriverWait

from em2q.platform import jupyter_server
from em2q.web import create_app
from em2q.web.server import serve_in_thread
from tests.web.test_browser import shot, wait


@pytest.fixture(scope="module")
def notebook_platform(processed, tmp_path_factory):
    """The catalog of the processed example with a running local Jupyter server."""
    settings, store, storage, measurement_id = processed
    root = tmp_path_factory.mktemp("jupyter")
    settings = settings.with_overrides(notebook_dir=str(root / "notebooks"))
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with jupyter_server(
        settings, settings.elasticsearch_url, port=port, log_path=root / "jupyter.log"
    ) as (lab, token):
        app = create_app(
            settings.with_overrides(notebook_url=lab, notebook_token=token),
            store=store, storage=storage,
        )  # fmt: skip
        with serve_in_thread(app) as url:
            yield url, lab, root / "notebooks", measurement_id


def test_open_in_notebook_lands_on_the_notebook_in_jupyterlab(notebook_platform, browser):
    url, lab, folder, measurement_id = notebook_platform
    browser.get(f"{url}/measurements/{measurement_id}")
    browser.find_element(By.ID, "open-notebook").click()
    wait(browser).until(lambda d: d.current_url.startswith(f"{lab}/lab/tree/"))
    name = f"{measurement_id}.ipynb"
    assert browser.current_url.split("?")[0] == f"{lab}/lab/tree/{name}"
    assert (folder / name).is_file()
    rendered = WebDriverWait(browser, 90, ignored_exceptions=(StaleElementReferenceException,))
    rendered.until(  # JupyterLab shows the notebook's cells: its first names the measurement
        lambda d: any(
            measurement_id in cell.text
            for cell in d.find_elements(By.CSS_SELECTOR, ".jp-NotebookPanel .jp-Cell")
        )
    )
    shot(browser, "20-open-in-notebook-jupyterlab")
