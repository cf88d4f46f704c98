"""One measurement under two parameter sets: what changed in its peak table.

Features of the two peak tables (``A``, ``B``; features × spectra, the same spectra) are
paired one to one within ``± tolerance_ppm``: every candidate pair inside the window, the
closest first, each feature used once (so a split or merged peak leaves one side unpaired).
From the pairs:

* **gained** (features only in ``B``) and **lost** (only in ``A``) m/z;
* **overlap**: paired / (features of A + features of B − paired) (Jaccard index of the peak
  lists), plus the share of each list that was paired;
* **ion-image correlation** per pair: Pearson's r of the two features' intensities over the
  spectra (NaN where one image is constant, e.g. absent everywhere);
* **TIC ratio**: total intensity of ``B`` over ``A``, and the median of the per-spectrum ratios
  (spectra where ``A`` has signal).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


class ParameterDiffError(ValueError):
    """Two peak tables that cannot be compared (different spectra, a bad tolerance)."""


@dataclass(frozen=True)
class ParameterSetDiff:
    """What changed from parameter set ``A`` to ``B`` (m/z in Th, ppm of A's m/z)."""

    #: paired features: their m/z under A and B, the ppm shift and the images' correlation
    paired_mz_a: np.ndarray
    paired_mz_b: np.ndarray
    ppm_error: np.ndarray
    correlation: np.ndarray
    gained_mz: np.ndarray
    lost_mz: np.ndarray
    features_a: int
    features_b: int
    tic_ratio: float
    pixel_tic_ratio_median: float
    tolerance_ppm: float

    @property
    def paired(self) -> int:
        return int(self.paired_mz_a.size)

    @property
    def overlap(self) -> float:
        """Jaccard index of the two peak lists (1: the same features, 0: none shared)."""
        union = self.features_a + self.features_b - self.paired
        return self.paired / union if union else 1.0

    @property
    def kept_fraction_a(self) -> float:
        return self.paired / self.features_a if self.features_a else 1.0

    @property
    def kept_fraction_b(self) -> float:
        return self.paired / self.features_b if self.features_b else 1.0

    @property
    def median_correlation(self) -> float:
        finite = self.correlation[np.isfinite(self.correlation)]
        return float(np.median(finite)) if finite.size else float("nan")

    def summary(self) -> dict[str, float | int]:
        return {
            "features_a": self.features_a,
            "features_b": self.features_b,
            "paired": self.paired,
            "gained": int(self.gained_mz.size),
            "lost": int(self.lost_mz.size),
            "overlap": self.overlap,
            "kept_fraction_a": self.kept_fraction_a,
            "kept_fraction_b": self.kept_fraction_b,
            "median_correlation": self.median_correlation,
            "tic_ratio": self.tic_ratio,
            "pixel_tic_ratio_median": self.pixel_tic_ratio_median,
            "tolerance_ppm": self.tolerance_ppm,
        }


def pair_features(
    mz_a: np.ndarray, mz_b: np.ndarray, tolerance_ppm: float
) -> tuple[np.ndarray, np.ndarray]:
    """Indices ``(ia, ib)`` of one-to-one pairs within ``± tolerance_ppm`` (of A's m/z),
    closest pairs first; each feature in at most one pair. Sorted by ``ia``."""
    if not (np.isfinite(tolerance_ppm) and 0 < tolerance_ppm <= 1e4):
        raise ParameterDiffError(f"tolerance_ppm must be within (0, 10000], got {tolerance_ppm}")
    a = np.asarray(mz_a, np.float64)
    b = np.asarray(mz_b, np.float64)
    order_b = np.argsort(b, kind="stable")
    sorted_b = b[order_b]
    half = a * tolerance_ppm * 1e-6
    start = np.searchsorted(sorted_b, a - half, side="left")
    stop = np.searchsorted(sorted_b, a + half, side="right")
    counts = stop - start
    cand_a = np.repeat(np.arange(a.size), counts)
    offsets = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)
    cand_b = order_b[np.repeat(start, counts) + offsets]
    distance = np.abs(b[cand_b] - a[cand_a]) / a[cand_a]
    used_a = np.zeros(a.size, bool)
    used_b = np.zeros(b.size, bool)
    keep_a, keep_b = [], []
    for k in np.argsort(distance, kind="stable"):
        i, j = cand_a[k], cand_b[k]
        if not used_a[i] and not used_b[j]:
            used_a[i] = used_b[j] = True
            keep_a.append(i)
            keep_b.append(j)
    ia, ib = np.asarray(keep_a, np.int64), np.asarray(keep_b, np.int64)
    order = np.argsort(ia, kind="stable")
    return ia[order], ib[order]


