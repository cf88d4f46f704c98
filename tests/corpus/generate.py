"""Write the corpus of real-world imzML variants (see :func:`build_corpus`).

Every file is written by pyimzML's ``ImzMLWriter`` (an implementation independent of EM²Q's
reader); where the writer cannot express a variant (zero-length spectra, unsupported
compression, a truncated .ibd, a foreign UUID), its XML or .ibd is edited afterwards and the
declared SHA-1 recomputed, so each invalid file carries exactly the one problem it is named for.
"""

from __future__ import annotations

import hashlib
import re
import shutil
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

EXAMPLES = Path(__file__).resolve().parents[3] / "shared" / "data" / "imzml"
if not EXAMPLES.exists():  # a checkout outside /work
    EXAMPLES = Path("/work/shared/data/imzml")

#: The length of the one very long spectrum (points).
LONG_SPECTRUM_POINTS = 10**6

Spectrum = tuple[np.ndarray, np.ndarray]
Coordinates = tuple[int, ...]


@dataclass(frozen=True)
class CorpusFile:
    """One imzML/ibd pair of the corpus.

    ``expect_valid``: the upload must accept it (and the platform process it to READY).
    ``problem``: for a refused file, the class name in :mod:`em2q_msi.errors` of the problem
    upload validation must report (``ImzMLUnsortedMz`` ...); ``None`` for valid files.
    """

    name: str
    imzml: Path
    ibd: Path
    expect_valid: bool
    problem: str | None
    description: str

    @property
    def problem_code(self) -> str | None:
        """The stable code of ``problem`` (``mz_not_sorted`` ...), as validation reports it."""
        if self.problem is None:
            return None
        from em2q_msi import errors

        return getattr(errors, self.problem).code


# -- spectra --------------------------------------------------------------------------------
def _grid(n_x: int, n_y: int, n_z: int | None = None, x0: int = 1, y0: int = 1) -> list:
    return [
        (x0 + x, y0 + y, z + 1) if n_z else (x0 + x, y0 + y)
        for z in range(n_z or 1)
        for y in range(n_y)
        for x in range(n_x)
    ]


def _profile(n: int, n_bins: int, rng: np.random.Generator) -> Iterator[Spectrum]:
    """Profile spectra on one axis: Gaussian peaks scaled per pixel, plus noise (max ~300, so
    every value fits 16-bit float and integer types after rounding)."""
    mz = np.linspace(150.0, 950.0, n_bins)
    base = np.zeros(n_bins)
    for centre in rng.uniform(200.0, 900.0, 6):
        base += 100.0 * np.exp(-0.5 * ((mz - centre) / 2.0) ** 2)
    for _ in range(n):
        yield mz, base * rng.uniform(0.5, 2.0) + rng.exponential(2.0, n_bins)


