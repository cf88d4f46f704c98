"""Validate an imzML/ibd pair before it is registered, reporting every problem found.

An upload is refused on any problem, so the report must be complete (a technician fixes all of
them in one go) and every message must name the offending value: the spectrum index and its
pixel, the offset, both digests. Checks run from cheap to expensive: XML well-formedness and
imzML structure, the .ibd UUID and checksum, offsets against the .ibd size, coordinates against
the declared grid, then one pass over the data for unsorted and non-finite spectra (and, for
zlib-compressed arrays, whether each one inflates to its declared length). Zero-length spectra
are valid: a pixel where the instrument recorded nothing.
"""

from __future__ import annotations

import hashlib
import xml.parsers.expat
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from em2q_msi import errors
from em2q_msi.facts import declared_grid
from em2q_msi.imzml import ImzML, ibd_path_for, parse_header, read_header, split_url

_HASH_CHUNK = 8 << 20
_LISTED = 5  # offending spectra named in a message before "and N more"


@dataclass(frozen=True)
class Problem:
    """One thing wrong with the pair: a stable ``code`` (see :mod:`em2q_msi.errors`) and a
    message a technician can act on."""

    code: str
    message: str

    @classmethod
    def from_error(cls, exc: errors.ImzMLError) -> Problem:
        return cls(exc.code, str(exc))

    def to_dict(self) -> dict[str, str]:
        return {"code": self.code, "message": self.message}


@dataclass
class ValidationReport:
    url: str
    problems: list[Problem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def codes(self) -> list[str]:
        return [p.code for p in self.problems]

    def add(self, code: str, message: str) -> None:
        self.problems.append(Problem(code, message))

    def to_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "problems": [p.to_dict() for p in self.problems]}

    def raise_for_problems(self) -> None:
        if self.problems:
            lines = "; ".join(f"[{p.code}] {p.message}" for p in self.problems)
            raise errors.ImzMLValidationError(f"{self.url}: {lines}", self.problems)


def _spectra(n: int, verb: str = "") -> str:
    """``"1 spectrum is"`` / ``"3 spectra are"`` (``verb`` is "is", "has", "lies", ...)."""
    plural = {"is": "are", "has": "have", "lies": "lie", "repeats": "repeat", "contains": "contain"}
    noun = "spectrum" if n == 1 else "spectra"
    if verb:
        verb = " " + (verb if n == 1 else plural[verb])
    return f"{n} {noun}{verb}"


def _name_spectra(
    indices: Iterable[int], coords: np.ndarray, extra: dict[int, str] | None = None
) -> str:
    idx = list(indices)
    parts = []
    for i in idx[:_LISTED]:
        x, y, z = (int(v) for v in coords[i])
        note = f", {extra[i]}" if extra and i in extra else ""
        parts.append(f"spectrum {i} (x={x}, y={y}, z={z}{note})")
    more = f" and {len(idx) - _LISTED} more" if len(idx) > _LISTED else ""
    return ", ".join(parts) + more


def validate(
    url: str,
    storage_options: dict | None = None,
    cache_dir: str | None = None,
    check_data: bool = True,
) -> ValidationReport:
    """Check the pair at ``url`` (the .imzML; the .ibd beside it) and report every problem.

    ``check_data=False`` skips the pass over the spectra (empty/unsorted/non-finite) and the
    checksum, for a quick structural check.
    """
    report = ValidationReport(url)
    fs, path = split_url(url, storage_options)
    if not fs.exists(path):
        report.add(errors.ImzMLMissingFile.code, f"no imzML file at {url}")
        return report
    _check_well_formed(fs, path, report)
    try:
        data, spectrum_list_at = read_header(fs, path)
        header = parse_header(data, spectrum_list_at)
    except errors.ImzMLError as exc:
        if exc.code not in report.codes:
            report.problems.append(Problem.from_error(exc))
        return report
    try:
        ibd_path = ibd_path_for(fs, path)
    except errors.ImzMLMissingFile as exc:
        report.problems.append(Problem.from_error(exc))
        return report
    try:
        reader = ImzML.open(url, storage_options=storage_options, cache_dir=cache_dir)
    except errors.ImzMLError as exc:
        if exc.code not in report.codes:
            report.problems.append(Problem.from_error(exc))
        return report
    _check_uuid(reader, report)
    if check_data:
        _check_checksum(fs, ibd_path, header.checksum_type, header.checksum, report)
    readable = _check_offsets(reader, report)
    _check_coordinates(reader, report)
    empty = _empty(reader)
    if reader.mode == "processed":
        readable &= _check_lengths(reader, report)
    if reader.mode == "continuous":
        try:
            reader.mz_axis()
        except errors.ImzMLContinuousMismatch as exc:
            report.problems.append(Problem.from_error(exc))
            readable[:] = False
        except errors.ImzMLOffsetOutOfRange:
            readable[:] = False
    if check_data:
        try:
            _check_values(reader, readable & ~empty, report)
        except errors.ImzMLError as exc:  # a problem the structural checks did not foresee
            report.problems.append(Problem.from_error(exc))
    return report


