"""Centroided imzML of processed results: what people take to METASPACE, Cardinal or SCiLS.

A peak table (or a study member's aligned features) is a pixels × features matrix on one m/z
axis; written here as a *processed*-mode, *centroid* imzML/ibd pair with pyimzml's
``ImzMLWriter``: each pixel's spectrum holds only its non-zero features, at the feature m/z
(float64) and with the stored intensities (float32 stays float32, anything else float64), so
``pyimzml.ImzMLParser`` reads back the same coordinates, m/z and intensities.

A pixel without any peak is left out: pyimzml cannot write an empty spectrum (it takes the
spectrum's m/z range), and imzML readers treat an absent pixel as empty.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp


class InvalidExport(ValueError):
    """A matrix, axis or coordinates that cannot make an imzML file; the message names which."""


@dataclass(frozen=True)
class CentroidedImzML:
    """What :func:`write_centroided_imzml` wrote."""

    imzml_path: str
    ibd_path: str
    #: pixels written (those with at least one peak)
    spectra: int
    #: pixels left out because they hold no peak
    empty_pixels: int
    #: peaks written, all spectra together
    peaks: int


def _base(path: str | os.PathLike[str]) -> str:
    base = os.fspath(path)
    return base[: -len(".imzml")] if base.lower().endswith(".imzml") else base


def write_centroided_imzml(
    path: str | os.PathLike[str],
    matrix: sp.spmatrix | sp.sparray | np.ndarray,
    feature_mz: np.ndarray,
    coordinates: np.ndarray,
    *,
    polarity: str | None = None,
) -> CentroidedImzML:
    """Write ``matrix`` (pixels × features, intensities) as a centroided imzML at ``path``
    (``.imzML`` added when missing, ``.ibd`` beside it).

    ``feature_mz``: the features' m/z, strictly increasing; ``coordinates``: the pixels'
    1-based imzML positions ``(x, y)`` or ``(x, y, z)``; ``polarity``: ``"positive"`` or
    ``"negative"`` when known. Nothing is written when the input is refused.
    """
    csr = sp.csr_array(matrix)
    mz = np.asarray(feature_mz, dtype=np.float64)
    xyz = np.asarray(coordinates)
    n_pixels, n_features = csr.shape
    if mz.ndim != 1 or mz.size != n_features:
        raise InvalidExport(f"{mz.size} feature m/z for a matrix of {n_features} features")
    if mz.size and not (np.all(np.isfinite(mz)) and np.all(np.diff(mz) > 0)):
        raise InvalidExport("the feature m/z must be finite and strictly increasing")
    if xyz.ndim != 2 or xyz.shape[0] != n_pixels or xyz.shape[1] not in (2, 3):
        raise InvalidExport(
            f"coordinates of shape {xyz.shape} for {n_pixels} pixels; expected ({n_pixels}, 2|3)"
        )
    if n_pixels and xyz[:, :2].min() < 1:
        raise InvalidExport("imzML pixel coordinates are 1-based; found one below 1")
    if csr.nnz and not np.all(np.isfinite(csr.data)):
        raise InvalidExport("an intensity is not finite")
    from pyimzml.ImzMLWriter import ImzMLWriter

    csr.sort_indices()
    dtype = np.float32 if csr.dtype == np.float32 else np.float64
    base = _base(path)
    written = peaks = 0
    with ImzMLWriter(
        base, mode="processed", spec_type="centroid", mz_dtype=np.float64,
        intensity_dtype=dtype, polarity=polarity,
    ) as writer:  # fmt: skip
        for row in range(n_pixels):
            start, stop = csr.indptr[row], csr.indptr[row + 1]
            columns = csr.indices[start:stop]
            values = csr.data[start:stop]
            keep = values != 0
            if not keep.any():
                continue
            position = tuple(int(v) for v in xyz[row])
            writer.addSpectrum(mz[columns[keep]], values[keep].astype(dtype), position)
            written += 1
            peaks += int(keep.sum())
    return CentroidedImzML(base + ".imzML", base + ".ibd", written, n_pixels - written, peaks)
