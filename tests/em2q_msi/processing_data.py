"""Data for the processing tests: the imzML examples read with pyimzml (the independent
reference). Synthetic spectra with known peaks live in ``em2q_msi.synthetic`` (the benchmarks
use them too)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

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
