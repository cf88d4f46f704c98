"""Study comparison: many measurements on one feature axis, normalised, compared between groups.

The steps, each a pure function on numpy arrays (pixel peak lists in CSR layout: ``mz``,
``intensity``, ``offsets``, m/z ascending within each pixel, as ``em2q_msi.peaks.PeakList``):

1. :func:`measurement_peaks` — a measurement's own peak list from its pixels' peaks, the
   peaks of its pixel-frequency spectrum. Pooled pixel peaks cannot be clustered by plain
   single linkage: a few noise peaks per pixel, times thousands of pixels, chain every feature
   into one. Instead peaks are counted on a logarithmic m/z axis in bins of ``tolerance_ppm`` / 4,
   the counts summed over a window of ± 2 bins (± ``tolerance_ppm`` / 2), and every local maximum
   of that sum found in at least ``min_pixel_frequency`` × pixels is a feature (of two maxima
   closer than ``tolerance_ppm`` the more frequent is kept); its m/z is the mean m/z of the
   peaks in its window. Cost: one pass over the peaks (no sort), memory a few MB of bins.
2. :func:`reference_peaks` — the study's reference from the measurements' peak lists: all their
   m/z values pooled and sorted, a new feature wherever two consecutive values are more than
   ``tolerance_ppm`` apart, relative to the lower one (single linkage: the connected components
   of the graph linking any two peaks within the tolerance); kept if found in at least
   ``min_frequency`` of the measurements. Its m/z is the mean over the measurements that have it
   of each one's mean m/z in the feature, so every measurement counts once (a measurement's
   calibration error pulls the reference by 1/n of itself, whatever its intensities).
3. :func:`align_to_reference` — every pixel's peaks matched to the nearest reference feature
   within ``tolerance_ppm`` (``searchsorted``), peaks of one pixel in one feature summed → a
   ``scipy.sparse.csr_array`` of pixels × features; unmatched peaks are dropped.
4. :func:`normalisation_factors` — per pixel, from all its peaks (not only the matched ones):
   TIC, RMS, median, or the intensity of an internal standard (m/z ± ppm).
5. :func:`measurement_means` — a measurement's level of each feature: the mean over its pixels
   of the normalised intensity (0 where a pixel lacks the peak); pixels whose factor is 0 (no
   peaks, or no internal standard) are left out and counted.
6. :func:`compare_groups` — per feature and contrast: group means, fold change, log2 fold
   change, Cohen's d, Welch's t-test or Mann–Whitney U on the measurement-level means (the
   measurements are the replicates, not the pixels; log2-transformed by default, see
   ``StudyParameters.transform``), Benjamini–Hochberg q-values; and
   :func:`pca` of the measurements.

Adding a measurement re-runs only its own steps 1, 3–5, then 2 and 6 (cheap: they see peak
lists and means, not pixels); :func:`reference_change` says whether the new reference moved an
existing feature by more than ``drift_tolerance_ppm`` or added one, in which case the other
measurements' alignments are stale.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
import scipy.stats

from em2q_msi.parameters import StudyParameters

BINS_PER_TOLERANCE = 4
WINDOW_BINS = 2  # ± bins summed around each bin: ± tolerance / 2
_BLOCK_PEAKS = 4_000_000  # peaks binned at a time, bounding the temporaries


class StudyError(ValueError):
    """Study inputs that cannot be compared; the message names the measurement, group or field."""


# -- 1. a measurement's peak list ------------------------------------------------------------


@dataclass(frozen=True)
class MeasurementPeaks:
    """A measurement's features: ``mz`` ascending (float64); ``frequency`` the peaks per pixel
    in the feature's window (≈ the fraction of pixels with the peak); ``mean_intensity`` the
    window's intensity summed over pixels / number of pixels."""

    mz: np.ndarray
    frequency: np.ndarray
    mean_intensity: np.ndarray
    n_pixels: int


