"""ROIs in the notebook client: drawn, listed, and read back as only their spectra."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from em2q.client import Catalog
from em2q_msi.spatial import rectangle
from em2q_msi.synthetic import synthetic_regions, write_regions_imzml
from em2q_resources.auth import Role, User
from em2q_resources.metadata import DocumentNotFound
from em2q_resources.settings import Settings
from tests.em2q_assets.conftest import register_pair, remember_storage

SAM = User("sam", Role.SCIENTIST)
NX, NY = 12, 10


@pytest.fixture
def section_measurement(metadata_store, elasticsearch_url, tmp_path):
    """A planted-region section uploaded as ``sec-1`` (continuous, 12×10 pixels)."""
    settings = remember_storage(
        Settings(
            elasticsearch_url=elasticsearch_url,
            index_prefix=metadata_store.prefix,
            storage=str(tmp_path / "storage"),
            cache_dir=tmp_path / "cache",
        )
    )
    section = synthetic_regions(nx=NX, ny=NY, n_bins=300, seed=1)
    imzml = Path(write_regions_imzml(tmp_path / "section", section))
    register_pair(metadata_store, imzml, imzml.with_suffix(".ibd"), "sec-1", tmp_path / "x")
    catalog = Catalog(settings, user=SAM, store=metadata_store)
    return catalog.measurement("sec-1"), section


def test_added_roi_is_listed_with_its_pixel_count(section_measurement):
    m, _ = section_measurement
    m.add_roi("left", rectangle(0, 0, 3, NY), colour="#00ff00")
    table = m.rois()
    assert list(table.index) == ["left"]
    assert table.loc["left", "pixels"] == 3 * NY
    assert table.loc["left", "author"] == "sam"


def test_roi_spectra_are_exactly_the_pixels_inside(section_measurement):
    m, section = section_measurement
    m.add_roi("triangle", [(0, 0), (8.2, 0), (0, 8.2)])  # vertices; the ring is closed for us
    roi = m.roi("triangle")
    block = roi.spectra()
    rows, cols = np.mgrid[0:NY, 0:NX]
    inside = (cols + 0.5) + (rows + 0.5) < 8.2  # no centre on an edge
    expected = np.flatnonzero(inside.reshape(-1))
    assert block.intensity.shape[0] == expected.size == int(roi.mask.sum())
    np.testing.assert_array_equal(block.coordinates, section.block.coordinates[expected])
    np.testing.assert_array_equal(block.intensity, section.block.intensity[expected])


def test_roi_over_a_planted_region_gives_that_regions_mean_spectrum(section_measurement):
    m, section = section_measurement
    m.add_roi("band", rectangle(0, 2, 3, 8))  # the left third is region 0
    roi = m.roi("band")
    indices = roi.spectrum_indices()
    assert set(section.labels[indices]) == {0}
    mz, mean = roi.mean_spectrum()
    direct = section.block.intensity[indices].mean(axis=0, dtype=np.float64)
    np.testing.assert_allclose(mean, direct, rtol=1e-12)
    np.testing.assert_array_equal(mz, section.block.mz)


def test_roi_qc_numbers_come_from_its_own_spectra(section_measurement):
    from em2q_resources.connections import set_up_metadata_store

    m, section = section_measurement
    set_up_metadata_store(m.catalog.store)  # the default parameter set
    m.add_roi("band", rectangle(0, 2, 3, 8))
    roi = m.roi("band")
    tics = section.block.intensity[roi.spectrum_indices()].sum(axis=1, dtype=np.float64)
    qc = roi.qc()
    assert qc["pixels"] == tics.size == 18
    assert qc["tic_median"] == pytest.approx(np.median(tics), rel=1e-9)
    assert qc["tic_mean"] == pytest.approx(np.mean(tics), rel=1e-9)
    assert qc["empty_fraction"] == 0.0 and qc["median_peaks"] > 0


def test_an_unknown_roi_is_named_in_the_error(section_measurement):
    m, _ = section_measurement
    with pytest.raises(DocumentNotFound, match="sec-1/nowhere"):
        m.roi("nowhere")


def test_a_deleted_roi_is_gone(section_measurement):
    m, _ = section_measurement
    m.add_roi("tmp", rectangle(0, 0, 2, 2))
    m.delete_roi("tmp")
    assert m.rois().empty
