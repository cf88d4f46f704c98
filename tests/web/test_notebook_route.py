""" "Open in notebook" on the processed example: the link, the download, the notebook written into
the user's notebook folder with a redirect to it in the local Jupyter server (token on loopback
only) or a JupyterHub's user-redirect, and that notebook executed in a Jupyter kernel (nbclient)
against the test platform, returning exactly the ROI's spectra."""

from __future__ import annotations

import os

import nbformat
import numpy as np
import pytest
from fastapi.testclient import TestClient
from nbclient import NotebookClient
from pyimzml.ImzMLParser import ImzMLParser

from em2q.web import create_app
from em2q_msi.spatial import rectangle
from em2q_resources.settings import PROJECT_ROOT
from tests.web.conftest import EXAMPLE_IMZML, with_csrf

ROI = "nb-corner"


@pytest.fixture(scope="module")
def roi_notebook(processed, processed_client):
    """A 2×2-pixel ROI drawn on the example and its notebook downloaded (ROI deleted after)."""
    _, _, _, mid = processed
    saved = processed_client.post(
        f"/api/measurements/{mid}/rois", json={"name": ROI, "geometry": rectangle(1, 0, 3, 2)}
    )
    assert saved.status_code == 201, saved.text
    answer = processed_client.get(f"/measurements/{mid}/notebook.ipynb", params={"roi": ROI})
    yield mid, answer
    processed_client.delete(f"/api/measurements/{mid}/rois/{ROI}")


def test_the_measurement_page_links_to_its_notebook(processed, processed_client):
    _, _, _, mid = processed
    page = processed_client.get(f"/measurements/{mid}").text
    assert f'href="/measurements/{mid}/notebook.ipynb?p=default@v1"' in page
    assert f'action="/measurements/{mid}/notebook?p=default%40v1"' in page  # Open in notebook
    spatial_js = processed_client.get("/static/spatial.js").text
    assert "notebook.ipynb?roi=" in spatial_js and "/notebook?roi=" in spatial_js


def test_the_notebook_is_a_valid_ipynb_download(roi_notebook):
    mid, answer = roi_notebook
    assert answer.status_code == 200
    assert f'filename="{mid}-{ROI}.ipynb"' in answer.headers["content-disposition"]
    nbformat.validate(nbformat.reads(answer.text, as_version=4))


def _catalog(processed, **notebook_settings) -> TestClient:
    """The catalog of the processed example with a notebook server, seen from this machine."""
    settings, store, storage, _ = processed
    app = create_app(settings.with_overrides(**notebook_settings), store=store, storage=storage)
    return with_csrf(TestClient(app, client=("127.0.0.1", 50000), follow_redirects=False))


@pytest.fixture(scope="module")
def opened(processed, roi_notebook, tmp_path_factory):
    """The ROI's notebook opened from a catalog with a local Jupyter server: (redirect,
    the user's notebook folder, the downloaded notebook)."""
    settings, _, _, mid = processed
    folder = tmp_path_factory.mktemp("notebooks")
    with _catalog(
        processed, notebook_url="http://127.0.0.1:8888", notebook_token="tok-en",
        notebook_dir=str(folder / "{user}"),
    ) as catalog:  # fmt: skip
        answer = catalog.post(f"/measurements/{mid}/notebook", params={"roi": ROI, "p": "default"})
    yield answer, folder / settings.local_user, roi_notebook[1]


def test_open_in_notebook_writes_it_into_the_users_folder_and_goes_there(processed, opened):
    _, _, _, mid = processed
    answer, folder, download = opened
    assert answer.status_code == 200, answer.text
    url = f"http://127.0.0.1:8888/lab/tree/{mid}-{ROI}.ipynb?token=tok-en"
    assert f'<meta http-equiv="refresh" content="0; url={url}">' in answer.text
    assert f'<a id="notebook-link" href="{url}">' in answer.text
    assert answer.headers["cache-control"] == "no-store"
    assert [p.name for p in folder.iterdir()] == [f"{mid}-{ROI}.ipynb"]
    written = nbformat.reads((folder / f"{mid}-{ROI}.ipynb").read_text("utf-8"), as_version=4)
    assert written.metadata.em2q == {"measurement_id": mid, "roi": ROI, "parameter_set": "default"}


def test_on_a_cluster_open_in_notebook_goes_through_jupyterhubs_user_redirect(processed, tmp_path):
    _, _, _, mid = processed
    with _catalog(
        processed, notebook_url="https://hub.example.org", notebook_dir=str(tmp_path)
    ) as catalog:
        answer = catalog.post(
            f"/measurements/{mid}/notebook", headers={"Accept": "application/json"}
        )
    assert answer.status_code == 200
    assert answer.json() == {
        "file": f"{mid}.ipynb",
        "url": f"https://hub.example.org/hub/user-redirect/lab/tree/{mid}.ipynb",
    }
    assert (tmp_path / f"{mid}.ipynb").is_file()


def test_without_a_notebook_server_open_in_notebook_is_the_download(processed, processed_client):
    _, _, _, mid = processed
    answer = processed_client.post(
        f"/measurements/{mid}/notebook", params={"roi": ROI, "p": "default@v1"},
        follow_redirects=False,
    )  # fmt: skip
    assert answer.status_code == 303
    assert answer.headers["location"] == (
        f"/measurements/{mid}/notebook.ipynb?roi={ROI}&p=default%40v1"
    )


def test_open_in_notebook_refuses_a_post_without_the_csrf_token(processed, tmp_path):
    settings, store, storage, mid = processed
    app = create_app(
        settings.with_overrides(notebook_url="https://hub.example.org", notebook_dir=str(tmp_path)),
        store=store, storage=storage,
    )  # fmt: skip
    with TestClient(app, follow_redirects=False) as foreign:
        assert foreign.post(f"/measurements/{mid}/notebook").status_code == 403
    assert list(tmp_path.iterdir()) == []


def test_the_opened_notebook_runs_in_a_kernel_and_returns_the_rois_spectra(opened, tmp_path):
    _, folder, _ = opened
    notebook = nbformat.reads(next(folder.glob("*.ipynb")).read_text("utf-8"), as_version=4)
    out = tmp_path / "spectra.npz"
    notebook.cells.append(
        nbformat.v4.new_code_cell(
            f"import numpy as np\nnp.savez({str(out)!r}, intensity=spectra.intensity, "
            "coordinates=spectra.coordinates)"
        )
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("EM2Q_")}
    env.update(
        PYTHONPATH=str(PROJECT_ROOT), MPLBACKEND="Agg", EM2Q_CACHE_DIR=str(tmp_path / "cache")
    )  # the notebook's own cell says where the platform is
    NotebookClient(
        notebook, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(folder)}}
    ).execute(env=env)
    printed = "".join(
        o.get("text", "") for c in notebook.cells if c.cell_type == "code" for o in c.outputs
    )
    assert f"{ROI}: 4 spectra" in printed
    read = np.load(out)
    parser = ImzMLParser(str(EXAMPLE_IMZML))
    inside = [i for i, (x, y, _) in enumerate(parser.coordinates) if 2 <= x <= 3 and y <= 2]
    expected = np.array([parser.getspectrum(i)[1] for i in inside])
    np.testing.assert_array_equal(read["intensity"], expected)
    assert [tuple(c[:2]) for c in read["coordinates"]] == [
        parser.coordinates[i][:2] for i in inside
    ]


def test_an_unknown_roi_gets_no_notebook(processed, processed_client):
    _, _, _, mid = processed
    answer = processed_client.get(f"/measurements/{mid}/notebook.ipynb", params={"roi": "nowhere"})
    assert answer.status_code == 404