def _check_peaks(mz: np.ndarray, intensity: np.ndarray, offsets: np.ndarray) -> None:
    if mz.shape != intensity.shape or mz.ndim != 1:
        raise StudyError(
            f"mz and intensity must be 1-D arrays of one length, got {mz.shape} and "
            f"{intensity.shape}"
        )
    if offsets.ndim != 1 or offsets.size < 1 or offsets[0] != 0 or offsets[-1] != mz.size:
        raise StudyError(
            f"offsets must run from 0 to the number of peaks ({mz.size}), got "
            f"{offsets[:1].tolist()}…{offsets[-1:].tolist()}"
        )
    if np.any(np.diff(offsets) < 0):
        raise StudyError("offsets must not decrease")
    if mz.size and not mz.min() > 0:
        raise StudyError(f"m/z values must be > 0, found {mz.min()!r}")


def _moving_sum(values: np.ndarray) -> np.ndarray:
    """Sum over bins ``i ± WINDOW_BINS`` of each bin (zeros beyond the ends)."""
    width = 2 * WINDOW_BINS + 1
    padded = np.concatenate((np.zeros(WINDOW_BINS + 1), values, np.zeros(WINDOW_BINS)))
    cumulative = np.cumsum(padded)
    return cumulative[width:] - cumulative[:-width]


def measurement_peaks(
    mz: np.ndarray,
    intensity: np.ndarray,
    offsets: np.ndarray,
    tolerance_ppm: float = 10.0,
    min_pixel_frequency: float = 0.05,
) -> MeasurementPeaks:
    """The measurement's own peak list from its pixels' peaks (step 1 of the module docstring)."""
    mz = np.asarray(mz, dtype=np.float64)
    intensity = np.asarray(intensity)
    offsets = np.asarray(offsets, dtype=np.int64)
    _check_peaks(mz, intensity, offsets)
    if not tolerance_ppm > 0:
        raise StudyError(f"tolerance_ppm must be > 0, got {tolerance_ppm!r}")
    n_pixels = offsets.size - 1
    empty = MeasurementPeaks(np.zeros(0), np.zeros(0), np.zeros(0), n_pixels)
    if mz.size == 0:
        return empty
    log_lo = float(np.log(mz.min()))
    step = float(np.log1p(tolerance_ppm * 1e-6 / BINS_PER_TOLERANCE))
    n_bins = int((np.log(mz.max()) - log_lo) / step) + 1
    counts = np.zeros(n_bins)
    mz_sum = np.zeros(n_bins)
    intensity_sum = np.zeros(n_bins)
    for start in range(0, mz.size, _BLOCK_PEAKS):
        part = mz[start : start + _BLOCK_PEAKS]
        index = ((np.log(part) - log_lo) / step).astype(np.int64)
        np.minimum(index, n_bins - 1, out=index)
        counts += np.bincount(index, minlength=n_bins)
        mz_sum += np.bincount(index, weights=part, minlength=n_bins)
        intensity_sum += np.bincount(
            index, weights=intensity[start : start + _BLOCK_PEAKS], minlength=n_bins
        )
    window = _moving_sum(counts)
    threshold = max(min_pixel_frequency * n_pixels, 1.0)
    left = np.concatenate(([-1.0], window[:-1]))
    right = np.concatenate((window[1:], [-1.0]))
    maxima = np.flatnonzero((window >= threshold) & (window > left) & (window >= right))
    window = window[maxima]
    # Of maxima closer than the tolerance, keep the most frequent (repeat: chains of three).
    while maxima.size > 1:
        close = np.diff(maxima) < BINS_PER_TOLERANCE
        if not close.any():
            break
        lower_left = close & (window[:-1] < window[1:])
        drop = np.zeros(maxima.size, bool)
        drop[:-1] |= lower_left
        drop[1:] |= close & ~lower_left
        maxima, window = maxima[~drop], window[~drop]
    if maxima.size == 0:
        return empty
    count = window
    window_mz = _moving_sum(mz_sum)[maxima]
    window_intensity = _moving_sum(intensity_sum)[maxima]
    return MeasurementPeaks(
        mz=window_mz / count,
        frequency=count / max(n_pixels, 1),
        mean_intensity=window_intensity / max(n_pixels, 1),
        n_pixels=n_pixels,
    )


