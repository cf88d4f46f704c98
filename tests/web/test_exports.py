"""Downloads of processed results: a measurement's peak table as a zipped centroided imzML that
pyimzml reads back equal to the table."""

from __future__ import annotations

import io
import zipfile

import numpy as np
from pyimzml.ImzMLParser import ImzMLParser

from em2q.study_results import measurement_anndata


def test_the_measurement_page_links_a_centroided_imzml_that_reads_back_equal(
    processed, processed_client, tmp_path
):
    _, store, storage, measurement_id = processed
    page = processed_client.get(f"/measurements/{measurement_id}")
    assert f'href="/measurements/{measurement_id}/peaks.imzml.zip?p=default' in page.text
    answer = processed_client.get(f"/measurements/{measurement_id}/peaks.imzml.zip")
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"] == "application/zip"
    with zipfile.ZipFile(io.BytesIO(answer.content)) as archive:
        assert sorted(archive.namelist()) == [f"{measurement_id}.ibd", f"{measurement_id}.imzML"]
        archive.extractall(tmp_path)
    parser = ImzMLParser(str(tmp_path / f"{measurement_id}.imzML"))
    table = measurement_anndata(store, storage, measurement_id)
    matrix, mz = table.X.tocsr(), table.var["mz"].to_numpy()
    rows = [i for i in range(matrix.shape[0]) if matrix[i].count_nonzero()]
    xy = table.obs[["x", "y"]].to_numpy()
    assert rows and [tuple(c[:2]) for c in parser.coordinates] == [tuple(xy[i]) for i in rows]
    for position, row in enumerate(rows):
        read_mz, read_intensity = parser.getspectrum(position)
        values = matrix[row].toarray().ravel()
        np.testing.assert_array_equal(read_mz, mz[np.flatnonzero(values)])
        np.testing.assert_array_equal(read_intensity, values[np.flatnonzero(values)])


def test_an_export_under_an_unknown_parameter_set_is_a_404(processed, processed_client):
    _, _, _, measurement_id = processed
    answer = processed_client.get(f"/measurements/{measurement_id}/peaks.imzml.zip?p=nope")
    assert answer.status_code == 404


def test_the_imzml_download_of_a_study_not_computed_is_a_404_saying_how_to_run_it(
    client, metadata_store
):
    from em2q_resources import studies

    studies.create(metadata_store, "not-run", title="t", design=["sample.condition"])
    answer = client.get("/studies/not-run/aligned.imzml.zip")
    assert answer.status_code == 404
    assert "em2q study run not-run" in answer.text