def _centroids(n: int, n_peaks: int, rng: np.random.Generator) -> Iterator[Spectrum]:
    """Centroided spectra, each with its own sorted m/z values (count varies per spectrum)."""
    for _ in range(n):
        k = int(rng.integers(max(1, n_peaks // 2), n_peaks + 1))
        yield np.sort(rng.uniform(150.0, 950.0, k)), rng.exponential(50.0, k)


def _cast(values: np.ndarray, dtype: type) -> np.ndarray:
    """Values as an instrument would store them in ``dtype`` (integers rounded)."""
    if np.dtype(dtype).kind == "i":
        return np.rint(values).astype(dtype)
    return np.asarray(values).astype(dtype)


# -- writing --------------------------------------------------------------------------------
def _write(
    folder: Path,
    name: str,
    spectra: Iterable[Spectrum],
    coordinates: Iterable[Coordinates],
    *,
    mode: str,
    mz_dtype: type = np.float64,
    intensity_dtype: type = np.float32,
    zlib_compressed: bool = False,
) -> Path:
    from pyimzml.compression import NoCompression, ZlibCompression
    from pyimzml.ImzMLWriter import ImzMLWriter

    compression = ZlibCompression if zlib_compressed else NoCompression
    base = folder / name
    with ImzMLWriter(
        str(base),
        mode=mode,
        mz_dtype=mz_dtype,
        intensity_dtype=intensity_dtype,
        mz_compression=compression(),
        intensity_compression=compression(),
        spec_type="profile" if mode == "continuous" else "centroid",
    ) as writer:
        for coords, (mz, intensity) in zip(coordinates, spectra, strict=True):
            writer.addSpectrum(_cast(mz, mz_dtype), _cast(intensity, intensity_dtype), coords)
    return base.with_suffix(".imzML")


def _set_sha1(imzml: Path) -> None:
    """Declare the .ibd's actual SHA-1 (after an edit of the .ibd)."""
    digest = hashlib.sha1(imzml.with_suffix(".ibd").read_bytes()).hexdigest().upper()
    xml = imzml.read_bytes()
    xml = re.sub(
        rb'(accession="IMS:1000091"[^>]*?value=")[^"]*(")',
        rb"\g<1>" + digest.encode() + rb"\2",
        xml,
    )
    imzml.write_bytes(xml)


def _edit_spectra(imzml: Path, indices: Iterable[int], edit: Callable[[bytes], bytes]) -> None:
    """Apply ``edit`` to the XML of the given spectra (0-based, file order)."""
    xml = imzml.read_bytes()
    spans = [m.span() for m in re.finditer(rb"<spectrum [^>]*>.*?</spectrum>", xml, re.DOTALL)]
    for i in sorted(set(indices), reverse=True):
        a, b = spans[i]
        xml = xml[:a] + edit(xml[a:b]) + xml[b:]
    imzml.write_bytes(xml)


def _zero_lengths(spectrum_xml: bytes) -> bytes:
    """Both arrays of a spectrum declared with length 0 (and encoded length 0)."""
    spectrum_xml = re.sub(rb'(accession="IMS:1000103"[^>]*?value=")\d+', rb"\g<1>0", spectrum_xml)
    return re.sub(rb'(accession="IMS:1000104"[^>]*?value=")\d+', rb"\g<1>0", spectrum_xml)


def _pair(imzml: Path) -> tuple[Path, Path]:
    return imzml, imzml.with_suffix(".ibd")


# -- the corpus -----------------------------------------------------------------------------
_SHORT = {np.float32: "f32", np.float64: "f64", np.int32: "i32", np.int64: "i64"}
_SHORT[np.float16] = "f16"


def _valid_variants(folder: Path) -> Iterator[tuple[str, Path, str]]:
    rng = np.random.default_rng(20261128)
    for mode in ("continuous", "processed"):
        for mz_dtype in (np.float32, np.float64):
            for int_dtype in (np.float32, np.float64, np.int32, np.int64, np.float16):
                name = f"{mode}-mz{_SHORT[mz_dtype]}-int{_SHORT[int_dtype]}"
                spectra = (
                    _profile(12, 120, rng) if mode == "continuous" else _centroids(12, 40, rng)
                )
                path = _write(
                    folder, name, spectra, _grid(4, 3), mode=mode, mz_dtype=mz_dtype,
                    intensity_dtype=int_dtype,
                )  # fmt: skip
                yield (
                    name,
                    path,
                    f"{mode} mode, {np.dtype(mz_dtype).itemsize * 8}-bit "
                    f"{'float' if np.dtype(mz_dtype).kind == 'f' else 'integer'} m/z, "
                    f"{np.dtype(int_dtype).itemsize * 8}-bit "
                    f"{'float' if np.dtype(int_dtype).kind == 'f' else 'integer'} intensities, "
                    "4 x 3 pixels",
                )
    for mode in ("continuous", "processed"):
        spectra = _profile(12, 200, rng) if mode == "continuous" else _centroids(12, 60, rng)
        name = f"{mode}-zlib"
        yield (
            name,
            _write(folder, name, spectra, _grid(4, 3), mode=mode, zlib_compressed=True),
            f"{mode} mode, zlib-compressed m/z and intensity arrays (MS:1000574)",
        )
    # An irregular tissue outline on stage coordinates: an ellipse in x 101..120, y 41..54.
    cx, cy, rx, ry = 110.5, 47.5, 10.0, 7.0
    outline = [
        (x, y)
        for y in range(41, 55)
        for x in range(101, 121)
        if ((x - cx) / rx) ** 2 + ((y - cy) / ry) ** 2 <= 1.0
    ]
    yield (
        "stage-offset-ellipse",
        _write(
            folder,
            "stage-offset-ellipse",
            _centroids(len(outline), 30, rng),
            outline,
            mode="processed",
        ),  # fmt: skip
        f"processed mode, {len(outline)} pixels of an elliptical tissue outline on stage "
        "coordinates x 101..120, y 41..54 (the grid does not start at (1, 1))",
    )
    yield (
        "three-d",
        _write(folder, "three-d", _profile(27, 80, rng), _grid(3, 3, 3), mode="continuous"),
        "continuous mode, 3-D: 3 x 3 pixels on each of z = 1..3",
    )
    yield (
        "one-spectrum",
        _write(folder, "one-spectrum", _centroids(1, 40, rng), [(1, 1)], mode="processed"),
        "processed mode, a single spectrum",
    )
    yield (
        "six-spectra",
        _write(folder, "six-spectra", _profile(6, 100, rng), _grid(3, 2), mode="continuous"),
        "continuous mode, 6 spectra: fewer spectra than the platform's 8 chunks",
    )
    path = _write(
        folder, "zero-length-spectra", _centroids(9, 20, rng), _grid(3, 3), mode="processed"
    )
    _edit_spectra(path, [1, 4, 8], _zero_lengths)
    yield (
        "zero-length-spectra",
        path,
        "processed mode, 3 x 3 pixels; spectra 1, 4 and 8 have zero-length arrays",
    )
    spectra = [(mz, np.zeros_like(i)) for mz, i in _profile(9, 100, rng)]
    yield (
        "all-zero-spectra",
        _write(folder, "all-zero-spectra", spectra, _grid(3, 3), mode="continuous"),
        "continuous mode, 3 x 3 pixels, every intensity zero",
    )
    spectra = [(np.array([500.0 + i]), np.array([10.0 * (i + 1)])) for i in range(6)]
    yield (
        "one-mz-value-processed",
        _write(folder, "one-mz-value-processed", spectra, _grid(3, 2), mode="processed"),
        "processed mode, 6 spectra of one m/z value each",
    )
    spectra = [(np.array([500.0]), np.array([10.0 * (i + 1)])) for i in range(6)]
    yield (
        "one-mz-value-continuous",
        _write(folder, "one-mz-value-continuous", spectra, _grid(3, 2), mode="continuous"),
        "continuous mode, 6 spectra on a one-value m/z axis",
    )
    n = LONG_SPECTRUM_POINTS
    mz = np.linspace(100.0, 1000.0, n)
    long = mz, (rng.exponential(2.0, n) + 200.0 * np.exp(-0.5 * ((mz - 500.0) / 0.05) ** 2))
    short = next(_centroids(1, 50, rng))
    yield (
        "long-spectrum",
        _write(
            folder,
            "long-spectrum",
            [long, short],
            [(1, 1), (2, 1)],
            mode="processed",
            mz_dtype=np.float32,
            intensity_dtype=np.float32,
        ),  # fmt: skip
        f"processed mode, float32, one spectrum of {n:,} points beside a 50-peak one",
    )
    yield (
        "random-centroids-f32",
        _write(
            folder,
            "random-centroids-f32",
            _centroids(30, 25, rng),
            _grid(6, 5),
            mode="processed",
            mz_dtype=np.float32,
            intensity_dtype=np.float32,
        ),  # fmt: skip
        "processed mode, float32 m/z and intensities, random centroided peaks (6 x 5 pixels)",
    )
    for stem in ("Example_Continuous", "Example_Processed"):
        for suffix in (".imzML", ".ibd"):
            shutil.copyfile(EXAMPLES / f"{stem}{suffix}", folder / f"{stem}{suffix}")
        yield (
            stem,
            folder / f"{stem}.imzML",
            f"the official imzML 1.1 example ({stem.split('_')[1].lower()} mode, 3 x 3 pixels, "
            "8,399 float32 values per spectrum), as distributed with pyimzML",
        )


def _invalid_variants(folder: Path) -> Iterator[tuple[str, Path, str, str]]:
    rng = np.random.default_rng(7)
    spectra = list(_centroids(6, 20, rng))
    mz, intensity = spectra[2]
    spectra[2] = (mz[::-1].copy(), intensity)
    yield (
        "unsorted-mz",
        _write(folder, "unsorted-mz", spectra, _grid(3, 2), mode="processed"),
        "ImzMLUnsortedMz",
        "processed mode; spectrum 2 (x=3, y=1) has its m/z values in decreasing order",
    )
    coords = _grid(3, 2)
    coords[4] = coords[1]
    yield (
        "duplicate-coordinates",
        _write(folder, "duplicate-coordinates", _centroids(6, 20, rng), coords, mode="processed"),
        "ImzMLDuplicateCoordinate",
        "processed mode; spectrum 4 repeats the pixel (x=2, y=1) of spectrum 1",
    )
    spectra = list(_centroids(6, 20, rng))
    mz, intensity = spectra[3]
    spectra[3] = (mz, intensity[:-1])
    yield (
        "mismatched-lengths",
        _write(folder, "mismatched-lengths", spectra, _grid(3, 2), mode="processed"),
        "ImzMLArrayLengthMismatch",
        "processed mode; spectrum 3 (x=1, y=2) has one intensity fewer than m/z values",
    )
    spectra = list(_centroids(6, 20, rng))
    spectra[5][1][3] = np.nan
    yield (
        "nan-intensities",
        _write(folder, "nan-intensities", spectra, _grid(3, 2), mode="processed"),
        "ImzMLNonFiniteValues",
        "processed mode; spectrum 5 (x=3, y=2) holds a NaN intensity",
    )
    path = _write(folder, "truncated-ibd", _centroids(6, 20, rng), _grid(3, 2), mode="processed")
    ibd = path.with_suffix(".ibd")
    ibd.write_bytes(ibd.read_bytes()[:-40])
    _set_sha1(path)
    yield (
        "truncated-ibd",
        path,
        "ImzMLTruncated",
        "processed mode; the .ibd lacks its last 40 bytes (the declared SHA-1 matches the "
        "shortened file, so truncation is the only problem)",
    )
    path = _write(folder, "uuid-mismatch", _centroids(6, 20, rng), _grid(3, 2), mode="processed")
    xml = path.read_bytes()
    xml = re.sub(
        rb'(accession="IMS:1000080"[^>]*?value=")[^"]*(")',
        rb"\g<1>{00000000-1111-2222-3333-444444444444}\2",
        xml,
    )
    path.write_bytes(xml)
    yield (
        "uuid-mismatch",
        path,
        "ImzMLUUIDMismatch",
        "processed mode; the imzML declares a UUID the .ibd does not start with",
    )
    path = _write(folder, "numpress", _centroids(6, 20, rng), _grid(3, 2), mode="processed")
    xml = path.read_bytes().replace(
        b'accession="MS:1000576" name="no compression"',
        b'accession="MS:1002312" name="MS-Numpress linear prediction compression"',
        1,
    )
    path.write_bytes(xml)
    yield (
        "numpress",
        path,
        "ImzMLUnsupported",
        "valid imzML, unsupported: the m/z arrays declare MS-Numpress linear prediction "
        "compression (MS:1002312)",
    )
    path = _write(
        folder, "zlib-corrupt", _centroids(6, 20, rng), _grid(3, 2), mode="processed",
        zlib_compressed=True,
    )  # fmt: skip
    _corrupt_zlib_stream(path, spectrum=4)
    yield (
        "zlib-corrupt",
        path,
        "ImzMLCompressedDataError",
        "processed mode, zlib; spectrum 4's intensity stream is damaged (SHA-1 recomputed)",
    )


def _corrupt_zlib_stream(imzml: Path, spectrum: int) -> None:
    """Overwrite the middle of one spectrum's compressed intensity array with zeros."""
    xml = imzml.read_bytes()
    blocks = re.findall(rb"<spectrum [^>]*>.*?</spectrum>", xml, re.DOTALL)
    values = re.findall(rb'accession="IMS:100010([234])"[^>]*?value="(\d+)"', blocks[spectrum])
    intensity = dict((k, int(v)) for k, v in values[3:])  # the second array of the spectrum
    offset, encoded = intensity[b"2"], intensity[b"4"]
    ibd = bytearray(imzml.with_suffix(".ibd").read_bytes())
    ibd[offset + 2 : offset + encoded - 4] = bytes(encoded - 6)
    imzml.with_suffix(".ibd").write_bytes(bytes(ibd))
    _set_sha1(imzml)


def build_corpus(folder: str | Path) -> list[CorpusFile]:
    """Write every corpus variant into ``folder`` (created if needed) and describe them.

    Interface (stable; the platform's end-to-end test relies on it):

    * returns a list of :class:`CorpusFile` (``name``, ``imzml``, ``ibd``, ``expect_valid``,
      ``problem``, ``description``), names unique and usable as file stems and ids;
    * valid files: continuous/processed × float32/float64 m/z × float32/float64/int32/int64/
      float16 intensities (``<mode>-mz<t>-int<t>``), ``continuous-zlib``, ``processed-zlib``,
      ``stage-offset-ellipse`` (stage coordinates from (101, 41), elliptical outline),
      ``three-d`` (z = 1..3), ``one-spectrum``, ``six-spectra`` (fewer than 8 chunks),
      ``zero-length-spectra``, ``all-zero-spectra``, ``one-mz-value-processed``,
      ``one-mz-value-continuous``, ``long-spectrum`` (10**6 points), ``random-centroids-f32``
      and the official ``Example_Continuous`` / ``Example_Processed`` (copied);
    * invalid files (``expect_valid=False``, ``problem`` = the :mod:`em2q_msi.errors` class
      name): ``unsorted-mz``, ``duplicate-coordinates``, ``mismatched-lengths``,
      ``nan-intensities``, ``truncated-ibd``, ``uuid-mismatch``, ``zlib-corrupt``, and the valid
      but unsupported ``numpress``.

    Small files (about 13 MB in all, 8 of them the long spectrum), written in a few seconds;
    deterministic content for a given code version.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    corpus = [
        CorpusFile(name, *_pair(path), True, None, description)
        for name, path, description in _valid_variants(folder)
    ]
    corpus += [
        CorpusFile(name, *_pair(path), False, problem, description)
        for name, path, problem, description in _invalid_variants(folder)
    ]
    return corpus
