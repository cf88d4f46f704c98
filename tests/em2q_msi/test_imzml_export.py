"""Centroided imzML export: pyimzml reads back the coordinates, m/z and intensities written."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
from pyimzml.ImzMLParser import ImzMLParser

from em2q_msi.imzml_export import InvalidExport, write_centroided_imzml


def peak_matrix(dtype=np.float32):
    """6 pixels × 5 features on a 3 × 2 grid; pixel 4 holds no peak."""
    rng = np.random.default_rng(3)
    dense = rng.uniform(1, 100, (6, 5)) * (rng.uniform(size=(6, 5)) < 0.6)
    dense[4] = 0
    dense[0, 0] = 7.25  # at least one stored peak in the first pixel
    mz = np.array([100.0101, 250.5, 500.25, 760.5851, 900.9])
    xy = np.array([[1, 1], [2, 1], [3, 1], [1, 2], [2, 2], [3, 2]])
    return sp.csr_array(dense.astype(dtype)), mz, xy


def test_pyimzml_reads_back_the_same_coordinates_mz_and_intensities(tmp_path):
    matrix, mz, xy = peak_matrix()
    report = write_centroided_imzml(tmp_path / "peaks", matrix, mz, xy, polarity="positive")
    parser = ImzMLParser(report.imzml_path)
    dense = matrix.toarray()
    with_peaks = [i for i in range(6) if dense[i].any()]
    assert [c[:2] for c in parser.coordinates] == [tuple(xy[i]) for i in with_peaks]
    for position, row in enumerate(with_peaks):
        read_mz, read_intensity = parser.getspectrum(position)
        columns = np.flatnonzero(dense[row])
        np.testing.assert_array_equal(read_mz, mz[columns])
        np.testing.assert_array_equal(read_intensity, dense[row, columns])
    assert report.peaks == int((dense != 0).sum()) and report.empty_pixels == 1


def test_float64_intensities_round_trip_exactly(tmp_path):
    matrix, mz, xy = peak_matrix(np.float64)
    report = write_centroided_imzml(tmp_path / "p.imzML", matrix, mz, xy)
    _, intensity = ImzMLParser(report.imzml_path).getspectrum(0)
    assert intensity.dtype == np.float64
    np.testing.assert_array_equal(intensity, matrix.toarray()[0][matrix.toarray()[0] != 0])


def test_the_file_is_centroided_and_processed(tmp_path):
    matrix, mz, xy = peak_matrix()
    report = write_centroided_imzml(tmp_path / "p", matrix, mz, xy)
    text = Path(report.imzml_path).read_text(encoding="utf-8")
    assert 'accession="MS:1000127"' in text  # centroid spectrum
    assert 'accession="IMS:1000031"' in text  # processed


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        (lambda m, mz, xy: (m, mz[::-1], xy), "strictly increasing"),
        (lambda m, mz, xy: (m, mz[:3], xy), "3 feature m/z for a matrix of 5"),
        (lambda m, mz, xy: (m, mz, xy - 1), "1-based"),
        (lambda m, mz, xy: (m, mz, xy[:4]), "for 6 pixels"),
    ],
    ids=["unordered-mz", "short-axis", "zero-based", "short-coordinates"],
)
def test_bad_input_is_refused_naming_it_and_nothing_is_written(tmp_path, change, problem):
    with pytest.raises(InvalidExport, match=problem):
        write_centroided_imzml(tmp_path / "bad", *change(*peak_matrix()))
    assert list(tmp_path.iterdir()) == []
