"""Spectrum preprocessing: smoothing, baseline removal and normalisation, batched over blocks.

Every function takes a ``SpectraBlock`` (continuous or processed) and returns a new one in the same
layout with float32 intensities; the m/z arrays and coordinates are shared, not copied. The work is
done per spectrum by the numba kernels in ``_kernels`` on all cores; windows are in data points.

Order of the full chain (``preprocess``): smooth → remove baseline → normalise. Smoothing sets the
negative values a polynomial fit can produce to zero (as OpenMS's ``SavitzkyGolayFilter`` does),
since intensities are counts. Normalisation factors are computed on the baseline-free signal.
"""

from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from em2q_msi.parameters import (
    BaselineParameters,
    NormalisationParameters,
    PeakPickingParameters,
    ProcessingParameters,
    SmoothingParameters,
)
from em2q_msi.spectra import SpectraBlock

# Upper bound of peak slots (16 bytes each) held at once while picking: about 64 MB.
_MAX_PEAK_SLOTS = 4_000_000
# Most spectra per batch handed to one thread.
_MAX_BATCH = 64


def savgol_edge_matrix(window_points: int, polyorder: int) -> np.ndarray:
    """Hat matrix ``H`` (window × window) of a least-squares polynomial fit over one window.

    Row ``window_points // 2`` is the Savitzky–Golay kernel; the rows before and after it give the
    outputs of the first and last ``window_points // 2`` points from the first/last full window
    (scipy's ``mode="interp"``).
    """
    half = window_points // 2
    x = np.arange(window_points, dtype=np.float64) - half
    vander = x[:, None] ** np.arange(polyorder + 1)
    return vander @ np.linalg.pinv(vander)


def gaussian_kernel(sigma_points: float, truncate: float = 4.0) -> np.ndarray:
    """Normalised Gaussian weights of radius ``int(truncate * sigma + 0.5)`` points (as scipy)."""
    radius = int(truncate * sigma_points + 0.5)
    x = np.arange(-radius, radius + 1, dtype=np.float64)
    phi = np.exp(-0.5 * (x / sigma_points) ** 2)
    return phi / phi.sum()


@dataclass(frozen=True)
class _Chain:
    smoothing: SmoothingParameters | None = None
    baseline: BaselineParameters | None = None
    normalisation: NormalisationParameters | None = None
    peak_picking: PeakPickingParameters | None = None
    noise: str | None = None  # noise estimate without picking


@dataclass(frozen=True)
class _ChainResult:
    block: SpectraBlock | None
    counts: np.ndarray
    floor: np.ndarray
    noise: np.ndarray
    peak_mz: np.ndarray
    peak_intensity: np.ndarray
    peak_snr: np.ndarray