def _rows(matrix, index: np.ndarray) -> np.ndarray:
    """Dense rows of a features × spectra matrix (dense array or scipy.sparse)."""
    picked = matrix[index]
    return np.asarray(picked.toarray() if hasattr(picked, "toarray") else picked, np.float64)


def _column_sums(matrix) -> np.ndarray:
    return np.asarray(matrix.sum(axis=0), np.float64).ravel()


def row_correlations(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Pearson's r of each row of ``x`` with the same row of ``y`` (NaN: a constant row)."""
    xc = x - x.mean(axis=1, keepdims=True)
    yc = y - y.mean(axis=1, keepdims=True)
    denominator = np.sqrt((xc * xc).sum(axis=1) * (yc * yc).sum(axis=1))
    with np.errstate(invalid="ignore", divide="ignore"):
        r = (xc * yc).sum(axis=1) / denominator
    return np.where(denominator > 0, r, np.nan)


def parameter_set_diff(
    mz_a: np.ndarray,
    intensities_a,
    mz_b: np.ndarray,
    intensities_b,
    *,
    tolerance_ppm: float = 5.0,
    tic_a: np.ndarray | None = None,
    tic_b: np.ndarray | None = None,
    block_features: int = 4096,
) -> ParameterSetDiff:
    """Compare two peak tables of one measurement (see the module docstring).

    ``intensities_*``: features × spectra (dense or scipy.sparse), the same spectra in the
    same order. ``tic_*``: per-spectrum TIC of each set's spectra; default: the column sums of
    the peak tables. Correlations are computed ``block_features`` pairs at a time (memory).
    """
    mz_a, mz_b = np.asarray(mz_a, np.float64), np.asarray(mz_b, np.float64)
    if intensities_a.shape[0] != mz_a.size or intensities_b.shape[0] != mz_b.size:
        raise ParameterDiffError("each peak table needs one row per feature m/z")
    if intensities_a.shape[1] != intensities_b.shape[1]:
        raise ParameterDiffError(
            f"the peak tables cover different spectra ({intensities_a.shape[1]} and "
            f"{intensities_b.shape[1]}): not the same measurement"
        )
    ia, ib = pair_features(mz_a, mz_b, tolerance_ppm)
    correlation = np.empty(ia.size)
    for s in range(0, ia.size, block_features):
        rows_a = _rows(intensities_a, ia[s : s + block_features])
        rows_b = _rows(intensities_b, ib[s : s + block_features])
        correlation[s : s + block_features] = row_correlations(rows_a, rows_b)
    per_a = np.asarray(tic_a, np.float64) if tic_a is not None else _column_sums(intensities_a)
    per_b = np.asarray(tic_b, np.float64) if tic_b is not None else _column_sums(intensities_b)
    if per_a.shape != per_b.shape:
        raise ParameterDiffError("the TIC vectors cover different spectra")
    total_a = float(per_a.sum())
    signal = per_a > 0
    lost = np.ones(mz_a.size, bool)
    lost[ia] = False
    gained = np.ones(mz_b.size, bool)
    gained[ib] = False
    return ParameterSetDiff(
        paired_mz_a=mz_a[ia],
        paired_mz_b=mz_b[ib],
        ppm_error=(mz_b[ib] - mz_a[ia]) / mz_a[ia] * 1e6 if ia.size else np.zeros(0),
        correlation=correlation,
        gained_mz=mz_b[gained],
        lost_mz=mz_a[lost],
        features_a=int(mz_a.size),
        features_b=int(mz_b.size),
        tic_ratio=float(per_b.sum()) / total_a if total_a > 0 else float("nan"),
        pixel_tic_ratio_median=float(np.median(per_b[signal] / per_a[signal]))
        if signal.any()
        else float("nan"),
        tolerance_ppm=float(tolerance_ppm),
    )


__all__ = [
    "ParameterDiffError",
    "ParameterSetDiff",
    "pair_features",
    "parameter_set_diff",
    "row_correlations",
]
