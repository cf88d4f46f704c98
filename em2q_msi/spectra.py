"""The in-memory shape of a block of spectra, shared by the reader and every processing step.

Two layouts, matching imzML's two storage modes:

* **continuous**: one m/z axis shared by all spectra; ``intensity`` is a 2-D array
  ``(n_spectra, n_bins)`` and ``offsets`` is ``None``.
* **processed** (ragged): each spectrum has its own m/z array; ``mz`` and ``intensity`` are the
  spectra concatenated in file order (CSR layout) and spectrum ``i`` is
  ``mz[offsets[i]:offsets[i + 1]]``.

Processing functions accept either layout; ``to_ragged`` gives the CSR view of a continuous block
so vectorised kernels need only one code path where that is simpler.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class SpectraBlock:
    """A contiguous range of spectra ``[first_index, first_index + len(self))`` of one measurement.

    ``coordinates`` are the imzML pixel positions ``(x, y, z)``, 1-based, shape ``(n_spectra, 3)``.
    """

    mz: np.ndarray
    intensity: np.ndarray
    offsets: np.ndarray | None
    coordinates: np.ndarray
    first_index: int = 0

    @property
    def is_continuous(self) -> bool:
        return self.offsets is None

    def __len__(self) -> int:
        return int(self.coordinates.shape[0])

    @property
    def n_bins(self) -> int:
        """Length of the shared m/z axis (continuous blocks)."""
        return int(np.asarray(self.mz).shape[0])

    def rows(self, dtype: np.dtype | type | None = None) -> np.ndarray:
        """The intensities of a continuous block as a C-contiguous ``(n_spectra, n_bins)``
        array (optionally converted): unlike ``reshape(n, -1)`` also right for a block of
        zero spectra (an empty chunk) or zero bins."""
        values = np.ascontiguousarray(self.intensity, dtype=dtype)
        return values.reshape(len(self), self.n_bins)

    def spectrum(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """``(mz, intensity)`` of the block's ``i``-th spectrum (views, no copy)."""
        if self.offsets is None:
            return self.mz, self.intensity[i]
        start, stop = int(self.offsets[i]), int(self.offsets[i + 1])
        return self.mz[start:stop], self.intensity[start:stop]

    def to_ragged(self) -> SpectraBlock:
        """The same spectra in the processed (CSR) layout."""
        if self.offsets is not None:
            return self
        n_spectra, n_bins = self.intensity.shape
        return SpectraBlock(
            mz=np.tile(self.mz, n_spectra),
            intensity=np.ascontiguousarray(self.intensity).reshape(-1),
            offsets=np.arange(n_spectra + 1, dtype=np.int64) * n_bins,
            coordinates=self.coordinates,
            first_index=self.first_index,
        )
