"""Quality control: per-spectrum metrics, mean spectrum, TIC image, lock-mass accuracy, and a
summary that answers "is this measurement good enough to analyse further?".

Everything here works chunk by chunk: per-spectrum metrics of consecutive chunks are concatenated
in file order (``concatenate_metrics``), mean-spectrum accumulators are merged
(``MeanSpectrumAccumulator.merge``), and the summary is computed once from the merged values.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from em2q_msi import finite_json
from em2q_msi.geometry import PixelGrid
from em2q_msi.ion_images import ion_images
from em2q_msi.parameters import (
    PeakPickingParameters,
    ProcessingParameters,
    QCParameters,
)
from em2q_msi.peaks import pick_peaks
from em2q_msi.preprocess import _Chain, _run_chain
from em2q_msi.spectra import SpectraBlock

METRIC_NAMES = (
    "tic",
    "base_peak_mz",
    "base_peak_intensity",
    "n_nonzero",
    "n_peaks",
    "noise",
    "snr",
)


#: bins of the mean spectrum of processed-mode data (ppm wide)
MEAN_SPECTRUM_BIN_PPM = 5.0
#: m/z values a binned mean-spectrum accumulator bins at once
_BIN_SLICE = 1 << 20


class QCError(ValueError):
    """QC inputs that do not fit together (different m/z axes, missing metrics)."""


def spectrum_metrics(
    block: SpectraBlock, params: ProcessingParameters | None = None
) -> dict[str, np.ndarray]:
    """Per-spectrum metrics, each an array of ``len(block)`` values in file order.

    ``tic`` (the correctly rounded float64 sum of the raw intensities, as ``math.fsum``: the
    same for either layout and any chunking), ``base_peak_mz``/``base_peak_intensity`` (raw
    maximum; NaN/0 for an empty spectrum), ``n_nonzero``; and, after the parameter set's smoothing
    and baseline removal (normalisation does not change them), ``n_peaks``, ``noise`` (intensity
    units) and ``snr`` (the highest peak SNR, 0 without peaks, NaN where the noise estimate is 0:
    an SNR over zero noise is not a number, e.g. count data whose positive values are equal).
    """
    from em2q_msi import _kernels as K  # numba: loaded when a kernel first runs

    params = params or ProcessingParameters()
    n = len(block)
    if block.offsets is None:
        intensity = block.rows(_kernel_dtype(block.intensity))
        tic = np.zeros(n, np.float64)
        K.over_spectra(n, lambda a, b: K.exact_row_sums(intensity[a:b], tic[a:b]))
        arg = intensity.argmax(axis=1) if intensity.shape[1] else np.zeros(n, np.int64)
        base_int = intensity[np.arange(n), arg].astype(np.float64) if intensity.shape[1] else tic
        base_mz = (
            np.asarray(block.mz, dtype=np.float64)[arg] if intensity.shape[1] else tic + np.nan
        )
        n_nonzero = np.count_nonzero(intensity, axis=1).astype(np.int64)
    else:
        values = _kernel_values(block.intensity)
        offsets = np.asarray(block.offsets, dtype=np.int64)
        tic, arg, n_nonzero = np.zeros(n), np.full(n, -1, np.int64), np.zeros(n, np.int64)
        K.over_spectra(
            n,
            lambda a, b: K.basic_metrics_ragged(
                values, offsets[a : b + 1], tic[a:b], arg[a:b], n_nonzero[a:b]
            ),
        )
        found = arg >= 0
        safe = np.where(found, arg, 0)
        mz = np.asarray(block.mz, dtype=np.float64)
        base_mz = np.where(found, mz[safe] if mz.size else np.nan, np.nan)
        values = np.asarray(block.intensity, dtype=np.float64)
        base_int = np.where(found, values[safe] if values.size else 0.0, 0.0)
    chain = _Chain(
        smoothing=params.smoothing, baseline=params.baseline, peak_picking=params.peak_picking
    )
    result = _run_chain(block, chain, keep_spectra=False)
    offsets = np.concatenate(([0], np.cumsum(result.counts)))
    snr = np.zeros(n, np.float64)
    has = result.counts > 0
    if has.any():
        snr[has] = np.maximum.reduceat(result.peak_snr.astype(np.float64), offsets[:-1][has])
    snr[has & ~(np.asarray(result.noise, dtype=np.float64) > 0)] = np.nan
    return {
        "tic": tic,
        "base_peak_mz": base_mz,
        "base_peak_intensity": base_int,
        "n_nonzero": n_nonzero,
        "n_peaks": result.counts.astype(np.int64),
        "noise": result.noise,
        "snr": snr,
    }


def total_ion_current(block: SpectraBlock) -> np.ndarray:
    """Per-spectrum TIC, exactly as ``spectrum_metrics`` computes it (correctly rounded float64
    sums), without the preprocessing chain: for TIC images of raw chunks."""
    from em2q_msi import _kernels as K  # numba: loaded when a kernel first runs

    n = len(block)
    tic = np.zeros(n, np.float64)
    if block.offsets is None:
        intensity = block.rows(_kernel_dtype(block.intensity))
        K.over_spectra(n, lambda a, b: K.exact_row_sums(intensity[a:b], tic[a:b]))
        return tic
    values = _kernel_values(block.intensity)
    offsets = np.asarray(block.offsets, dtype=np.int64)
    arg, n_nonzero = np.full(n, -1, np.int64), np.zeros(n, np.int64)
    K.over_spectra(
        n,
        lambda a, b: K.basic_metrics_ragged(
            values, offsets[a : b + 1], tic[a:b], arg[a:b], n_nonzero[a:b]
        ),
    )
    return tic


def _kernel_dtype(values: np.ndarray) -> np.dtype:
    """The dtype the numba kernels read ``values`` in: 16-bit floats (which numba lacks) as
    32-bit floats, exactly; every other type as it is."""
    dtype = np.asarray(values).dtype
    return np.dtype(np.float32) if dtype == np.float16 else dtype


def _kernel_values(values: np.ndarray) -> np.ndarray:
    return np.asarray(values, dtype=_kernel_dtype(values))


def empty_metrics() -> dict[str, np.ndarray]:
    """The metrics of zero spectra (an empty chunk), with the dtypes ``spectrum_metrics`` gives."""
    ints = {"n_nonzero", "n_peaks"}
    return {k: np.zeros(0, np.int64 if k in ints else np.float64) for k in METRIC_NAMES}


def concatenate_metrics(parts: Sequence[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Metrics of consecutive chunks (given in file order) as one set; no parts (an empty
    chunk read in no blocks) give the metrics of zero spectra."""
    if not parts:
        return empty_metrics()
    keys = set(parts[0])
    for i, part in enumerate(parts):
        if set(part) != keys:
            raise QCError(f"chunk {i} has metrics {sorted(part)}, chunk 0 has {sorted(keys)}")
    return {k: np.concatenate([np.asarray(p[k]) for p in parts]) for k in parts[0]}