# -- 2. the study's reference ----------------------------------------------------------------


@dataclass(frozen=True)
class ReferencePeaks:
    """The study's feature axis: ``mz`` ascending; ``n_measurements`` with a peak in each
    feature, ``frequency`` that over the number of measurements; ``width_ppm`` the spread of the
    pooled peaks (max − min, over the feature's m/z); ``tolerance_ppm`` it was built with."""

    mz: np.ndarray
    n_measurements: np.ndarray
    frequency: np.ndarray
    width_ppm: np.ndarray
    tolerance_ppm: float

    @property
    def n_features(self) -> int:
        return int(self.mz.size)


def single_linkage_ppm(sorted_mz: np.ndarray, tolerance_ppm: float) -> np.ndarray:
    """Cluster label of each value of an ascending m/z array: a new cluster starts wherever a
    value is more than ``tolerance_ppm`` (of the lower value) above the previous one."""
    if sorted_mz.size == 0:
        return np.zeros(0, np.int64)
    gap = np.diff(sorted_mz) > sorted_mz[:-1] * (tolerance_ppm * 1e-6)
    return np.concatenate(([0], np.cumsum(gap))).astype(np.int64)


def reference_peaks(
    peak_mz: Sequence[np.ndarray], tolerance_ppm: float = 10.0, min_frequency: float = 0.5
) -> ReferencePeaks:
    """The reference from each measurement's peak m/z values (step 2 of the module docstring).

    ``peak_mz``: one array per measurement (e.g. ``measurement_peaks(...).mz`` or a peak table's
    feature m/z), in any order.
    """
    if not tolerance_ppm > 0:
        raise StudyError(f"tolerance_ppm must be > 0, got {tolerance_ppm!r}")
    if not 0.0 <= min_frequency <= 1.0:
        raise StudyError(f"min_frequency must be within 0–1, got {min_frequency!r}")
    n = len(peak_mz)
    if n == 0:
        raise StudyError("a reference needs at least one measurement's peaks")
    arrays = [np.asarray(m, dtype=np.float64).ravel() for m in peak_mz]
    pooled = np.concatenate(arrays)
    owner = np.repeat(np.arange(n), [a.size for a in arrays])
    order = np.argsort(pooled, kind="stable")
    pooled, owner = pooled[order], owner[order]
    cluster = single_linkage_ppm(pooled, tolerance_ppm)
    n_clusters = int(cluster[-1]) + 1 if cluster.size else 0
    # One (cluster, measurement) pair per measurement present: its mean m/z in the cluster.
    pair, pair_index = np.unique(cluster * n + owner, return_inverse=True)
    pair_mz = np.bincount(pair_index, weights=pooled) / np.bincount(pair_index)
    pair_cluster = pair // n
    n_measurements = np.bincount(pair_cluster, minlength=n_clusters)
    mz = np.bincount(pair_cluster, weights=pair_mz, minlength=n_clusters) / np.maximum(
        n_measurements, 1
    )
    first = np.searchsorted(cluster, np.arange(n_clusters), side="left")
    last = np.searchsorted(cluster, np.arange(n_clusters), side="right") - 1
    width_ppm = (pooled[last] - pooled[first]) / np.where(mz > 0, mz, 1.0) * 1e6
    frequency = n_measurements / n
    keep = frequency >= min_frequency - 1e-12
    return ReferencePeaks(
        mz=mz[keep],
        n_measurements=n_measurements[keep],
        frequency=frequency[keep],
        width_ppm=width_ppm[keep],
        tolerance_ppm=float(tolerance_ppm),
    )


