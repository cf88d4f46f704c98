""" "Open in notebook" on the processed example: the link, the download, and its code run in a
separate Python process against the test platform, returning exactly the ROI's spectra."""

from __future__ import annotations

import os
import subprocess
import sys

import nbformat
import numpy as np
import pytest
from pyimzml.ImzMLParser import ImzMLParser

from em2q_msi.spatial import rectangle
from em2q_resources.settings import PROJECT_ROOT
from tests.web.conftest import EXAMPLE_IMZML

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
    assert "notebook.ipynb?roi=" in processed_client.get("/static/spatial.js").text


def test_the_notebook_is_a_valid_ipynb_download(roi_notebook):
    mid, answer = roi_notebook
    assert answer.status_code == 200
    assert f'filename="{mid}-{ROI}.ipynb"' in answer.headers["content-disposition"]
    nbformat.validate(nbformat.reads(answer.text, as_version=4))


def test_the_notebooks_code_returns_the_rois_spectra(processed, roi_notebook, tmp_path):
    settings, _, _, mid = processed
    _, answer = roi_notebook
    notebook = nbformat.reads(answer.text, as_version=4)
    code = "\n".join(c.source for c in notebook.cells if c.cell_type == "code")
    out = tmp_path / "spectra.npz"
    script = tmp_path / "notebook.py"
    script.write_text(
        code + f"\nimport numpy as np\nnp.savez({str(out)!r}, intensity=spectra.intensity, "
        "coordinates=spectra.coordinates)\n",
        encoding="utf-8",
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("EM2Q_")}
    env.update(
        PYTHONPATH=str(PROJECT_ROOT), MPLBACKEND="Agg", EM2Q_CACHE_DIR=str(tmp_path / "cache")
    )  # the notebook's own cell says where the platform is
    ran = subprocess.run(
        [sys.executable, str(script)], env=env, cwd=tmp_path, capture_output=True, text=True,
        timeout=300,
    )  # fmt: skip
    assert ran.returncode == 0, ran.stderr
    assert f"{ROI}: 4 spectra" in ran.stdout
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