def _check_well_formed(fs: Any, path: str, report: ValidationReport) -> None:
    """Stream the whole document through expat (C, no tree built)."""
    parser = xml.parsers.expat.ParserCreate()
    try:
        with fs.open(path, "rb") as f:
            parser.ParseFile(f)
    except xml.parsers.expat.ExpatError as exc:
        report.add(
            errors.ImzMLNotWellFormed.code,
            f"the imzML is not well-formed XML: {xml.parsers.expat.ErrorString(exc.code)} at "
            f"line {exc.lineno}, column {exc.offset}",
        )


def _check_uuid(reader: ImzML, report: ValidationReport) -> None:
    if reader.ibd_size < 16:
        report.add(
            errors.ImzMLTruncated.code,
            f"the .ibd is {reader.ibd_size} bytes long, shorter than its 16-byte UUID",
        )
        return
    ibd_uuid = bytes(reader.read_bytes(0, 16)).hex()
    if reader.uuid is None:
        report.add(
            errors.ImzMLUUIDMismatch.code,
            f"the imzML declares no UUID (IMS:1000080); the .ibd starts with {ibd_uuid}",
        )
    elif ibd_uuid != reader.uuid:
        report.add(
            errors.ImzMLUUIDMismatch.code,
            f".ibd UUID is {ibd_uuid}, the imzML declares {reader.uuid}: the files do not belong "
            "together",
        )


def _check_checksum(
    fs: Any, ibd_path: str, kind: str | None, declared: str | None, report: ValidationReport
) -> None:
    if kind is None or declared is None:
        return
    digest = hashlib.new(kind)
    with fs.open(ibd_path, "rb") as f:
        while chunk := f.read(_HASH_CHUNK):
            digest.update(chunk)
    actual = digest.hexdigest()
    if actual != declared:
        label = {"sha1": "SHA-1", "md5": "MD5"}[kind]
        report.add(
            errors.ImzMLChecksumMismatch.code,
            f".ibd {label} is {actual}, the imzML declares {declared}",
        )