def region_summary(metrics: dict[str, np.ndarray]) -> dict[str, float | int]:
    """The QC numbers of a region (a ROI, a segment) from its spectra's
    :func:`spectrum_metrics`: pixel count, median and mean TIC, median SNR (spectra whose SNR
    is not a number left out; NaN when none has one), median peak count and the fraction of
    empty spectra."""
    tic = np.asarray(metrics["tic"], dtype=np.float64)
    snr = np.asarray(metrics["snr"], dtype=np.float64)
    finite_snr = snr[np.isfinite(snr)]
    count = int(tic.size)
    if count == 0:
        raise QCError("a region without spectra has no QC numbers")
    return {
        "pixels": count,
        "tic_median": float(np.median(tic)),
        "tic_mean": float(np.mean(tic)),
        "median_snr": float(np.median(finite_snr)) if finite_snr.size else float("nan"),
        "median_peaks": float(np.median(metrics["n_peaks"])),
        "empty_fraction": float(np.mean(np.asarray(metrics["n_nonzero"]) == 0)),
    }


def tic_image(
    coordinates: np.ndarray, tic: np.ndarray, grid: PixelGrid | tuple[int, ...]
) -> np.ndarray:
    """TIC per pixel on ``grid`` (its ``image_shape``); NaN where no spectrum was acquired."""
    return ion_images(coordinates, np.asarray(tic, dtype=np.float64), grid)


def ppm_bin_edges(mz_min: float, mz_max: float, bin_ppm: float) -> np.ndarray:
    """Geometric bin edges from ``mz_min`` to at least ``mz_max``, each bin ``bin_ppm`` wide."""
    if not (0 < mz_min < mz_max) or not bin_ppm > 0:
        raise QCError(
            f"need 0 < mz_min < mz_max and bin_ppm > 0, got {mz_min}, {mz_max}, {bin_ppm}"
        )
    step = math.log1p(bin_ppm * 1e-6)
    n_bins = math.ceil(math.log(mz_max / mz_min) / step) + 1
    return mz_min * np.exp(step * np.arange(n_bins + 1))