@dataclass(frozen=True)
class ReferenceChange:
    """How a rebuilt reference relates to the one the existing alignments used.

    ``old_to_new[i]``: the new feature old feature ``i`` became (−1: gone); ``moved_ppm[i]`` its
    shift (NaN when gone); ``added``: new features no old one became; ``moved``: old features
    shifted by more than the drift tolerance. ``stale``: the existing alignments no longer fit
    (a feature moved or was added) and must be re-run rather than mixed with the new ones.
    """

    old_to_new: np.ndarray
    moved_ppm: np.ndarray
    added: np.ndarray
    moved: np.ndarray
    removed: np.ndarray

    @property
    def stale(self) -> bool:
        return bool(self.moved.size or self.added.size)


def _nearest(axis: np.ndarray, mz: np.ndarray, tolerance_ppm: float) -> np.ndarray:
    """Index of the nearest value of the ascending ``axis`` within ``tolerance_ppm`` of each
    ``mz`` (of the axis value), −1 where there is none; ties go to the lower m/z.

    One ``searchsorted`` per value: each feature's window ``axis ± tolerance``, cut at the
    midpoints between neighbours so the windows do not overlap, gives ascending edges
    ``[lo_0, hi_0, lo_1, hi_1, ...]`` (``hi`` nudged up one ulp to be inclusive); a value lies
    in a window exactly when it falls after an odd number of edges.
    """
    if axis.size == 0:
        return np.full(mz.size, -1, np.int64)
    half = axis * (tolerance_ppm * 1e-6)
    lo, hi = axis - half, axis + half
    middle = 0.5 * (axis[:-1] + axis[1:])
    hi[:-1] = np.minimum(hi[:-1], middle)
    hi = np.nextafter(hi, np.inf)
    lo[1:] = np.maximum(lo[1:], hi[:-1])
    edges = np.empty(2 * axis.size)
    edges[0::2], edges[1::2] = lo, hi
    position = np.searchsorted(edges, mz, side="right")
    return np.where(position & 1 == 1, position >> 1, -1)


def reference_change(
    old: ReferencePeaks, new: ReferencePeaks, drift_tolerance_ppm: float = 2.0
) -> ReferenceChange:
    """Match each old feature to the nearest new one within the new reference's tolerance."""
    old_to_new = _nearest(new.mz, old.mz, new.tolerance_ppm)
    found = old_to_new >= 0
    moved_ppm = np.full(old.mz.size, np.nan)
    moved_ppm[found] = (new.mz[old_to_new[found]] - old.mz[found]) / old.mz[found] * 1e6
    matched = np.zeros(new.mz.size, bool)
    matched[old_to_new[found]] = True
    with np.errstate(invalid="ignore"):
        moved = np.flatnonzero(np.abs(moved_ppm) > drift_tolerance_ppm)
    return ReferenceChange(
        old_to_new=old_to_new,
        moved_ppm=moved_ppm,
        added=np.flatnonzero(~matched),
        moved=moved,
        removed=np.flatnonzero(~found),
    )


# -- 3. alignment ----------------------------------------------------------------------------