def _config(chain: _Chain) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    from em2q_msi import _kernels as K  # numba: loaded when a kernel first runs

    sm, bl, nm, pp = chain.smoothing, chain.baseline, chain.normalisation, chain.peak_picking
    smooth_mode = K.SMOOTH_NONE
    coeffs = np.ones(1, np.float32)
    edges = np.ones((1, 1), np.float32)
    if sm is not None and sm.method == "savgol":
        hat = savgol_edge_matrix(sm.window_points, sm.polyorder)
        smooth_mode, coeffs, edges = K.SMOOTH_HAT, hat[sm.window_points // 2], hat
    elif sm is not None and sm.method == "gaussian":
        smooth_mode, coeffs = K.SMOOTH_REFLECT, gaussian_kernel(sm.sigma_points)
    base_mode = {None: K.BASELINE_NONE, "none": K.BASELINE_NONE, "tophat": K.BASELINE_TOPHAT}
    base_mode["snip"] = K.BASELINE_SNIP
    norm_mode = {None: K.NORM_NONE, "none": K.NORM_NONE, "tic": K.NORM_TIC, "rms": K.NORM_RMS}
    norm_mode["median"] = K.NORM_MEDIAN
    noise_name = pp.noise if pp is not None else chain.noise
    cfg_i = np.array(
        [
            smooth_mode,
            base_mode[bl.method if bl else None],
            bl.window_points if bl else 1,
            bl.iterations if bl else 1,
            norm_mode[nm.method if nm else None],
            K.NOISE_STD if noise_name == "std" else K.NOISE_MAD,
            int(noise_name is not None),
            int(pp is not None),
            pp.min_distance_points if pp else 1,
        ],
        dtype=np.int64,
    )
    cfg_f = np.array([pp.snr_threshold if pp else 0.0], dtype=np.float64)
    coeffs = 0.5 * (coeffs + coeffs[::-1])  # exactly symmetric: the kernel folds tap pairs
    return cfg_i, cfg_f, coeffs.astype(np.float32), np.ascontiguousarray(edges, np.float32)


def default_threads() -> int:
    """Threads for the kernels: the CPUs this process may run on."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


def _run_chain(
    block: SpectraBlock, chain: _Chain, keep_spectra: bool, n_threads: int | None = None
) -> _ChainResult:
    """Run the configured chain over ``block``.

    The spectra are cut into small batches that a pool of threads takes one at a time (the
    kernels release the GIL): a thread slowed by another process on its core simply takes fewer
    batches, where a static split would wait for it. Batches also bound the peak buffers' memory.
    """
    from em2q_msi import _kernels as K  # numba: loaded when a kernel first runs

    cfg_i, cfg_f, coeffs, edges = _config(chain)
    pick = chain.peak_picking is not None
    mz = np.ascontiguousarray(block.mz, dtype=np.float64)
    inten = np.ascontiguousarray(block.intensity, dtype=np.float32)
    n_spec = len(block)
    offsets = None
    if block.offsets is None:
        inten = block.rows(np.float32)
        longest = inten.shape[1]
        out = np.empty_like(inten) if keep_spectra else np.empty((1, 1), np.float32)
    else:
        offsets = np.ascontiguousarray(block.offsets, dtype=np.int64)
        longest = int(np.diff(offsets).max()) if n_spec else 0
        out = np.empty_like(inten) if keep_spectra else np.empty(1, np.float32)
    cap = longest // 2 + 1 if pick else 0
    threads = n_threads or default_threads()
    batch = max(1, min(_MAX_BATCH, -(-n_spec // (4 * threads))))
    counts = np.zeros(n_spec, np.int64)
    floors = np.zeros(n_spec, np.float64)
    noises = np.zeros(n_spec, np.float64)
    # Scratch and peak buffers live per thread for the whole call: fresh pages cost a fault on
    # first touch, which for ~1 MB per batch would take longer than the filters themselves.
    local = threading.local()

    def buffers() -> tuple[np.ndarray, ...]:
        if not hasattr(local, "work"):
            local.work = np.empty(K.work_size(longest, int(cfg_i[2]), coeffs.size), np.float32)
            slots = max(cap, min(batch * cap, _MAX_PEAK_SLOTS)) if pick else 0
            local.peaks = (
                np.empty(slots, np.float64),
                np.empty(slots, np.float32),
                np.empty(slots, np.float32),
            )
        return (local.work, *local.peaks)

    def run(b0: int) -> list[tuple[np.ndarray, ...]]:
        work, buf_mz, buf_int, buf_snr = buffers()
        pieces = []
        s, b1 = b0, min(b0 + batch, n_spec)
        while s < b1:
            results = (buf_mz, buf_int, buf_snr, counts[s:b1], floors[s:b1], noises[s:b1])
            if offsets is None:
                done = K.chain_dense(
                    mz,
                    inten[s:b1],
                    out[s:b1] if keep_spectra else out,
                    keep_spectra,
                    cfg_i,
                    cfg_f,
                    coeffs,
                    edges,
                    cap,
                    work,
                    *results,
                )
            else:
                lo, hi = offsets[s], offsets[b1]
                done = K.chain_ragged(
                    mz[lo:hi],
                    inten[lo:hi],
                    offsets[s : b1 + 1] - lo,
                    out[lo:hi] if keep_spectra else out,
                    keep_spectra,
                    cfg_i,
                    cfg_f,
                    coeffs,
                    edges,
                    cap,
                    work,
                    *results,
                )
            if pick:
                total = int(counts[s : s + done].sum())
                pieces.append(
                    (buf_mz[:total].copy(), buf_int[:total].copy(), buf_snr[:total].copy())
                )
            s += done
        return pieces

    starts = range(0, n_spec, batch)
    if threads == 1 or len(starts) == 1:
        parts = [run(b0) for b0 in starts]
    else:
        with ThreadPoolExecutor(max_workers=threads) as pool:
            parts = list(pool.map(run, starts))
    pieces = [piece for part in parts for piece in part]

    def cat(i: int, dtype: type) -> np.ndarray:
        return np.concatenate([p[i] for p in pieces]) if pieces else np.zeros(0, dtype)

    result_block = None
    if keep_spectra:
        result_block = SpectraBlock(
            mz=block.mz,
            intensity=out,
            offsets=block.offsets,
            coordinates=block.coordinates,
            first_index=block.first_index,
        )
    return _ChainResult(
        block=result_block,
        counts=counts,
        floor=floors,
        noise=noises,
        peak_mz=cat(0, np.float64),
        peak_intensity=cat(1, np.float32),
        peak_snr=cat(2, np.float32),
    )


def smooth(block: SpectraBlock, params: SmoothingParameters | None = None) -> SpectraBlock:
    """Smoothed copy of ``block`` (Savitzky–Golay or Gaussian, windows in points).

    Spectra shorter than a Savitzky–Golay window are returned unchanged.
    """
    params = params or SmoothingParameters()
    return _run_chain(block, _Chain(smoothing=params), keep_spectra=True).block  # type: ignore[return-value]


def remove_baseline(block: SpectraBlock, params: BaselineParameters | None = None) -> SpectraBlock:
    """``block`` minus its baseline (top-hat opening or SNIP); results are never negative."""
    params = params or BaselineParameters()
    return _run_chain(block, _Chain(baseline=params), keep_spectra=True).block  # type: ignore[return-value]


def normalise(block: SpectraBlock, params: NormalisationParameters | None = None) -> SpectraBlock:
    """Each spectrum divided by its own TIC, RMS or median of non-zero intensities."""
    params = params or NormalisationParameters()
    return _run_chain(block, _Chain(normalisation=params), keep_spectra=True).block  # type: ignore[return-value]


def preprocess(
    block: SpectraBlock, params: ProcessingParameters | None = None, n_threads: int | None = None
) -> SpectraBlock:
    """The full chain smooth → remove baseline → normalise, in one pass per spectrum.

    ``n_threads``: worker threads (default: every CPU this process may use).
    """
    params = params or ProcessingParameters()
    chain = _Chain(
        smoothing=params.smoothing, baseline=params.baseline, normalisation=params.normalisation
    )
    return _run_chain(block, chain, keep_spectra=True, n_threads=n_threads).block  # type: ignore[return-value]
