"""Generated notebooks: valid nbformat v4, opening exactly the asked measurement and ROI,
carrying where the platform is and never how to log in."""

from __future__ import annotations

import nbformat

from em2q.notebooks import measurement_notebook, notebook_bytes, notebook_filename
from em2q_resources.settings import Settings

SETTINGS = Settings(
    elasticsearch_url="https://es.example.org:9200",
    elasticsearch_username="em2q",
    elasticsearch_password="hunter2-password",
    elasticsearch_api_key="key-s3cr3t",
    api_token="token-s3cr3t",
    web_secret="web-s3cr3t",
    index_prefix="lab",
    storage="s3://em2q-data/root",
)


def _code(notebook: dict) -> str:
    return "\n".join("".join(c["source"]) for c in notebook["cells"] if c["cell_type"] == "code")


def test_the_notebook_is_valid_nbformat_v4():
    notebook = nbformat.reads(
        notebook_bytes(measurement_notebook(SETTINGS, "kidney-1", roi="tumour")).decode(),
        as_version=4,
    )
    nbformat.validate(notebook)
    assert notebook.nbformat == 4


def test_the_roi_notebook_opens_that_measurement_and_reads_that_rois_spectra():
    code = _code(
        measurement_notebook(SETTINGS, "kidney-1", roi="tumour", parameter_set="strict@v2")
    )
    assert "catalog.measurement('kidney-1')" in code
    assert "roi = m.roi('tumour')" in code and "roi.spectra()" in code
    assert "catalog.parameter_set('strict@v2')" in code
    compile(code, "notebook", "exec")  # every cell is Python


def test_the_notebook_names_the_platform_but_carries_no_secret():
    text = notebook_bytes(measurement_notebook(SETTINGS, "kidney-1", roi="tumour")).decode()
    assert "https://es.example.org:9200" in text and "s3://em2q-data/root" in text
    for secret in ("hunter2-password", "key-s3cr3t", "token-s3cr3t", "web-s3cr3t"):
        assert secret not in text
    code = _code(measurement_notebook(SETTINGS, "kidney-1"))
    assert "os.environ.setdefault('EM2Q_INDEX_PREFIX', 'lab')" in code


def test_a_measurement_notebook_without_roi_lists_the_rois_instead():
    code = _code(measurement_notebook(SETTINGS, "kidney-1"))
    assert "m.roi(" not in code and "m.rois()" in code


def test_the_download_name_is_safe():
    assert notebook_filename("kidney-1", "tumour/../x") == "kidney-1-tumour_.._x.ipynb"