def _check_offsets(reader: ImzML, report: ValidationReport) -> np.ndarray:
    """Offsets and lengths against the .ibd; returns which spectra can be read."""
    idx = reader.index
    size = reader.ibd_size
    coords = reader.coordinates
    n = reader.n_spectra
    readable = np.ones(n, dtype=bool)
    arrays = [
        (
            "m/z",
            idx.mz_offsets,
            idx.mz_lengths,
            idx.mz_encoded_lengths,
            reader.mz_dtype,
            bool(reader.header.mz_compression),
        ),
        (
            "intensity",
            idx.intensity_offsets,
            idx.intensity_lengths,
            idx.intensity_encoded_lengths,
            reader.intensity_dtype,
            bool(reader.header.intensity_compression),
        ),
    ]
    # A compressed array takes its encoded length in the .ibd, which it must declare.
    for what, _, _, enc, _, packed in arrays:
        missing = np.flatnonzero(enc < 0) if packed else np.empty(0, np.int64)
        if missing.size:
            report.add(
                errors.ImzMLCompressedDataError.code,
                f"{_spectra(missing.size, 'has')} a zlib-compressed {what} array without an "
                f"external encoded length (IMS:1000104): {_name_spectra(missing.tolist(), coords)}",
            )
            readable[missing] = False
    # All arrays as one table so truncation can be told apart from stray offsets.
    which = np.concatenate([np.full(n, k) for k in range(len(arrays))])
    spectrum = np.concatenate([np.arange(n)] * len(arrays))
    offsets = np.concatenate([a[1] for a in arrays])
    nbytes = np.concatenate(
        [
            np.maximum(enc, 0) if packed else lengths * dt.itemsize
            for _, _, lengths, enc, dt, packed in arrays
        ]
    )
    ends = offsets + nbytes

    mismatch = [
        (k, i)
        for k, (_, _, lengths, enc, dt, packed) in enumerate(arrays)
        if not packed
        for i in np.flatnonzero((enc >= 0) & (enc != lengths * dt.itemsize)).tolist()
    ]
    if mismatch:
        notes = {
            i: f"{arrays[k][0]} encoded length {int(arrays[k][3][i])} bytes, expected "
            f"{int(arrays[k][2][i])} x {arrays[k][4].itemsize}"
            for k, i in mismatch
        }
        report.add(
            errors.ImzMLEncodedLengthMismatch.code,
            f"{len(mismatch)} arrays declare an encoded length that does not match their array "
            f"length and data type: {_name_spectra(sorted(notes), coords, notes)}",
        )

    low = np.flatnonzero(offsets < 16)
    beyond = np.flatnonzero(ends > size)
    stray: list[int] = low.tolist()
    truncated: list[int] = []
    if beyond.size:
        # Arrays that continue the layout past the end of the file are truncation; arrays that
        # jump beyond it are stray offsets.
        inside = ends <= size
        last_end = int(ends[inside & (offsets >= 16)].max()) if np.any(inside) else 16
        order = beyond[np.argsort(offsets[beyond], kind="stable")]
        chain_end = last_end
        for j in order.tolist():
            if offsets[j] <= max(chain_end, size):
                truncated.append(j)
                chain_end = max(chain_end, int(ends[j]))
            else:
                stray.append(j)
    if truncated and errors.ImzMLTruncated.code not in report.codes:
        first = min(truncated, key=lambda j: offsets[j])
        spectra = sorted({int(spectrum[j]) for j in truncated})
        report.add(
            errors.ImzMLTruncated.code,
            f"the .ibd is truncated: it is {size} bytes long but the imzML declares data up to "
            f"byte {int(ends[truncated].max())}; the first missing array is the "
            f"{arrays[int(which[first])][0]} array of spectrum {int(spectrum[first])} at offset "
            f"{int(offsets[first])} ({int(nbytes[first])} bytes); "
            f"{_spectra(len(spectra))} affected: {_name_spectra(spectra, coords)}",
        )
    if stray:
        notes = {}
        for j in sorted(stray, key=lambda j: (spectrum[j], which[j])):
            i = int(spectrum[j])
            notes.setdefault(
                i,
                f"{arrays[int(which[j])][0]} array at offset {int(offsets[j])}, "
                f"{int(nbytes[j])} bytes",
            )
        report.add(
            errors.ImzMLOffsetOutOfRange.code,
            f"{len(stray)} arrays point outside the .ibd ({size} bytes, data from byte 16): "
            f"{_name_spectra(sorted(notes), coords, notes)}",
        )
    for j in [*truncated, *stray]:
        readable[int(spectrum[j])] = False
    return readable


def _check_coordinates(reader: ImzML, report: ValidationReport) -> None:
    coords = reader.coordinates
    grid = declared_grid(reader)
    max_x, max_y = grid["max_count_x"], grid["max_count_y"]
    outside = (coords[:, 0] < 1) | (coords[:, 1] < 1) | (coords[:, 2] < 1)
    # Writers read "max count of pixels" two ways: the largest coordinate (pyimzML, most
    # writers) or the size of the acquired box when the stage coordinates carry an offset
    # (seen in instrument exports). A coordinate is outside only when it fits neither.
    for axis, declared in ((0, max_x), (1, max_y)):
        if declared is None:
            continue
        values = coords[:, axis]
        extent = int(values.max() - values.min() + 1) if values.size else 0
        if extent > declared or not values.size:
            outside |= values > declared
    bad = np.flatnonzero(outside)
    if bad.size:
        report.add(
            errors.ImzMLCoordinateOutsideGrid.code,
            f"{_spectra(bad.size, 'lies')} outside the declared pixel grid "
            f"x 1..{max_x if max_x is not None else '?'}, y 1..{max_y if max_y is not None else '?'} "
            f"(IMS:1000042/1000043): {_name_spectra(bad.tolist(), coords)}",
        )
    _, first, inverse, counts = np.unique(
        coords, axis=0, return_index=True, return_inverse=True, return_counts=True
    )
    dup_groups = np.flatnonzero(counts > 1)
    if dup_groups.size:
        inverse = inverse.reshape(-1)
        dups = np.flatnonzero(
            np.isin(inverse, dup_groups) & (np.arange(len(coords)) != first[inverse])
        )
        notes = {int(i): f"same pixel as spectrum {int(first[inverse[i]])}" for i in dups}
        report.add(
            errors.ImzMLDuplicateCoordinate.code,
            f"{_spectra(dups.size, 'repeats')} the coordinates of an earlier spectrum: "
            f"{_name_spectra(dups.tolist(), coords, notes)}",
        )


