"""Synthetic data for tests and benchmarks, deterministic for a given ``seed``.

* imzML datasets written with pyimzml's ``ImzMLWriter`` (:func:`write_imzml`): written by an
  independent implementation, so reading them back checks this reader against another one;
* spectra blocks with known truth (:func:`synthetic_continuous`: Gaussian peaks of known m/z
  and height on a baseline with noise; :func:`synthetic_processed`), for the processing steps;
* a study of centroided measurements in groups with planted differences, mass shifts and
  intensity scaling (:func:`synthetic_study`), for the study comparison;
* a section with three planted tissue regions, marker ions, noise and an intensity gradient
  (:func:`synthetic_regions`), for segmentation, ROIs and colocalisation.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import scipy.sparse as sp

from em2q_msi.spectra import SpectraBlock

if TYPE_CHECKING:  # peaks imports the numba kernels: only the study generator needs it
    from em2q_msi.peaks import PeakList


def pixel_coordinates(n_x: int, n_y: int, n_z: int | None = None) -> Iterator[tuple[int, ...]]:
    """1-based coordinates in row-major scan order (z outermost when given)."""
    for z in range(1, (n_z or 1) + 1):
        for y in range(1, n_y + 1):
            for x in range(1, n_x + 1):
                yield (x, y, z) if n_z else (x, y)


def continuous_spectra(
    n_spectra: int, n_bins: int, mz_lo: float = 100.0, mz_hi: float = 1000.0, seed: int = 0
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Profile spectra on one m/z axis: a few Gaussian peaks, scaled per pixel, on exponential
    noise (drawn from a pool of 16 rows, so multi-GB datasets generate at disk speed)."""
    rng = np.random.default_rng(seed)
    mz = np.linspace(mz_lo, mz_hi, n_bins)
    centres = rng.uniform(mz_lo, mz_hi, 12)
    base = np.zeros(n_bins)
    for c in centres:
        base += 50.0 * np.exp(-0.5 * ((mz - c) / 0.05) ** 2)
    noise = rng.exponential(1.0, (16, n_bins))
    scales = rng.uniform(0.5, 2.0, n_spectra)
    for i in range(n_spectra):
        yield mz, base * scales[i] + noise[(i * 7 + i // 16) % 16]


def processed_spectra(
    n_spectra: int,
    n_peaks: int,
    mz_lo: float = 100.0,
    mz_hi: float = 1000.0,
    seed: int = 0,
    n_ions: int = 0,
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Centroided spectra, each with its own sorted m/z array of about ``n_peaks`` values,
    one spectrum at a time (a generated file of any size streams through memory).

    ``n_ions``: that many of each spectrum's values are ions at m/z shared by every spectrum
    (within 1 ppm), 20–100× the mean noise intensity scaled per pixel, so peak picking, the
    peak table and QC's base-peak SNR find real features; the rest is noise (exponential
    intensities at uniform m/z). ``n_ions=0`` gives the noise-only spectra of earlier versions,
    value for value."""
    rng = np.random.default_rng(seed)
    ions = np.random.default_rng(seed + 1)
    ion_mz = np.sort(ions.uniform(mz_lo, mz_hi, n_ions))
    ion_height = ions.uniform(200.0, 1000.0, n_ions)
    for _ in range(n_spectra):
        k = max(1, int(n_peaks + rng.integers(-n_peaks // 10 - 1, n_peaks // 10 + 1)))
        mz = np.sort(rng.uniform(mz_lo, mz_hi, k))
        intensity = rng.exponential(10.0, k)
        if n_ions:
            m = min(n_ions, k)
            slots = np.linspace(0, k - 1, m).astype(np.int64)  # noise values spread over m/z
            mz[slots] = ion_mz[:m] * (1.0 + ions.normal(0.0, 1e-6, m))
            intensity[slots] = ion_height[:m] * ions.uniform(0.5, 1.5)
            order = np.argsort(mz, kind="stable")
            mz, intensity = mz[order], intensity[order]
        yield mz, intensity


def write_imzml(
    path: str | os.PathLike[str],
    *,
    mode: str = "continuous",
    n_x: int = 3,
    n_y: int = 3,
    n_z: int | None = None,
    n_values: int = 200,
    mz_dtype: type = np.float64,
    intensity_dtype: type = np.float32,
    seed: int = 0,
    polarity: str | None = None,
    n_ions: int = 0,
) -> str:
    """Write ``<path>.imzML`` + ``.ibd`` and return the .imzML path, streamed one spectrum at
    a time (memory stays one spectrum whatever the size).

    ``n_values`` is the number of bins (continuous) or the mean number of peaks (processed);
    ``n_ions`` the shared ions of processed spectra (:func:`processed_spectra`).
    Integer dtypes get intensities/m/z rounded by numpy's cast, as an instrument would store.
    """
    from pyimzml.ImzMLWriter import ImzMLWriter

    base = os.fspath(path)
    if base.lower().endswith(".imzml"):
        base = base[: -len(".imzml")]
    n = n_x * n_y * (n_z or 1)
    spectra = (
        continuous_spectra(n, n_values, seed=seed)
        if mode == "continuous"
        else processed_spectra(n, n_values, seed=seed, n_ions=n_ions)
    )
    with ImzMLWriter(
        base,
        mode=mode,
        mz_dtype=mz_dtype,
        intensity_dtype=intensity_dtype,
        polarity=polarity,
        spec_type="profile" if mode == "continuous" else "centroid",
    ) as writer:
        for coords, (mz, intensity) in zip(pixel_coordinates(n_x, n_y, n_z), spectra, strict=False):
            writer.addSpectrum(mz, intensity, coords)
    return base + ".imzML"


@dataclass(frozen=True)
class Synthetic:
    """Synthetic continuous spectra and the truth they were made from."""

    block: SpectraBlock
    peak_mz: np.ndarray  # (n_peaks,) true centres, m/z
    amplitudes: np.ndarray  # (n_spectra, n_peaks) true heights above the baseline
    noise_sigma: float


def grid_coordinates(n_spectra: int, nx: int) -> np.ndarray:
    """1-based ``(x, y, 1)`` positions of spectra laid out row by row on a grid ``nx`` wide."""
    i = np.arange(n_spectra)
    return np.stack([i % nx + 1, i // nx + 1, np.ones_like(i)], axis=1).astype(np.int64)


def synthetic_continuous(
    n_spectra: int = 20,
    n_bins: int = 20_000,
    mz_range: tuple[float, float] = (100.0, 1000.0),
    n_peaks: int = 150,
    fwhm_points: float = 6.0,
    noise_sigma: float = 1.0,
    seed: int = 0,
    nx: int | None = None,
) -> Synthetic:
    """Gaussian peaks (FWHM ``fwhm_points`` bins) on a decaying baseline with Gaussian noise.

    Peaks are at least 5 FWHM apart and 2 % of the range from the ends; heights 20–500 × ``noise_sigma``,
    varying per spectrum. Intensities are float32, clipped at zero like an instrument's.
    """
    rng = np.random.default_rng(seed)
    mz = np.linspace(*mz_range, n_bins)
    lo, hi = mz_range
    fwhm = fwhm_points * (hi - lo) / (n_bins - 1)
    centres: list[float] = []
    while len(centres) < n_peaks:
        c = rng.uniform(lo + 0.02 * (hi - lo), hi - 0.02 * (hi - lo))
        if all(abs(c - d) > 5 * fwhm for d in centres):
            centres.append(c)
    peak_mz = np.sort(np.array(centres))
    sigma = np.full(n_peaks, fwhm / 2.3548)
    rows, cols, vals = [], [], []
    for j, (c, s) in enumerate(zip(peak_mz, sigma, strict=True)):
        a, b = np.searchsorted(mz, [c - 6 * s, c + 6 * s])
        rows.append(np.full(b - a, j))
        cols.append(np.arange(a, b))
        vals.append(np.exp(-0.5 * ((mz[a:b] - c) / s) ** 2))
    profiles = sp.csr_array(
        (np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))),
        shape=(n_peaks, n_bins),
    )
    base_height = rng.uniform(20, 500, n_peaks) * noise_sigma
    amplitudes = base_height * rng.uniform(0.5, 1.5, (n_spectra, n_peaks))
    signal = np.asarray((sp.csr_array(amplitudes) @ profiles).todense(), dtype=np.float32)
    baseline = (20.0 * noise_sigma * np.exp(-(mz - lo) / (0.3 * (hi - lo)))).astype(np.float32)
    noise = rng.standard_normal((n_spectra, n_bins), dtype=np.float32) * np.float32(noise_sigma)
    intensity = np.maximum(signal + baseline + noise + np.float32(3 * noise_sigma), 0)
    block = SpectraBlock(
        mz, intensity.astype(np.float32), None, grid_coordinates(n_spectra, nx or n_spectra)
    )
    return Synthetic(block, peak_mz, amplitudes, noise_sigma)


def synthetic_processed(
    n_spectra: int = 20,
    points_per_spectrum: int = 6_000,
    mz_range: tuple[float, float] = (100.0, 1000.0),
    seed: int = 0,
    nx: int | None = None,
) -> SpectraBlock:
    """Processed-mode block: each spectrum has its own sorted random m/z array (float64)."""
    rng = np.random.default_rng(seed)
    mz = np.sort(rng.uniform(*mz_range, (n_spectra, points_per_spectrum)), axis=1)
    intensity = rng.exponential(10.0, (n_spectra, points_per_spectrum)).astype(np.float32)
    offsets = np.arange(n_spectra + 1, dtype=np.int64) * points_per_spectrum
    return SpectraBlock(
        mz.reshape(-1),
        intensity.reshape(-1),
        offsets,
        grid_coordinates(n_spectra, nx or n_spectra),
    )


@dataclass(frozen=True)
class SyntheticStudyTruth:
    """What a synthetic study was made from, to score the study comparison against.

    ``feature_mz`` (n_features,) the planted m/z, ascending; ``changed`` (n_features,) bool;
    ``fold`` (n_features,) the planted ratio of the last group's level to the first group's
    (1 where unchanged); ``groups`` (n_measurements,) each measurement's group label;
    ``scaling`` (n_measurements,) the factor every intensity of a measurement was multiplied by
    (instrument sensitivity, the thing normalisation must remove); ``mass_shift_ppm``
    (n_measurements,) each measurement's calibration error; ``level`` (n_measurements,
    n_features) the measurement's true expected intensity per pixel before ``scaling``;
    ``internal_standard_mz`` the m/z of a spiked standard at a constant level in every pixel
    (``None``: none), not one of the features.
    """

    feature_mz: np.ndarray
    changed: np.ndarray
    fold: np.ndarray
    groups: np.ndarray
    scaling: np.ndarray
    mass_shift_ppm: np.ndarray
    level: np.ndarray
    internal_standard_mz: float | None = None
    internal_standard_level: float = 0.0


@dataclass(frozen=True)
class SyntheticStudy:
    """A study of centroided MSI measurements with known truth; measurements are generated on
    demand (:meth:`measurement`), each from its own seed, so a benchmark never holds them all."""

    truth: SyntheticStudyTruth
    names: tuple[str, ...]
    n_pixels: int
    noise_peaks_per_pixel: int
    detection_probability: float
    mass_jitter_ppm: float
    pixel_cv: float
    pixel_common_cv: float
    mz_range: tuple[float, float]
    seed: int

    def __len__(self) -> int:
        return len(self.names)

    def measurement(self, i: int, block_pixels: int = 1_000) -> PeakList:
        """Measurement ``i``'s pixel peak lists (CSR layout, m/z ascending within each pixel).

        Each pixel holds each planted feature with probability ``detection_probability``, at
        ``feature_mz × (1 + (mass_shift_ppm + jitter) 1e-6)`` with intensity ``scaling × level ×
        pixel factor × lognormal(pixel_cv)`` (the pixel factor, lognormal(``pixel_common_cv``),
        is shared by all the pixel's peaks: its ionisation), plus the internal standard if any
        (always detected), plus ``noise_peaks_per_pixel`` peaks at uniform random m/z with
        exponential intensities (mean: the lowest feature level / 4, times ``scaling``).
        ``snr`` is the intensity over that noise mean. Pixels are generated ``block_pixels`` at
        a time, so memory stays at a block's worth beyond the result.
        """
        from em2q_msi.peaks import PeakList

        truth = self.truth
        rng = np.random.default_rng([self.seed, 1, i])
        feature_mz, level = truth.feature_mz, truth.level[i]
        if truth.internal_standard_mz is not None:
            feature_mz = np.append(feature_mz, truth.internal_standard_mz)
            level = np.append(level, truth.internal_standard_level)
        n_features = feature_mz.size
        noise_mean = float(truth.level.min()) / 4.0 * float(truth.scaling[i])
        sigma = np.sqrt(np.log1p(self.pixel_cv**2))
        common = np.sqrt(np.log1p(self.pixel_common_cv**2))
        mz_parts, intensity_parts, counts = [], [], []
        for start in range(0, self.n_pixels, block_pixels):
            n = min(block_pixels, self.n_pixels - start)
            present = rng.random((n, n_features)) < self.detection_probability
            if truth.internal_standard_mz is not None:
                present[:, -1] = True
            ppm = truth.mass_shift_ppm[i] + self.mass_jitter_ppm * rng.standard_normal(
                (n, n_features)
            )
            mz = feature_mz * (1.0 + ppm * 1e-6)
            factor = rng.lognormal(-0.5 * sigma**2, sigma, (n, n_features))
            factor *= rng.lognormal(-0.5 * common**2, common, (n, 1))
            intensity = level * truth.scaling[i] * factor
            mz = np.where(present, mz, np.inf)
            noise_mz = rng.uniform(*self.mz_range, (n, self.noise_peaks_per_pixel))
            noise_intensity = rng.exponential(noise_mean, (n, self.noise_peaks_per_pixel))
            mz = np.concatenate([mz, noise_mz], axis=1)
            intensity = np.concatenate([intensity, noise_intensity], axis=1)
            order = np.argsort(mz, axis=1)
            mz = np.take_along_axis(mz, order, axis=1)
            intensity = np.take_along_axis(intensity, order, axis=1)
            keep = np.isfinite(mz)
            mz_parts.append(mz[keep])
            intensity_parts.append(intensity[keep].astype(np.float32))
            counts.append(keep.sum(axis=1))
        offsets = np.zeros(self.n_pixels + 1, np.int64)
        np.cumsum(np.concatenate(counts), out=offsets[1:])
        intensity = np.concatenate(intensity_parts)
        nx = int(np.ceil(np.sqrt(self.n_pixels)))
        return PeakList(
            mz=np.concatenate(mz_parts),
            intensity=intensity,
            snr=(intensity / np.float32(noise_mean)).astype(np.float32),
            offsets=offsets,
            noise=np.full(self.n_pixels, noise_mean),
            coordinates=grid_coordinates(self.n_pixels, nx),
        )

    def measurements(self) -> Iterator[PeakList]:
        """Every measurement in order (generated one at a time)."""
        for i in range(len(self)):
            yield self.measurement(i)


def synthetic_study(
    n_groups: int = 2,
    n_replicates: int = 3,
    n_features: int = 200,
    n_changed: int = 20,
    fold: float = 4.0,
    n_pixels: int = 100,
    noise_peaks_per_pixel: int = 20,
    max_mass_shift_ppm: float = 2.0,
    mass_jitter_ppm: float = 1.0,
    scaling_range: tuple[float, float] = (0.5, 2.0),
    replicate_cv: float = 0.1,
    pixel_cv: float = 0.3,
    pixel_common_cv: float = 0.3,
    internal_standard_mz: float | None = None,
    detection_probability: float = 0.95,
    min_separation_ppm: float = 100.0,
    mz_range: tuple[float, float] = (100.0, 1000.0),
    seed: int = 0,
) -> SyntheticStudy:
    """A study with known differences: ``n_groups`` × ``n_replicates`` measurements.

    ``n_features`` features at log-uniform m/z at least ``min_separation_ppm`` apart, with
    log-uniform levels over two decades; ``n_changed`` of them (chosen at random) differ by
    ``fold`` between the first and the last group, half up and half down (other groups, if
    any, lie halfway on the log scale). Each measurement has its own calibration error (uniform
    within ± ``max_mass_shift_ppm``), its own intensity scaling (log-uniform within
    ``scaling_range``) and biological variation (lognormal, ``replicate_cv`` per feature); each
    pixel adds lognormal variation (``pixel_common_cv`` shared by its peaks, ``pixel_cv`` per
    peak), per-peak m/z jitter (``mass_jitter_ppm``, standard deviation), missed detections and
    noise peaks. ``internal_standard_mz``: a standard spiked into every pixel at the median
    feature level (the features keep ``min_separation_ppm`` from it too). Small by default (6 measurements × 100 pixels), so tests run in well under a
    second.
    """
    if n_changed > n_features:
        raise ValueError(f"n_changed ({n_changed}) exceeds n_features ({n_features})")
    if n_groups < 2 or n_replicates < 1:
        raise ValueError("a study needs at least 2 groups of at least 1 replicate")
    rng = np.random.default_rng([seed, 0])
    lo, hi = np.log(mz_range[0]), np.log(mz_range[1])
    margin = 0.01 * (hi - lo)
    step = min_separation_ppm * 1e-6
    hole = 2 * step if internal_standard_mz is not None else 0.0
    free = (hi - lo - 2 * margin) - n_features * step - hole
    if free <= 0:
        raise ValueError(
            f"{n_features} features {min_separation_ppm} ppm apart do not fit in m/z {mz_range}"
        )
    offsets = np.sort(rng.uniform(0.0, free, n_features)) + np.arange(n_features) * step
    log_mz = lo + margin + offsets
    if internal_standard_mz is not None:  # features keep min_separation_ppm from the standard
        if not mz_range[0] < internal_standard_mz < mz_range[1]:
            raise ValueError(f"internal_standard_mz {internal_standard_mz} is outside {mz_range}")
        log_mz[log_mz >= np.log(internal_standard_mz) - step] += hole
    feature_mz = np.exp(log_mz)
    base = np.exp(rng.uniform(np.log(100.0), np.log(10_000.0), n_features))
    changed = np.zeros(n_features, bool)
    changed[rng.choice(n_features, n_changed, replace=False)] = True
    direction = np.zeros(n_features)
    idx = np.flatnonzero(changed)
    direction[idx] = np.where(rng.permutation(idx.size) % 2 == 0, 1.0, -1.0)
    planted_fold = np.where(changed, fold**direction, 1.0)
    groups = np.repeat([f"group{g + 1}" for g in range(n_groups)], n_replicates)
    position = np.repeat(np.arange(n_groups) / (n_groups - 1), n_replicates)
    n_measurements = n_groups * n_replicates
    sigma = np.sqrt(np.log1p(replicate_cv**2))
    biological = rng.lognormal(-0.5 * sigma**2, sigma, (n_measurements, n_features))
    level = base * planted_fold ** position[:, None] * biological
    scaling = np.exp(rng.uniform(*np.log(scaling_range), n_measurements))
    shift = rng.uniform(-max_mass_shift_ppm, max_mass_shift_ppm, n_measurements)
    standard_level = float(np.median(base)) if internal_standard_mz is not None else 0.0
    truth = SyntheticStudyTruth(
        feature_mz=feature_mz,
        changed=changed,
        fold=planted_fold,
        groups=groups,
        scaling=scaling,
        mass_shift_ppm=shift,
        level=level,
        internal_standard_mz=internal_standard_mz,
        internal_standard_level=standard_level,
    )
    names = tuple(f"{g}-r{i % n_replicates + 1}" for i, g in enumerate(groups))
    return SyntheticStudy(
        truth=truth,
        names=names,
        n_pixels=n_pixels,
        noise_peaks_per_pixel=noise_peaks_per_pixel,
        detection_probability=detection_probability,
        mass_jitter_ppm=mass_jitter_ppm,
        pixel_cv=pixel_cv,
        pixel_common_cv=pixel_common_cv,
        mz_range=mz_range,
        seed=seed,
    )


@dataclass(frozen=True)
class SyntheticRegions:
    """A tissue section with planted regions, to score spatial analysis against.

    ``block`` continuous spectra on a ``(ny, nx)`` grid (one spectrum per pixel, row-major,
    coordinates 1-based); ``regions`` (ny, nx) the planted region of each pixel (0…n-1);
    ``ion_mz`` (n_ions,) the m/z of the planted ions; ``ion_region`` (n_ions,) the region an ion
    marks (-1: present everywhere at one level); ``levels`` (n_regions, n_ions) the expected
    height of each ion in each region; ``gradient`` (ny, nx) the smooth intensity factor every
    spectrum of a pixel was multiplied by (tissue thickness, matrix coverage).
    """

    block: SpectraBlock
    regions: np.ndarray
    ion_mz: np.ndarray
    ion_region: np.ndarray
    levels: np.ndarray
    gradient: np.ndarray

    @property
    def labels(self) -> np.ndarray:
        """The planted region of each spectrum, in spectrum order."""
        return self.regions.reshape(-1)


def planted_regions(nx: int, ny: int) -> np.ndarray:
    """Three regions on a ``(ny, nx)`` image: a band on the left third (0), a disc in the
    right two thirds (1), and the rest (2)."""
    rows, cols = np.mgrid[0:ny, 0:nx]
    regions = np.full((ny, nx), 2, np.int64)
    regions[cols < nx / 3] = 0
    cx, cy, radius = 2 * nx / 3, ny / 2, min(nx / 4, ny / 3)
    regions[(cols + 0.5 - cx) ** 2 + (rows + 0.5 - cy) ** 2 < radius**2] = 1
    return regions


def synthetic_regions(
    nx: int = 30,
    ny: int = 24,
    n_bins: int = 2_000,
    ions_per_region: int = 4,
    n_shared: int = 4,
    mz_range: tuple[float, float] = (100.0, 1000.0),
    fwhm_points: float = 4.0,
    noise_sigma: float = 1.0,
    pixel_cv: float = 0.2,
    gradient: tuple[float, float] = (0.6, 1.4),
    seed: int = 0,
) -> SyntheticRegions:
    """Continuous spectra of a section with three planted regions (:func:`planted_regions`).

    Each region has ``ions_per_region`` marker ions at 40–100 × ``noise_sigma`` inside it and
    a tenth of that elsewhere; ``n_shared`` ions sit at one level everywhere. Every pixel's
    spectrum is multiplied by a smooth gradient (linear across the diagonal, from
    ``gradient[0]`` to ``gradient[1]``) and each ion by lognormal pixel variation
    (``pixel_cv``); Gaussian noise and a constant offset of ``3 noise_sigma`` are added, and
    intensities are clipped at zero (float32, as an instrument stores them).
    """
    rng = np.random.default_rng([seed, 15])
    regions = planted_regions(nx, ny)
    n_regions = 3
    n_ions = n_regions * ions_per_region + n_shared
    lo, hi = mz_range
    mz = np.linspace(lo, hi, n_bins)
    step = (hi - lo) / (n_bins - 1)
    slots = np.linspace(0.05, 0.95, n_ions) * (hi - lo) + lo  # ions evenly spaced, never overlap
    ion_mz = slots + rng.uniform(-2, 2, n_ions) * step
    ion_region = np.concatenate(
        [np.repeat(np.arange(n_regions), ions_per_region), -np.ones(n_shared, np.int64)]
    )
    order = rng.permutation(n_ions)  # marker ions interleaved along m/z
    ion_region = ion_region[order]
    height = rng.uniform(40.0, 100.0, n_ions) * noise_sigma
    levels = np.where(
        (ion_region[None, :] == np.arange(n_regions)[:, None]) | (ion_region[None, :] < 0),
        height,
        0.1 * height,
    )
    rows, cols = np.mgrid[0:ny, 0:nx]
    t = (rows / max(ny - 1, 1) + cols / max(nx - 1, 1)) / 2
    factor = gradient[0] + (gradient[1] - gradient[0]) * t
    sigma = np.sqrt(np.log1p(pixel_cv**2))
    n = nx * ny
    amplitudes = levels[regions.reshape(-1)] * factor.reshape(-1, 1)
    amplitudes *= rng.lognormal(-0.5 * sigma**2, sigma, (n, n_ions))
    width = fwhm_points * step / 2.3548
    profiles = np.exp(-0.5 * ((mz[None, :] - ion_mz[:, None]) / width) ** 2)
    intensity = amplitudes @ profiles + 3 * noise_sigma
    intensity += rng.standard_normal((n, n_bins)) * noise_sigma
    block = SpectraBlock(
        mz,
        np.maximum(intensity, 0).astype(np.float32),
        None,
        grid_coordinates(n, nx),
    )
    return SyntheticRegions(block, regions, ion_mz, ion_region, levels, factor)


def write_regions_imzml(path: str | os.PathLike[str], regions: SyntheticRegions) -> str:
    """Write a :class:`SyntheticRegions` section as a continuous imzML/ibd pair (pyimzml's
    writer); returns the .imzML path."""
    from pyimzml.ImzMLWriter import ImzMLWriter

    base = os.fspath(path)
    if base.lower().endswith(".imzml"):
        base = base[: -len(".imzml")]
    block = regions.block
    with ImzMLWriter(
        base,
        mode="continuous",
        mz_dtype=np.float64,
        intensity_dtype=np.float32,
        spec_type="profile",
    ) as writer:
        for i in range(len(block)):
            x, y = (int(v) for v in block.coordinates[i, :2])
            writer.addSpectrum(block.mz, block.intensity[i], (x, y))
    return base + ".imzML"
