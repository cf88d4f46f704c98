"""Peak binning and alignment across spectra: from ragged peak lists to a feature table.

``bin_peaks`` finds the features: all peaks' m/z values are sorted and split wherever two
consecutive values are more than ``tolerance_ppm`` apart (single linkage along the m/z axis); a
feature's m/z is the intensity-weighted mean of its peaks. Peaks of one spectrum that fall into the
same feature are summed. ``align_peaks`` maps peaks onto a given feature axis (the nearest feature
within ``tolerance_ppm``), so chunks processed separately get the same rows.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from em2q_msi.peaks import PeakList

if TYPE_CHECKING:
    import scipy.sparse as sp


class FeatureError(ValueError):
    """Binning inputs that cannot be used (bad tolerance, unsorted feature axis)."""


@dataclass(frozen=True)
class FeatureTable:
    """Features × spectra.

    ``mz`` (n_features,), float64; ``intensities`` a ``scipy.sparse.csr_array`` of shape
    ``(n_features, n_spectra)`` (zero where a spectrum has no peak in the feature); ``frequency``
    the fraction of spectra with a peak in each feature. Spectra are the peak list's, in order.
    """

    mz: np.ndarray
    intensities: sp.csr_array
    frequency: np.ndarray
    coordinates: np.ndarray
    first_index: int = 0

    @property
    def n_features(self) -> int:
        return int(self.mz.size)

    def dense(self) -> np.ndarray:
        """The table as a dense float64 array ``(n_features, n_spectra)``."""
        return self.intensities.toarray()


def _check_tolerance(tolerance_ppm: float) -> None:
    if not tolerance_ppm > 0:
        raise FeatureError(f"tolerance_ppm must be > 0, got {tolerance_ppm!r}")


def _table(
    peaks: PeakList, feature: np.ndarray, keep: np.ndarray, mz: np.ndarray, min_frequency: float
) -> FeatureTable:
    import scipy.sparse as sp  # half a second to import; only the peak-table step needs it

    n_spectra = len(peaks)
    spectrum = peaks.spectrum_index()[keep]
    values = np.asarray(peaks.intensity, dtype=np.float64)[keep]
    matrix = sp.coo_array((values, (feature[keep], spectrum)), shape=(mz.size, n_spectra)).tocsr()
    matrix.sum_duplicates()
    return _filtered(peaks, matrix, mz, min_frequency)


def _filtered(
    peaks: PeakList, matrix: sp.csr_array, mz: np.ndarray, min_frequency: float
) -> FeatureTable:
    """The table of a summed CSR matrix (features × spectra), keeping the features found in
    at least ``min_frequency`` of the spectra."""
    import scipy.sparse as sp

    frequency = np.diff(matrix.indptr) / max(len(peaks), 1)
    rows = np.flatnonzero(frequency >= min_frequency) if min_frequency > 0 else None
    if rows is not None:
        matrix, mz, frequency = matrix[rows], mz[rows], frequency[rows]
    return FeatureTable(
        mz=mz,
        intensities=sp.csr_array(matrix),
        frequency=frequency,
        coordinates=peaks.coordinates,
        first_index=peaks.first_index,
    )


#: peaks whose m/z gaps ``bin_peaks`` computes at once (bounds its float temporaries)
_GAP_SLICE = 1 << 20


def bin_peaks(
    peaks: PeakList, tolerance_ppm: float = 10.0, min_frequency: float = 0.0
) -> FeatureTable:
    """Group the peaks of all spectra into features (see the module docstring).

    ``min_frequency``: keep features found in at least this fraction (0–1) of the spectra.

    Memory: about 30 bytes per peak besides the peak list (the m/z order, the sorted m/z, the
    table's values and spectrum indices), since a measurement's peak table holds every peak
    at once (11 million for 300×300 pixels at ~120 peaks each). The features are runs of the
    m/z order, so the table is built in that order directly (CSR rows are features), not
    through a coordinate list and a scatter by feature.
    """
    _check_tolerance(tolerance_ppm)
    if not 0.0 <= min_frequency <= 1.0:
        raise FeatureError(f"min_frequency must be within 0–1, got {min_frequency!r}")
    mz = np.asarray(peaks.mz, dtype=np.float64)
    n, n_spectra = mz.size, len(peaks)
    order = np.argsort(mz, kind="stable")
    sorted_mz = mz[order]
    # a feature starts wherever the gap to the previous m/z exceeds the tolerance
    new = np.zeros(n, bool)
    new[:1] = True
    for a in range(1, n, _GAP_SLICE):
        b = min(n, a + _GAP_SLICE)
        before = sorted_mz[a - 1 : b - 1]
        new[a:b] = (sorted_mz[a:b] - before) / before * 1e6 > tolerance_ppm
    starts = np.flatnonzero(new)
    del new
    values = np.asarray(peaks.intensity, dtype=np.float64)[order]
    if n:
        weights = np.where(values > 0, values, 0.0)
        w_sum = np.add.reduceat(weights, starts)
        mz_sum = np.add.reduceat(weights * sorted_mz, starts)
        del weights
        plain = np.add.reduceat(sorted_mz, starts) / np.diff(np.append(starts, n))
        with np.errstate(invalid="ignore", divide="ignore"):
            feature_mz = np.where(w_sum > 0, mz_sum / w_sum, plain)
    else:
        feature_mz = np.zeros(0)
    del sorted_mz
    index_dtype = np.int32 if n_spectra < 2**31 and n < 2**31 else np.int64
    spectrum = np.repeat(np.arange(n_spectra, dtype=index_dtype), np.diff(peaks.offsets))
    spectrum = spectrum[order]
    del order
    indptr = np.append(starts, n).astype(index_dtype)
    import scipy.sparse as sp  # half a second to import; only the peak-table step needs it

    matrix = sp.csr_array((values, spectrum, indptr), shape=(starts.size, n_spectra))
    matrix.sum_duplicates()  # peaks of one spectrum in one feature are summed
    return _filtered(peaks, matrix, feature_mz, min_frequency)


def align_peaks(
    peaks: PeakList, feature_mz: np.ndarray, tolerance_ppm: float = 10.0
) -> FeatureTable:
    """Map peaks onto a fixed, sorted feature axis: nearest feature within ``tolerance_ppm``.

    Peaks with no feature that close are dropped; every feature keeps its row.
    """
    _check_tolerance(tolerance_ppm)
    axis = np.asarray(feature_mz, dtype=np.float64)
    if axis.size > 1 and np.any(np.diff(axis) < 0):
        raise FeatureError("feature_mz must be sorted ascending")
    mz = np.asarray(peaks.mz, dtype=np.float64)
    if axis.size == 0:
        return _table(peaks, np.zeros(mz.size, np.int64), np.zeros(mz.size, bool), axis, 0.0)
    j = np.clip(np.searchsorted(axis, mz), 1, max(axis.size - 1, 1))
    left = np.minimum(j - 1, axis.size - 1)
    right = np.minimum(j, axis.size - 1)
    nearest = np.where(np.abs(axis[left] - mz) <= np.abs(axis[right] - mz), left, right)
    keep = np.abs(axis[nearest] - mz) <= axis[nearest] * tolerance_ppm * 1e-6
    return _table(peaks, nearest, keep, axis, 0.0)
