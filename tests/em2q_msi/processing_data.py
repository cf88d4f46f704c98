"""Data for the processing tests and benchmarks: the imzML examples read with pyimzml (the
independent reference), and synthetic spectra with known peaks."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from em2q_msi.spectra import SpectraBlock

EXAMPLES = Path(__file__).resolve().parents[3] / "shared" / "data" / "imzml"
if not EXAMPLES.exists():  # the repository checked out on its own, beside shared/
    EXAMPLES = Path("/work/shared/data/imzml")
CONTINUOUS = EXAMPLES / "Example_Continuous.imzML"
PROCESSED = EXAMPLES / "Example_Processed.imzML"


def read_with_pyimzml(path: Path) -> tuple[list[np.ndarray], list[np.ndarray], np.ndarray]:
    """``(mz arrays, intensity arrays, coordinates)`` exactly as pyimzml's getspectrum gives them."""
    from pyimzml.ImzMLParser import ImzMLParser

    parser = ImzMLParser(str(path))
    mzs, intensities = [], []
    for i in range(len(parser.coordinates)):
        mz, intensity = parser.getspectrum(i)
        mzs.append(np.asarray(mz))
        intensities.append(np.asarray(intensity))
    return mzs, intensities, np.asarray(parser.coordinates, dtype=np.int64)


def example_block(path: Path, continuous: bool) -> SpectraBlock:
    """One of the example files as a SpectraBlock in the requested layout, via pyimzml."""
    mzs, intensities, coordinates = read_with_pyimzml(path)
    if continuous:
        return SpectraBlock(mzs[0], np.vstack(intensities), None, coordinates)
    offsets = np.concatenate(([0], np.cumsum([len(m) for m in mzs]))).astype(np.int64)
    return SpectraBlock(np.concatenate(mzs), np.concatenate(intensities), offsets, coordinates)


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
