"""Generated notebooks: valid nbformat v4, opening exactly the asked measurement and ROI,
carrying where the platform is and never how to log in."""

from __future__ import annotations

import nbformat
import pytest

from em2q.notebooks import (
    NotebookFolderError,
    measurement_notebook,
    notebook_bytes,
    notebook_filename,
    notebook_folder,
    notebook_server_url,
    write_notebook,
)
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


# "Open in notebook": the user's folder, a file name that replaces nothing, the server's URL


def test_the_notebook_folder_is_the_users_own_with_a_safe_name():
    settings = Settings(notebook_dir="/home/{user}/em2q")
    assert str(notebook_folder(settings, "ada")) == "/home/ada/em2q"
    assert str(notebook_folder(settings, "../root")) == "/home/_root/em2q"


def test_a_notebook_is_written_whole_under_its_name(tmp_path):
    path = write_notebook(tmp_path / "nb", "kidney-1.ipynb", b'{"cells": []}')
    assert path == tmp_path / "nb" / "kidney-1.ipynb"
    assert path.read_bytes() == b'{"cells": []}'
    assert [p.name for p in path.parent.iterdir()] == ["kidney-1.ipynb"]  # nothing left aside


def test_opening_an_unchanged_notebook_again_reuses_its_file(tmp_path):
    first = write_notebook(tmp_path, "kidney-1.ipynb", b"v1")
    assert write_notebook(tmp_path, "kidney-1.ipynb", b"v1") == first
    assert len(list(tmp_path.iterdir())) == 1


def test_an_edited_notebook_is_never_overwritten(tmp_path):
    edited = tmp_path / "kidney-1.ipynb"
    edited.write_bytes(b"the user's analysis")
    (tmp_path / "kidney-1-2.ipynb").write_bytes(b"another edit")
    path = write_notebook(tmp_path, "kidney-1.ipynb", b"generated")
    assert path.name == "kidney-1-3.ipynb" and path.read_bytes() == b"generated"
    assert edited.read_bytes() == b"the user's analysis"
    assert (tmp_path / "kidney-1-2.ipynb").read_bytes() == b"another edit"


def test_an_unwritable_notebook_folder_is_a_clear_error(tmp_path):
    (tmp_path / "file").write_bytes(b"")  # a file where the folder should be
    with pytest.raises(NotebookFolderError, match="EM2Q_NOTEBOOK_DIR"):
        write_notebook(tmp_path / "file" / "nb", "k.ipynb", b"{}")


def test_a_jupyterhub_opens_the_notebook_through_user_redirect():
    for base in ("https://hub.example.org", "https://hub.example.org/hub/"):
        settings = Settings(notebook_url=base, notebook_token=None)
        assert notebook_server_url(settings, "kidney 1.ipynb", client_host="10.0.0.5") == (
            "https://hub.example.org/hub/user-redirect/lab/tree/kidney%201.ipynb"
        )


def test_the_local_servers_token_goes_only_to_a_browser_on_this_machine():
    settings = Settings(notebook_url="http://127.0.0.1:8888", notebook_token="t0k/en")
    assert notebook_server_url(settings, "k.ipynb", client_host="127.0.0.1") == (
        "http://127.0.0.1:8888/lab/tree/k.ipynb?token=t0k%2Fen"
    )
    assert notebook_server_url(settings, "k.ipynb", client_host="192.168.1.7") == (
        "http://127.0.0.1:8888/lab/tree/k.ipynb"
    )
    remote = Settings(notebook_url="https://lab.example.org", notebook_token="t0k")
    assert "token" not in notebook_server_url(remote, "k.ipynb", client_host="127.0.0.1")


def test_without_a_notebook_server_there_is_no_url():
    assert notebook_server_url(Settings(), "k.ipynb", client_host="127.0.0.1") is None


def test_notebook_settings_come_from_the_environment():
    settings = Settings.from_env(
        {"EM2Q_NOTEBOOK_URL": "https://hub.example.org/", "EM2Q_NOTEBOOK_DIR": "/home/{user}"}
    )
    assert settings.notebook_url == "https://hub.example.org"
    assert settings.notebook_dir == "/home/{user}" and settings.notebook_token is None
    assert "notebook_token" not in repr(Settings(notebook_token="secret"))