def align_to_reference(
    mz: np.ndarray,
    intensity: np.ndarray,
    offsets: np.ndarray,
    reference_mz: np.ndarray,
    tolerance_ppm: float = 10.0,
) -> sp.csr_array:
    """Pixels × features (float32, int32 indices): each pixel's peaks summed into the nearest
    reference feature within ``tolerance_ppm``; peaks with no feature that close are dropped."""
    mz = np.asarray(mz, dtype=np.float64)
    intensity = np.asarray(intensity)
    offsets = np.asarray(offsets, dtype=np.int64)
    _check_peaks(mz, intensity, offsets)
    axis = np.asarray(reference_mz, dtype=np.float64)
    if axis.size > 1 and np.any(np.diff(axis) <= 0):
        raise StudyError("reference_mz must be strictly ascending")
    if not tolerance_ppm > 0:
        raise StudyError(f"tolerance_ppm must be > 0, got {tolerance_ppm!r}")
    n_pixels = offsets.size - 1
    feature = _nearest(axis, mz, tolerance_ppm)
    keep = feature >= 0
    kept_before = np.concatenate(([0], np.cumsum(keep)))
    indptr = kept_before[offsets]
    columns = feature[keep]
    values = intensity[keep].astype(np.float32, copy=False)
    counts = np.diff(indptr)
    row_start = np.zeros(columns.size, bool)
    row_start[indptr[:-1][counts > 0]] = True
    step = np.diff(columns, prepend=-1)
    if np.any((step < 0) & ~row_start):  # m/z not ascending within a pixel: let scipy sort
        rows = np.repeat(np.arange(n_pixels), counts)
        matrix = sp.coo_array((values, (rows, columns)), shape=(n_pixels, axis.size)).tocsr()
        matrix.sum_duplicates()
        return sp.csr_array(matrix)
    first = row_start | (step != 0)  # the first peak of each (pixel, feature) run
    if not first.all():
        starts = np.flatnonzero(first)
        values = np.add.reduceat(values, starts, dtype=np.float32)
        columns = columns[starts]
        first_before = np.concatenate(([0], np.cumsum(first)))
        indptr = first_before[indptr]
    return sp.csr_array(
        (values, columns.astype(np.int32), indptr.astype(np.int64)),
        shape=(n_pixels, axis.size),
    )


# -- 4. normalisation ------------------------------------------------------------------------