@dataclass
class MeanSpectrumAccumulator:
    """Running sum of spectra, for a mean spectrum computed chunk by chunk and merged.

    Two modes. Without ``edges`` (``MeanSpectrumAccumulator()``), continuous blocks are summed on
    their shared m/z axis, which must be the same for every block. With ``edges`` (made by
    ``MeanSpectrumAccumulator.binned(mz_min, mz_max, bin_ppm)``), every intensity is added to the
    fixed-ppm bin its m/z falls in, which works for processed blocks (and for continuous ones);
    the result's m/z is the bins' geometric centres, and points outside the edges are dropped.
    The mean is over spectra: ``sum / n_spectra``.
    """

    edges: np.ndarray | None = None
    mz: np.ndarray | None = None
    total: np.ndarray | None = None
    n_spectra: int = 0
    _kind: str = field(default="shared", repr=False)

    @classmethod
    def binned(cls, mz_min: float, mz_max: float, bin_ppm: float = 5.0) -> MeanSpectrumAccumulator:
        edges = ppm_bin_edges(mz_min, mz_max, bin_ppm)
        centres = np.sqrt(edges[:-1] * edges[1:])
        return cls(edges=edges, mz=centres, total=np.zeros(centres.size), _kind="binned")

    @classmethod
    def for_measurement(
        cls, mode: str, mz_range: tuple[float, float] | Sequence[float]
    ) -> MeanSpectrumAccumulator:
        """The one mean-spectrum set-up of the platform (asset, step CLI, notebook client):
        continuous data on its own m/z axis; processed data on :data:`MEAN_SPECTRUM_BIN_PPM`
        bins over the measurement's m/z range, widened by 1 ppm each side so its extreme
        values fall inside."""
        if mode == "continuous":
            return cls()
        low, high = (float(v) for v in mz_range)
        return cls.binned(low * (1 - 1e-6), high * (1 + 1e-6), MEAN_SPECTRUM_BIN_PPM)

    def add(self, block: SpectraBlock) -> MeanSpectrumAccumulator:
        """Add a block's spectra (in place); returns self."""
        if self.edges is None:
            if block.offsets is not None:
                raise QCError(
                    "a processed block needs a binned accumulator: "
                    "MeanSpectrumAccumulator.binned(mz_min, mz_max, bin_ppm)"
                )
            block_sum = block.rows().sum(axis=0, dtype=np.float64)
            if self.mz is None:
                self.mz = np.asarray(block.mz, dtype=np.float64).copy()
                self.total = np.zeros(self.mz.size)
            elif self.mz.shape != block.mz.shape or not np.array_equal(self.mz, block.mz):
                raise QCError("blocks have different m/z axes; use a binned accumulator")
            self.total += block_sum  # type: ignore[operator]
        else:
            if block.offsets is None:
                mz = block.mz
                values = block.rows().sum(axis=0, dtype=np.float64)
            else:
                mz, values = block.mz, block.intensity
            # in slices: binning takes ~40 bytes of temporaries per value (bin index, mask,
            # float64 weights), 3x a processed block's own size if done at once
            for a in range(0, len(mz), _BIN_SLICE):
                m = np.asarray(mz[a : a + _BIN_SLICE], dtype=np.float64)
                index = np.searchsorted(self.edges, m, side="right") - 1
                inside = (index >= 0) & (index < self.total.size)  # type: ignore[union-attr]
                weights = np.asarray(values[a : a + _BIN_SLICE], dtype=np.float64)[inside]
                self.total += np.bincount(  # type: ignore[operator]
                    index[inside], weights=weights, minlength=self.total.size
                )
        self.n_spectra += len(block)
        return self

    def merge(self, other: MeanSpectrumAccumulator) -> MeanSpectrumAccumulator:
        """A new accumulator holding both (e.g. two chunks); axes must be equal."""
        if other.total is None:
            return self._copy()
        if self.total is None:
            return other._copy()
        same = self._kind == other._kind and np.array_equal(self.mz, other.mz)
        if not same:
            raise QCError("cannot merge accumulators with different m/z axes")
        merged = self._copy()
        merged.total = self.total + other.total
        merged.n_spectra = self.n_spectra + other.n_spectra
        return merged

    def _copy(self) -> MeanSpectrumAccumulator:
        return MeanSpectrumAccumulator(
            edges=self.edges,
            mz=self.mz,
            total=None if self.total is None else self.total.copy(),
            n_spectra=self.n_spectra,
            _kind=self._kind,
        )

    def result(self) -> tuple[np.ndarray, np.ndarray]:
        """``(mz, mean intensity)`` over all spectra added."""
        if self.total is None or self.mz is None or self.n_spectra == 0:
            raise QCError("no spectra were added to the mean-spectrum accumulator")
        return self.mz, self.total / self.n_spectra

    def state(self) -> dict[str, np.ndarray]:
        """Arrays that ``from_state`` restores (e.g. saved per chunk with ``np.savez``)."""
        if self.total is None or self.mz is None:
            raise QCError("empty accumulator has no state")
        out = {"mz": self.mz, "total": self.total, "n_spectra": np.array(self.n_spectra)}
        if self.edges is not None:
            out["edges"] = self.edges
        return out

    @classmethod
    def from_state(cls, state: dict[str, np.ndarray]) -> MeanSpectrumAccumulator:
        edges = state.get("edges")
        return cls(
            edges=None if edges is None else np.asarray(edges),
            mz=np.asarray(state["mz"]),
            total=np.asarray(state["total"], dtype=np.float64).copy(),
            n_spectra=int(np.asarray(state["n_spectra"]).reshape(-1)[0]),
            _kind="shared" if edges is None else "binned",
        )


