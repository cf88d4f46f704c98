"""Synthetic imzML datasets written with pyimzml's ``ImzMLWriter``, for tests and benchmarks.

Written by an independent implementation (pyimzml), so reading them back checks this reader
against another one; the spectra are deterministic for a given ``seed``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import numpy as np


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
    n_spectra: int, n_peaks: int, mz_lo: float = 100.0, mz_hi: float = 1000.0, seed: int = 0
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Centroided spectra, each with its own sorted m/z array of about ``n_peaks`` values."""
    rng = np.random.default_rng(seed)
    for _ in range(n_spectra):
        k = max(1, int(n_peaks + rng.integers(-n_peaks // 10 - 1, n_peaks // 10 + 1)))
        mz = np.sort(rng.uniform(mz_lo, mz_hi, k))
        yield mz, rng.exponential(10.0, k)


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
) -> str:
    """Write ``<path>.imzML`` + ``.ibd`` and return the .imzML path.

    ``n_values`` is the number of bins (continuous) or the mean number of peaks (processed).
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
        else processed_spectra(n, n_values, seed=seed)
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