def _empty(reader: ImzML) -> np.ndarray:
    """Spectra with no values: valid (a pixel where the instrument recorded nothing), processed
    as empty spectra, and skipped by the value checks."""
    idx = reader.index
    return (idx.intensity_lengths == 0) | (idx.mz_lengths == 0)


def _check_lengths(reader: ImzML, report: ValidationReport) -> np.ndarray:
    """Processed spectra need as many intensities as m/z values; returns which do."""
    idx = reader.index
    bad = np.flatnonzero(idx.mz_lengths != idx.intensity_lengths)
    if bad.size:
        notes = {
            int(i): f"{int(idx.mz_lengths[i])} m/z values, {int(idx.intensity_lengths[i])} "
            "intensities"
            for i in bad
        }
        report.add(
            errors.ImzMLArrayLengthMismatch.code,
            f"{_spectra(bad.size, 'has')} m/z and intensity arrays of different lengths: "
            f"{_name_spectra(bad.tolist(), reader.coordinates, notes)}",
        )
    return idx.mz_lengths == idx.intensity_lengths


def _check_values(reader: ImzML, readable: np.ndarray, report: ValidationReport) -> None:
    """One pass over the readable spectra: m/z non-decreasing, no NaN/inf."""
    unsorted: set[int] = set()
    non_finite: dict[int, str] = {}
    broken: dict[int, str] = {}
    n = reader.n_spectra
    rows = reader.rows_for_bytes(16 << 20)
    if reader.mode == "continuous" and readable.any():
        mz = reader.mz_axis()
        if mz.size > 1 and np.any(np.diff(mz) < 0):
            unsorted.update(np.flatnonzero(readable).tolist())
        if mz.dtype.kind == "f" and not np.all(np.isfinite(mz)):
            for i in np.flatnonzero(readable).tolist():
                non_finite[i] = "m/z"
    for start in range(0, n, rows):
        stop = min(n, start + rows)
        ok = readable[start:stop]
        if not ok.any():
            continue
        blocks = []
        try:
            if ok.all():
                blocks = [reader.read_block(start, stop)]
            else:
                blocks = [reader.read_block(i, i + 1) for i in range(start, stop) if readable[i]]
        except errors.ImzMLCompressedDataError:
            # Name every array that does not inflate, then check the others.
            for i in range(start, stop):
                if readable[i]:
                    try:
                        blocks.append(reader.read_block(i, i + 1))
                    except errors.ImzMLCompressedDataError as exc:
                        broken[i] = str(exc).split(": ", 1)[-1]
        for block in blocks:
            _check_block(block, unsorted, non_finite)
    coords = reader.coordinates
    if broken:
        report.add(
            errors.ImzMLCompressedDataError.code,
            f"{_spectra(len(broken), 'has')} compressed arrays that do not decompress to their "
            f"declared length: {_name_spectra(sorted(broken), coords, broken)}",
        )
    if unsorted:
        report.add(
            errors.ImzMLUnsortedMz.code,
            f"{_spectra(len(unsorted), 'has')} m/z values that are not in increasing order: "
            f"{_name_spectra(sorted(unsorted), coords)}",
        )
    if non_finite:
        report.add(
            errors.ImzMLNonFiniteValues.code,
            f"{_spectra(len(non_finite), 'contains')} NaN or infinite values: "
            f"{_name_spectra(sorted(non_finite), coords, non_finite)}",
        )


def _check_block(block: Any, unsorted: set[int], non_finite: dict[int, str]) -> None:
    first = block.first_index
    if block.is_continuous:
        if block.intensity.dtype.kind == "f":
            bad_rows = np.flatnonzero(~np.isfinite(block.intensity).all(axis=1))
            for r in bad_rows.tolist():
                non_finite[first + r] = "intensity"
        return
    offsets = block.offsets
    owner = np.repeat(np.arange(len(block)), np.diff(offsets))
    if block.mz.size > 1:
        dec = np.flatnonzero(np.diff(block.mz) < 0)
        dec = dec[owner[dec] == owner[dec + 1]]  # ignore the step from one spectrum to the next
        unsorted.update((first + owner[dec]).tolist())
    for name, arr in (("m/z", block.mz), ("intensity", block.intensity)):
        if arr.dtype.kind == "f":
            bad = np.flatnonzero(~np.isfinite(arr))
            for r in np.unique(owner[bad]).tolist():
                non_finite.setdefault(first + r, name)