def mean_spectrum_peaks(
    mz: np.ndarray, intensity: np.ndarray, params: PeakPickingParameters | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """``(peak m/z, peak intensity)`` of a mean spectrum (no smoothing or baseline removal)."""
    block = SpectraBlock(
        mz=np.asarray(mz, dtype=np.float64),
        intensity=np.asarray(intensity, dtype=np.float32)[None, :],
        offsets=None,
        coordinates=np.zeros((1, 3), np.int64),
    )
    peaks = pick_peaks(block, params)
    return peaks.mz, peaks.intensity


def lock_mass_errors_ppm(
    peak_mz: np.ndarray, lock_masses: Sequence[float], search_ppm: float = 50.0
) -> np.ndarray:
    """ppm error ``(observed − expected) / expected × 1e6`` of the peak nearest each lock mass.

    NaN where no peak lies within ``search_ppm`` of the lock mass.
    """
    peaks = np.sort(np.asarray(peak_mz, dtype=np.float64))
    locks = np.asarray(lock_masses, dtype=np.float64)
    if peaks.size == 0:
        return np.full(locks.shape, np.nan)
    j = np.clip(np.searchsorted(peaks, locks), 1, max(peaks.size - 1, 1))
    left = peaks[j - 1]
    right = peaks[np.minimum(j, peaks.size - 1)]
    nearest = np.where(np.abs(left - locks) <= np.abs(right - locks), left, right)
    errors = (nearest - locks) / locks * 1e6
    return np.where(np.abs(errors) <= search_ppm, errors, np.nan)


@dataclass(frozen=True)
class QCCheck:
    """One check of the summary. ``passed`` is None when the check does not apply or cannot be
    computed; ``value`` is then None and ``detail`` starts with "n/a:" and says why."""

    name: str
    value: float | None
    threshold: float
    comparison: str  # ">=" or "<="
    passed: bool | None
    detail: str = ""


@dataclass(frozen=True)
class PixelCounts:
    """Pixels of the grid (the bounding box of the acquired coordinates): ``not_acquired`` lie
    outside the scanned outline (not a defect); ``acquired_without_signal`` were scanned and
    gave an empty spectrum (a defect)."""

    grid: int
    acquired: int
    not_acquired: int
    acquired_without_signal: int


@dataclass(frozen=True)
class QCSummary:
    """The verdict (``ok``: every applicable check passed) and the checks behind it."""

    ok: bool
    n_spectra: int
    checks: tuple[QCCheck, ...]
    pixels: PixelCounts | None = None

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON types; a non-finite number is None (its check's detail says why)."""
        return finite_json.clean(asdict(self))

    def to_json(self) -> str:
        return finite_json.dumps(self.to_dict())


def _check(
    name: str,
    value: float | None,
    threshold: float,
    comparison: str,
    detail: str,
    not_computable: str = "the value is not a finite number",
) -> QCCheck:
    """A check from its value; a missing or non-finite value gives an "n/a" check (passed
    None) whose detail is ``not_computable``."""
    number = finite_json.finite_or_none(value)
    if number is None:
        return QCCheck(name, None, threshold, comparison, None, f"n/a: {not_computable}")
    passed = number >= threshold if comparison == ">=" else number <= threshold
    return QCCheck(name, number, threshold, comparison, bool(passed), detail)


def measurement_summary(
    metrics: dict[str, np.ndarray],
    grid: PixelGrid | tuple[int, ...],
    lock_mass_errors: np.ndarray | None = None,
    params: QCParameters | None = None,
) -> QCSummary:
    """Is the measurement good enough to analyse further? Checks, each with value and threshold:

    ``tic_coverage`` (fraction of spectra with TIC ≥ ``low_tic_fraction`` × median TIC; n/a when
    the median TIC is 0), ``median_snr`` (median over spectra of the base-peak SNR, leaving out
    spectra whose noise is 0; n/a when none is left), ``empty_pixel_fraction`` (acquired pixels
    whose spectrum is empty, over acquired pixels: grid pixels outside the scanned outline are
    not acquired, not empty), ``lock_mass_error_ppm`` (largest absolute error of the lock masses;
    fails if one is not found; n/a without lock masses). ``grid`` is the measurement's
    ``PixelGrid`` (every spectrum is one acquired pixel of it).
    """
    params = params or QCParameters()
    missing = {"tic", "snr", "n_nonzero"} - set(metrics)
    if missing:
        raise QCError(f"metrics lack {sorted(missing)}")
    tic = np.asarray(metrics["tic"], dtype=np.float64)
    n = int(tic.size)
    n_grid = PixelGrid.coerce(grid).n_pixels
    median_tic = float(np.median(tic)) if n else math.nan
    coverage = (
        float(np.mean(tic >= params.low_tic_fraction * median_tic)) if median_tic > 0 else None
    )
    snr = np.asarray(metrics["snr"], dtype=np.float64)
    finite_snr = snr[np.isfinite(snr)]
    median_snr = float(np.median(finite_snr)) if finite_snr.size else None
    left_out = n - int(finite_snr.size)
    non_empty = int(np.count_nonzero(np.asarray(metrics["n_nonzero"]) > 0))
    pixels = PixelCounts(
        grid=n_grid,
        acquired=n,
        not_acquired=max(n_grid - n, 0),
        acquired_without_signal=n - non_empty,
    )
    checks = [
        _check(
            "tic_coverage",
            coverage,
            params.min_tic_coverage,
            ">=",
            f"fraction of spectra with TIC >= {params.low_tic_fraction} x median TIC "
            f"({median_tic:.6g})",
            "no spectra"
            if n == 0
            else "the median TIC is 0 (most spectra are empty): no TIC to compare against",
        ),
        _check(
            "median_snr",
            median_snr,
            params.min_median_snr,
            ">=",
            "median base-peak SNR"
            + (
                f" over {finite_snr.size} of {n} spectra ({left_out} with zero noise, whose SNR "
                "is not a number, left out)"
                if left_out
                else ""
            ),
            "no spectra"
            if n == 0
            else f"the noise estimate is 0 in all {n} spectra with peaks (e.g. count data or "
            "centroids whose positive intensities are equal): SNR is not computable",
        ),
        _check(
            "empty_pixel_fraction",
            pixels.acquired_without_signal / n if n else None,
            params.max_empty_pixel_fraction,
            "<=",
            f"{pixels.acquired_without_signal} of {n} acquired pixels without signal; "
            f"{pixels.not_acquired} of {n_grid} grid pixels not acquired (outside the scanned "
            "area, not counted)",
            "no pixel was acquired",
        ),
    ]
    if params.lock_masses:
        errors = (
            np.full(len(params.lock_masses), np.nan)
            if lock_mass_errors is None
            else np.asarray(lock_mass_errors, dtype=np.float64)
        )
        detail = ", ".join(
            f"{m:g}: {'not found' if np.isnan(e) else f'{e:+.2f} ppm'}"
            for m, e in zip(params.lock_masses, errors, strict=True)
        )
        if np.isnan(errors).any():  # a lock mass that is not there is a defect, not "n/a"
            checks.append(
                QCCheck(
                    "lock_mass_error_ppm", None, params.max_lock_mass_error_ppm, "<=", False, detail
                )
            )
        else:
            worst = float(np.max(np.abs(errors)))
            checks.append(
                _check("lock_mass_error_ppm", worst, params.max_lock_mass_error_ppm, "<=", detail)
            )
    else:
        checks.append(
            QCCheck(
                "lock_mass_error_ppm",
                None,
                params.max_lock_mass_error_ppm,
                "<=",
                None,
                "n/a: no lock masses in the parameter set",
            )
        )
    ok = all(c.passed for c in checks if c.passed is not None)
    return QCSummary(ok=ok, n_spectra=n, checks=tuple(checks), pixels=pixels)