def _row_sums(values: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    out = np.zeros(offsets.size - 1)
    counts = np.diff(offsets)
    filled = counts > 0
    if values.size:
        out[filled] = np.add.reduceat(values, offsets[:-1][filled], dtype=np.float64)
    return out


def normalisation_factors(
    mz: np.ndarray,
    intensity: np.ndarray,
    offsets: np.ndarray,
    params: StudyParameters,
) -> np.ndarray:
    """Per pixel, the number its intensities are divided by (float64, 0 where undefined)."""
    mz = np.asarray(mz, dtype=np.float64)
    intensity = np.asarray(intensity)
    offsets = np.asarray(offsets, dtype=np.int64)
    _check_peaks(mz, intensity, offsets)
    method = params.normalisation
    counts = np.diff(offsets)
    if method == "none":
        return np.ones(counts.size)
    if method == "tic":
        return _row_sums(intensity, offsets)
    if method == "rms":
        squares = _row_sums(np.square(intensity, dtype=np.float64), offsets)
        return np.sqrt(squares / np.maximum(counts, 1))
    if method == "median":
        rows = np.repeat(np.arange(counts.size), counts)
        ordered = intensity[np.lexsort((intensity, rows))].astype(np.float64)
        out = np.zeros(counts.size)
        filled = counts > 0
        start, n = offsets[:-1][filled], counts[filled]
        out[filled] = 0.5 * (ordered[start + (n - 1) // 2] + ordered[start + n // 2])
        return out
    if method == "reference_peak":
        assert params.reference_mz is not None  # guaranteed by StudyParameters
        half = params.reference_mz * params.reference_tolerance_ppm * 1e-6
        inside = np.abs(mz - params.reference_mz) <= half
        return _row_sums(np.where(inside, intensity, 0).astype(np.float64), offsets)
    raise StudyError(f"study.normalisation: unknown method {method!r}")  # pragma: no cover


# -- 5. measurement-level means --------------------------------------------------------------


@dataclass(frozen=True)
class MeasurementMeans:
    """A measurement's level of each reference feature (float64), over ``pixels_used`` of its
    ``n_pixels`` pixels (the others had a normalisation factor of 0)."""

    mean: np.ndarray
    pixels_used: int
    n_pixels: int


def measurement_means(aligned: sp.csr_array, factors: np.ndarray) -> MeasurementMeans:
    """Mean over pixels of ``aligned`` (pixels × features) divided row-wise by ``factors``."""
    factors = np.asarray(factors, dtype=np.float64)
    n_pixels = aligned.shape[0]
    if factors.shape != (n_pixels,):
        raise StudyError(f"expected {n_pixels} normalisation factors, got {factors.shape}")
    used = np.isfinite(factors) & (factors > 0)
    weights = np.zeros(n_pixels)
    weights[used] = 1.0 / factors[used]
    n_used = int(used.sum())
    total = aligned.T.astype(np.float64) @ weights
    mean = total / n_used if n_used else np.full(aligned.shape[1], np.nan)
    return MeasurementMeans(mean=np.asarray(mean), pixels_used=n_used, n_pixels=n_pixels)


def roi_means(
    aligned: sp.csr_array,
    factors: np.ndarray,
    pixel_indices: Sequence[np.ndarray],
    names: Sequence[str] | None = None,
) -> np.ndarray:
    """ROIs × features: each ROI's mean level of each feature over its pixels (rows of
    ``aligned``, normalised by ``factors`` as :func:`measurement_means` does).

    For ROI-level comparisons each ROI's *mean* is one replicate (not its pixels: neighbouring
    pixels of one section are not independent samples, and counting them as replicates makes
    any difference "significant"). ``pixel_indices``: each ROI's row indices; ``names`` name
    them in errors. A ROI without a usable pixel is refused (:class:`StudyError`).
    """
    factors = np.asarray(factors, dtype=np.float64)
    n_pixels = aligned.shape[0]
    if factors.shape != (n_pixels,):
        raise StudyError(f"expected {n_pixels} normalisation factors, got {factors.shape}")
    names = list(names) if names is not None else [f"ROI {i}" for i in range(len(pixel_indices))]
    rows = []
    for name, indices in zip(names, pixel_indices, strict=True):
        indices = np.asarray(indices, dtype=np.int64)
        if indices.size and (indices.min() < 0 or indices.max() >= n_pixels):
            raise StudyError(f"{name}: pixel index outside the measurement's {n_pixels} pixels")
        means = measurement_means(sp.csr_array(aligned)[indices], factors[indices])
        if means.pixels_used == 0:
            raise StudyError(
                f"{name} holds no pixel with signal ({indices.size} pixels, none with a "
                "normalisation factor > 0): redraw it over the tissue"
            )
        rows.append(means.mean)
    width = aligned.shape[1]
    return np.vstack(rows) if rows else np.zeros((0, width))


# -- 6. comparison ---------------------------------------------------------------------------


@dataclass(frozen=True)
class ContrastResult:
    """One contrast, one value per feature: the group means, ``fold_change`` (numerator /
    denominator mean; inf where only the numerator has the feature), its log2, Cohen's d (mean
    difference over the pooled standard deviation, on the tested scale: after the transform),
    the test's statistic and p-value, and the
    Benjamini–Hochberg q-value over this contrast's features (NaN where the test is undefined,
    e.g. both groups constant)."""

    numerator: str
    denominator: str
    mean_numerator: np.ndarray
    mean_denominator: np.ndarray
    fold_change: np.ndarray
    log2_fold_change: np.ndarray
    cohens_d: np.ndarray
    statistic: np.ndarray
    p_value: np.ndarray
    q_value: np.ndarray
    significant: np.ndarray

    @property
    def name(self) -> str:
        return f"{self.numerator} vs {self.denominator}"


@dataclass(frozen=True)
class StudyComparison:
    """Every contrast of a study, on the features ``mz``; ``test`` names the test used."""

    mz: np.ndarray
    contrasts: tuple[ContrastResult, ...]
    test: str

    def table(self):  # -> pandas.DataFrame; pandas imported only here
        """One row per feature and contrast: the columns of ``ContrastResult`` and ``mz``."""
        import pandas as pd

        frames = []
        for c in self.contrasts:
            frames.append(
                pd.DataFrame(
                    {
                        "contrast": c.name,
                        "feature": np.arange(self.mz.size),
                        "mz": self.mz,
                        "mean_numerator": c.mean_numerator,
                        "mean_denominator": c.mean_denominator,
                        "fold_change": c.fold_change,
                        "log2_fold_change": c.log2_fold_change,
                        "cohens_d": c.cohens_d,
                        "statistic": c.statistic,
                        "p_value": c.p_value,
                        "q_value": c.q_value,
                        "significant": c.significant,
                    }
                )
            )
        return pd.concat(frames, ignore_index=True)


def benjamini_hochberg(p_values: np.ndarray) -> np.ndarray:
    """Benjamini–Hochberg q-values; NaN p-values stay NaN and do not count as tests."""
    p = np.asarray(p_values, dtype=np.float64)
    q = np.full(p.shape, np.nan)
    finite = np.isfinite(p)
    if finite.any():
        q[finite] = scipy.stats.false_discovery_control(p[finite], method="bh")
    return q


def _contrasts(groups: np.ndarray, params: StudyParameters) -> tuple[tuple[str, str], ...]:
    names = sorted(set(groups.tolist()))
    pairs = params.contrast_pairs() or tuple((g, names[0]) for g in names[1:])
    for i, (a, b) in enumerate(pairs):
        for g in (a, b):
            if g not in names:
                raise StudyError(
                    f"study.contrasts[{i}]: no measurement is in group {g!r} "
                    f"(groups: {', '.join(map(repr, names))})"
                )
    if not pairs:
        raise StudyError(f"a comparison needs at least two groups, got {names}")
    return pairs


def _mann_whitney(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Two-sided Mann–Whitney U per column, choosing the method per feature as scipy's "auto"
    does per call (exact for small groups without ties, else the normal approximation): one
    tied feature must not turn every other feature's test approximate."""
    statistic = np.full(x.shape[1], np.nan)
    p = np.full(x.shape[1], np.nan)
    combined = np.sort(np.concatenate([x, y]), axis=0)
    tied = np.any(np.diff(combined, axis=0) == 0, axis=0)
    small = min(x.shape[0], y.shape[0]) <= 8
    for columns, method in ((~tied, "exact" if small else "asymptotic"), (tied, "asymptotic")):
        if columns.any():
            result = scipy.stats.mannwhitneyu(
                x[:, columns], y[:, columns], axis=0, alternative="two-sided", method=method
            )
            statistic[columns], p[columns] = result.statistic, result.pvalue
    return statistic, p


def compare_groups(
    values: np.ndarray,
    groups: Sequence[str],
    feature_mz: np.ndarray,
    params: StudyParameters | None = None,
) -> StudyComparison:
    """Per feature and contrast, the statistics of :class:`ContrastResult`.

    ``values``: measurements × features (``measurement_means(...).mean`` stacked); ``groups``:
    each measurement's group label. Every group in a contrast needs at least 2 measurements.
    """
    params = params or StudyParameters()
    values = np.asarray(values, dtype=np.float64)
    labels = np.asarray([str(g) for g in groups])
    feature_mz = np.asarray(feature_mz, dtype=np.float64)
    if values.ndim != 2 or values.shape != (labels.size, feature_mz.size):
        raise StudyError(
            f"values must be measurements × features = ({labels.size}, {feature_mz.size}), "
            f"got {values.shape}"
        )
    tested = values
    if params.transform == "log2":
        positive = values[values > 0]
        offset = 0.5 * float(positive.min()) if positive.size else 1.0
        tested = np.log2(np.maximum(values, 0) + offset)
    results = []
    for a, b in _contrasts(labels, params):
        x, y = values[labels == a], values[labels == b]
        tx, ty = tested[labels == a], tested[labels == b]
        for name, block in ((a, x), (b, y)):
            if block.shape[0] < 2:
                raise StudyError(
                    f"group {name!r} has {block.shape[0]} measurement; a test needs at least "
                    f"2 per group (the measurements are the replicates, not the pixels)"
                )
        with warnings.catch_warnings(), np.errstate(divide="ignore", invalid="ignore"):
            warnings.simplefilter("ignore", RuntimeWarning)
            mean_a, mean_b = x.mean(axis=0), y.mean(axis=0)
            fold = mean_a / mean_b
            var_a, var_b = tx.var(axis=0, ddof=1), ty.var(axis=0, ddof=1)
            n_a, n_b = x.shape[0], y.shape[0]
            pooled = np.sqrt(((n_a - 1) * var_a + (n_b - 1) * var_b) / (n_a + n_b - 2))
            d = (tx.mean(axis=0) - ty.mean(axis=0)) / pooled
            if params.test == "welch":
                result = scipy.stats.ttest_ind(tx, ty, axis=0, equal_var=False)
                statistic = np.asarray(result.statistic, dtype=np.float64)
                p = np.asarray(result.pvalue, dtype=np.float64)
            else:
                statistic, p = _mann_whitney(tx, ty)
            if params.test == "mann_whitney":  # all values tied: no evidence either way
                tied = (tx.min(axis=0) == tx.max(axis=0)) & (tx.min(axis=0) == ty.min(axis=0))
                p = np.where(tied & (ty.min(axis=0) == ty.max(axis=0)), np.nan, p)
            log2_fold = np.log2(fold)
        q = benjamini_hochberg(p)
        results.append(
            ContrastResult(
                numerator=a,
                denominator=b,
                mean_numerator=mean_a,
                mean_denominator=mean_b,
                fold_change=fold,
                log2_fold_change=log2_fold,
                cohens_d=d,
                statistic=statistic,
                p_value=p,
                q_value=q,
                significant=np.nan_to_num(q, nan=1.0) <= params.max_q,
            )
        )
    return StudyComparison(mz=feature_mz, contrasts=tuple(results), test=params.test)


@dataclass(frozen=True)
class PCAResult:
    """PCA of the measurements: ``scores`` measurements × components, ``loadings`` components ×
    features, ``explained_variance_ratio`` per component (of the total variance)."""

    scores: np.ndarray
    loadings: np.ndarray
    explained_variance_ratio: np.ndarray


def pca(values: np.ndarray, n_components: int = 2, log: bool = True) -> PCAResult:
    """PCA of measurements × features by SVD of the centred matrix.

    With ``log`` (default) the values are ``log2(1 + v / m)``, ``m`` the median positive value,
    so a feature's fold changes weigh the same whatever its abundance and zeros stay finite.
    Each component's sign is fixed so that its largest loading is positive (reproducible).
    """
    x = np.asarray(values, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] < 2:
        raise StudyError(f"PCA needs a measurements × features matrix of ≥ 2 rows, got {x.shape}")
    if not np.all(np.isfinite(x)):
        raise StudyError("PCA needs finite values (a measurement without usable pixels?)")
    if log:
        positive = x[x > 0]
        scale = float(np.median(positive)) if positive.size else 1.0
        x = np.log2(1.0 + np.maximum(x, 0) / scale)
    x = x - x.mean(axis=0)
    u, s, vt = np.linalg.svd(x, full_matrices=False)
    k = min(n_components, s.size)
    sign = np.sign(vt[np.arange(k), np.argmax(np.abs(vt[:k]), axis=1)])
    sign[sign == 0] = 1.0
    variance = s**2
    total = variance.sum()
    ratio = variance[:k] / total if total > 0 else np.zeros(k)
    return PCAResult(
        scores=u[:, :k] * s[:k] * sign,
        loadings=vt[:k] * sign[:, None],
        explained_variance_ratio=ratio,
    )
