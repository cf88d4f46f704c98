"""Synthetic data for tests and benchmarks, deterministic for a given ``seed``.

* imzML datasets written with pyimzml's ``ImzMLWriter`` (:func:`write_imzml`): written by an
  independent implementation, so reading them back checks this reader against another one;
* spectra blocks with known truth (:func:`synthetic_continuous`: Gaussian peaks of known m/z
  and height on a baseline with noise; :func:`synthetic_processed`), for the processing steps.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from em2q_msi.spectra import SpectraBlock


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
