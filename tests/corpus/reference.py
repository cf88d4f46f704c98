"""The reference reading of a corpus file: pyimzML's, never EM²Q's reader.

pyimzML's ``ImzMLParser`` gives the index (coordinates, offsets, lengths) and ``getspectrum``.
pyimzML 1.5 does not decode 16-bit floats or zlib-compressed arrays, so for those the bytes at
pyimzML's offsets are decoded here with the data type and compression named in pyimzML's parsed
header (a zlib stream ends itself, so no encoded length is needed).
"""

from __future__ import annotations

import zlib
from pathlib import Path

import numpy as np
from pyimzml.ImzMLParser import PRECISION_DICT, ImzMLParser

REFERENCE_DTYPES = {
    "16-bit float": np.dtype("<f2"),
    "32-bit float": np.dtype("<f4"),
    "64-bit float": np.dtype("<f8"),
    "32-bit integer": np.dtype("<i4"),
    "64-bit integer": np.dtype("<i8"),
}


def _group(parser: ImzMLParser, group_id: str) -> tuple[np.dtype, bool]:
    names = parser.metadata.referenceable_param_groups[group_id].param_by_name
    dtype = next(dt for name, dt in REFERENCE_DTYPES.items() if name in names)
    return dtype, "zlib compression" in names


def reference_spectra(path: Path) -> tuple[np.ndarray, list[tuple[np.ndarray, np.ndarray]]]:
    """``(coordinates, [(mz, intensity), ...])`` as pyimzML reads them."""
    with ImzMLParser(str(path)) as parser:
        mz_dtype, mz_zlib = _group(parser, parser.mzGroupId)
        int_dtype, int_zlib = _group(parser, parser.intGroupId)
        plain = not (mz_zlib or int_zlib) and parser.mzPrecision in PRECISION_DICT.values()
        plain = plain and parser.intensityPrecision in PRECISION_DICT.values()
        spectra = []
        for i in range(len(parser.coordinates)):
            if plain:
                spectra.append(parser.getspectrum(i))
                continue
            arrays = []
            for offsets, lengths, dtype, packed in (
                (parser.mzOffsets, parser.mzLengths, mz_dtype, mz_zlib),
                (parser.intensityOffsets, parser.intensityLengths, int_dtype, int_zlib),
            ):
                parser.m.seek(offsets[i])
                if packed:
                    data = zlib.decompressobj().decompress(parser.m.read(16 * lengths[i] + 64))
                else:
                    data = parser.m.read(lengths[i] * dtype.itemsize)
                arrays.append(np.frombuffer(data, dtype)[: lengths[i]])
            spectra.append(tuple(arrays))
        return np.asarray(parser.coordinates), spectra
