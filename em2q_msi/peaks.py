"""Noise estimation and peak picking, batched over blocks of spectra.

A peak is a local maximum (higher than its left neighbour, not lower than its right one) whose
height above the spectrum's noise floor is at least ``snr_threshold`` × noise. Its m/z and height
come from a 3-point Gaussian fit (a parabola through the logarithms of the apex and its two
neighbours; a plain parabola when a neighbour is zero), which is exact for sampled Gaussian peaks.

Noise is estimated per spectrum from its positive intensities (zeros in imzML spectra are points
the instrument did not record; values below 1e-6 × the sampled maximum, float32 round-off, count
as zeros), taken from at most 2,048 evenly spaced points so the cost stays small next to the
filters: ``mad`` gives floor = median and noise = 1.4826 × median absolute deviation; ``std`` gives
floor = mean and noise = standard deviation. SNR = (height − floor) / noise, ``inf`` where the
noise is zero.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from em2q_msi.parameters import PeakPickingParameters, ProcessingParameters
from em2q_msi.preprocess import _Chain, _run_chain
from em2q_msi.spectra import SpectraBlock


@dataclass(frozen=True)
class PeakList:
    """Peaks of a block of spectra in CSR layout: spectrum ``i`` is ``[offsets[i], offsets[i+1])``.

    ``mz`` (float64), ``intensity`` (float32, the signal's units), ``snr`` (float32); ``noise`` is
    the per-spectrum noise the SNR was computed with. ``coordinates`` and ``first_index`` are the
    block's.
    """

    mz: np.ndarray
    intensity: np.ndarray
    snr: np.ndarray
    offsets: np.ndarray
    noise: np.ndarray
    coordinates: np.ndarray
    first_index: int = 0

    def __len__(self) -> int:
        return int(self.offsets.shape[0] - 1)

    @property
    def counts(self) -> np.ndarray:
        """Number of peaks per spectrum."""
        return np.diff(self.offsets)

    def spectrum(self, i: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(mz, intensity, snr)`` of the ``i``-th spectrum's peaks (views)."""
        a, b = int(self.offsets[i]), int(self.offsets[i + 1])
        return self.mz[a:b], self.intensity[a:b], self.snr[a:b]

    def spectrum_index(self) -> np.ndarray:
        """Index (within the block) of the spectrum each peak belongs to."""
        return np.repeat(np.arange(len(self)), self.counts)


def concatenate_peaks(parts: Sequence[PeakList]) -> PeakList:
    """Peak lists of consecutive chunks (in file order) as one list; no parts (an empty chunk
    read in no blocks) give the peak list of zero spectra."""
    if not parts:
        return PeakList(
            mz=np.zeros(0, np.float64),
            intensity=np.zeros(0, np.float32),
            snr=np.zeros(0, np.float32),
            offsets=np.zeros(1, np.int64),
            noise=np.zeros(0, np.float64),
            coordinates=np.zeros((0, 3), np.int64),
        )
    shifts = np.cumsum([0] + [int(p.offsets[-1]) for p in parts[:-1]])
    offsets = np.concatenate(
        [parts[0].offsets[:1]] + [p.offsets[1:] + s for p, s in zip(parts, shifts, strict=True)]
    )
    return PeakList(
        mz=np.concatenate([p.mz for p in parts]),
        intensity=np.concatenate([p.intensity for p in parts]),
        snr=np.concatenate([p.snr for p in parts]),
        offsets=offsets.astype(np.int64),
        noise=np.concatenate([p.noise for p in parts]),
        coordinates=np.concatenate([p.coordinates for p in parts]),
        first_index=parts[0].first_index,
    )


def estimate_noise(block: SpectraBlock, method: str = "mad") -> np.ndarray:
    """Per-spectrum noise (intensity units, float64) of the block as it is (no preprocessing)."""
    if method not in ("mad", "std"):
        raise ValueError(f"noise method must be 'mad' or 'std', got {method!r}")
    return _run_chain(block, _Chain(noise=method), keep_spectra=False).noise


def _peak_list(block: SpectraBlock, result) -> PeakList:
    offsets = np.zeros(len(block) + 1, np.int64)
    np.cumsum(result.counts, out=offsets[1:])
    return PeakList(
        mz=result.peak_mz,
        intensity=result.peak_intensity,
        snr=result.peak_snr,
        offsets=offsets,
        noise=result.noise,
        coordinates=block.coordinates,
        first_index=block.first_index,
    )


def pick_peaks(block: SpectraBlock, params: PeakPickingParameters | None = None) -> PeakList:
    """Peaks of the block as it is (run ``preprocess`` first, or use ``preprocess_and_pick``)."""
    params = params or PeakPickingParameters()
    result = _run_chain(block, _Chain(peak_picking=params), keep_spectra=False)
    return _peak_list(block, result)


def preprocess_and_pick(
    block: SpectraBlock,
    params: ProcessingParameters | None = None,
    keep_spectra: bool = False,
    n_threads: int | None = None,
) -> tuple[SpectraBlock | None, PeakList]:
    """``preprocess`` then ``pick_peaks`` in one pass per spectrum, in cache.

    The fast path for large blocks: with ``keep_spectra=False`` the preprocessed spectra are never
    written to memory and the first element of the result is ``None``. ``n_threads``: worker
    threads (default: every CPU this process may use).
    """
    params = params or ProcessingParameters()
    chain = _Chain(
        smoothing=params.smoothing,
        baseline=params.baseline,
        normalisation=params.normalisation,
        peak_picking=params.peak_picking,
    )
    result = _run_chain(block, chain, keep_spectra=keep_spectra, n_threads=n_threads)
    return result.block, _peak_list(block, result)
