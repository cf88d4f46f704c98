"""Read an imzML/ibd pair from any fsspec URL, fast.

Why not pyimzml for everything: its ElementTree walk over ``<spectrumList>`` runs at ~24k
spectra/s and it reads spectra one ``file.read`` at a time. Here pyimzml parses only the header
(everything before ``<run>``: the controlled vocabulary, referenceable parameter groups, scan
settings, instrument), a regular-expression scan over the raw bytes builds the spectrum index
(coordinates, offsets, lengths), and spectra are read in blocks: continuous data as one 2-D
``numpy.memmap``/ranged read per block of rows, processed data as one read per block gathered
through the offset arrays. Zlib-compressed arrays (MS:1000574) are inflated per spectrum from their
encoded length (IMS:1000104): a ranged read then costs the decompression of every array it
touches (see docs/reading.md). The index is cached beside the data (or in a cache folder the caller
names) keyed on the imzML's size, modification time and header digest, so a second open reads
one small ``.npz`` instead of the XML.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import re
import warnings
import xml.etree.ElementTree as ET
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import fsspec
import numpy as np
from fsspec.implementations.local import LocalFileSystem

from em2q_msi.errors import (
    ImzMLArrayLengthMismatch,
    ImzMLCompressedDataError,
    ImzMLContinuousMismatch,
    ImzMLMissingFile,
    ImzMLNotImzML,
    ImzMLNotWellFormed,
    ImzMLOffsetOutOfRange,
    ImzMLUnsupported,
)
from em2q_msi.spectra import SpectraBlock
from em2q_msi.temporaries import write_atomic

#: Bump when the cached index layout changes; old caches then count as stale.
INDEX_VERSION = 1
INDEX_SUFFIX = ".em2q-index.npz"

#: Binary data types by accession (imzML stores little-endian); 16-bit float is PSI-MS's
#: MS:1000520, which mzML allows and some converters write.
DTYPE_BY_ACCESSION: dict[str, np.dtype] = {
    "MS:1000520": np.dtype("<f2"),
    "MS:1000521": np.dtype("<f4"),
    "MS:1000523": np.dtype("<f8"),
    "MS:1000519": np.dtype("<i4"),
    "MS:1000522": np.dtype("<i8"),
    "IMS:1000141": np.dtype("<i4"),
    "IMS:1000142": np.dtype("<i8"),
}
NO_COMPRESSION = "MS:1000576"
ZLIB_COMPRESSION = "MS:1000574"
#: Compression types of the PSI-MS CV, by accession, for messages naming what is refused.
COMPRESSION_NAMES: dict[str, str] = {
    NO_COMPRESSION: "no compression",
    ZLIB_COMPRESSION: "zlib compression",
    "MS:1002312": "MS-Numpress linear prediction compression",
    "MS:1002313": "MS-Numpress positive integer compression",
    "MS:1002314": "MS-Numpress short logged float compression",
    "MS:1002746": "MS-Numpress linear prediction compression followed by zlib compression",
    "MS:1002747": "MS-Numpress positive integer compression followed by zlib compression",
    "MS:1002748": "MS-Numpress short logged float compression followed by zlib compression",
    "MS:1003088": "truncation, delta prediction and zlib compression",
    "MS:1003089": "truncation, linear prediction and zlib compression",
    "MS:1003090": "truncation and zlib compression",
}
SUPPORTED_COMPRESSION = (NO_COMPRESSION, ZLIB_COMPRESSION)
MZ_ARRAY = "MS:1000514"
INTENSITY_ARRAY = "MS:1000515"
CONTINUOUS = "IMS:1000030"
PROCESSED = "IMS:1000031"
UUID_ACCESSION = "IMS:1000080"
CHECKSUM_ACCESSIONS = {"IMS:1000091": "sha1", "IMS:1000090": "md5"}

_HEADER_READ = 1 << 16
_SCAN_WINDOW = 1 << 24
_DEFAULT_BLOCK_BYTES = 32 << 20
_RESIDENT_BYTES = 1 << 30

_TOKEN = re.compile(
    rb"<(spectrum|binaryDataArray)[\s>/]"
    rb"|</(spectrum|binaryDataArray)>"
    rb'|<referenceableParamGroupRef\s+ref="([^"]*)"'
    rb'|<cvParam\s[^>]*?accession="(IMS:1000(?:05[012]|10[234])|MS:100051[45])"[^>]*?value="([^"]*)"'
    rb'|<cvParam\s[^>]*?value="([^"]*)"[^>]*?accession="(IMS:1000(?:05[012]|10[234])|MS:100051[45])"'
    rb'|<cvParam\s[^>]*?accession="(MS:100051[45])"'
)


@dataclass(frozen=True)
class SpectraIndex:
    """Where each spectrum lives in the .ibd; offsets and encoded lengths in bytes, lengths in
    array elements; ``-1`` where the imzML did not declare a value."""

    coordinates: np.ndarray
    mz_offsets: np.ndarray
    mz_lengths: np.ndarray
    mz_encoded_lengths: np.ndarray
    intensity_offsets: np.ndarray
    intensity_lengths: np.ndarray
    intensity_encoded_lengths: np.ndarray

    FIELDS = (
        "coordinates",
        "mz_offsets",
        "mz_lengths",
        "mz_encoded_lengths",
        "intensity_offsets",
        "intensity_lengths",
        "intensity_encoded_lengths",
    )

    def __len__(self) -> int:
        return int(self.coordinates.shape[0])


@dataclass(frozen=True)
class Header:
    """What the imzML declares before its spectra, read with pyimzml's metadata parser."""

    metadata: Any  # pyimzml.metadata.Metadata
    mode: str
    uuid: str | None
    checksum_type: str | None
    checksum: str | None
    mz_dtype: np.dtype
    intensity_dtype: np.dtype
    mz_group_ids: frozenset[str]
    intensity_group_ids: frozenset[str]
    digest: str
    first_spectrum_xml: bytes
    #: ``"zlib"`` when the arrays are zlib-compressed, else ``None``
    mz_compression: str | None = None
    intensity_compression: str | None = None


def _normalise_uuid(value: str | None) -> str | None:
    if not value:
        return None
    text = value.strip().strip("{}").replace("-", "").lower()
    return text or None


def split_url(
    url: str, storage_options: dict | None = None
) -> tuple[fsspec.AbstractFileSystem, str]:
    """``(filesystem, path)`` for a local path or any fsspec URL."""
    fs, path = fsspec.core.url_to_fs(url, **(storage_options or {}))
    return fs, path


def is_local(fs: fsspec.AbstractFileSystem) -> bool:
    return isinstance(fs, LocalFileSystem)


def ibd_path_for(fs: fsspec.AbstractFileSystem, imzml_path: str) -> str:
    """The .ibd beside an .imzML (same stem, ``.ibd`` in any case)."""
    stem, _ = os.path.splitext(imzml_path)
    for ext in (".ibd", ".IBD", ".Ibd"):
        if fs.exists(stem + ext):
            return stem + ext
    raise ImzMLMissingFile(f"no .ibd file beside {imzml_path} (looked for {stem}.ibd)")


def read_header(fs: fsspec.AbstractFileSystem, path: str) -> tuple[bytes, int]:
    """The imzML bytes up to and including the first spectrum, and where ``<spectrumList``
    starts (-1 if the document has none)."""
    chunks: list[bytes] = []
    size = fs.size(path)
    start = 0
    data = b""
    while start < size:
        stop = min(size, start + _HEADER_READ)
        chunks.append(fs.cat_file(path, start=start, end=stop))
        start = stop
        data = b"".join(chunks)
        pos = data.find(b"<spectrumList")
        if pos >= 0 and data.find(b"</spectrum>", pos) >= 0:
            return data, pos
    return data, data.find(b"<spectrumList")


def parse_header(data: bytes, spectrum_list_at: int) -> Header:
    """Parse the header with pyimzml's metadata classes; raise specific errors for non-imzML."""
    from pyimzml.metadata import Metadata

    if spectrum_list_at < 0:
        # No spectra: still say whether the XML itself is broken.
        _check_well_formed_bytes(data)
        raise ImzMLNotImzML("the document has no <spectrumList>: not an imzML file")
    run_at = data.rfind(b"<run", 0, spectrum_list_at)
    cut = run_at if run_at >= 0 else spectrum_list_at
    header_xml = data[:cut] + b"</mzML>"
    try:
        root = ET.fromstring(header_xml)
    except ET.ParseError as exc:
        raise ImzMLNotWellFormed(f"the imzML header is not well-formed XML: {exc}") from exc
    if not root.tag.endswith("mzML"):
        raise ImzMLNotImzML(f"the root element is <{root.tag}>, an imzML file has <mzML>")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            metadata = Metadata(root)
    except (AttributeError, KeyError, TypeError) as exc:
        raise ImzMLNotImzML(f"the mzML header lacks a required section: {exc}") from exc

    fc = metadata.file_description
    accessions = set(fc.param_by_accession)
    if CONTINUOUS in accessions:
        mode = "continuous"
    elif PROCESSED in accessions:
        mode = "processed"
    else:
        raise ImzMLNotImzML(
            "the fileContent declares neither continuous (IMS:1000030) nor processed "
            "(IMS:1000031) mode: not an imzML file"
        )
    checksum_type = checksum = None
    for accession, kind in CHECKSUM_ACCESSIONS.items():
        if accession in accessions:
            checksum_type, checksum = kind, str(fc.param_by_accession[accession]).strip().lower()
            break
    mz_dtype, mz_groups, mz_zlib = _array_group(metadata, MZ_ARRAY, "m/z")
    int_dtype, int_groups, int_zlib = _array_group(metadata, INTENSITY_ARRAY, "intensity")
    end_first = data.find(b"</spectrum>", spectrum_list_at)
    first = data[spectrum_list_at : end_first + 11] if end_first >= 0 else b""
    return Header(
        metadata=metadata,
        mode=mode,
        uuid=_normalise_uuid(fc.param_by_accession.get(UUID_ACCESSION)),
        checksum_type=checksum_type,
        checksum=checksum,
        mz_dtype=mz_dtype,
        intensity_dtype=int_dtype,
        mz_group_ids=mz_groups,
        intensity_group_ids=int_groups,
        digest=hashlib.sha1(data[:cut]).hexdigest(),
        first_spectrum_xml=first,
        mz_compression="zlib" if mz_zlib else None,
        intensity_compression="zlib" if int_zlib else None,
    )


def _array_group(
    metadata: Any, accession: str, label: str
) -> tuple[np.dtype, frozenset[str], bool]:
    """``(dtype, group ids, zlib-compressed?)`` of the m/z or intensity array groups."""
    ids = []
    dtype = None
    zlib_compressed = False
    for group_id, group in metadata.referenceable_param_groups.items():
        accs = set(group.param_by_accession)
        if accession not in accs:
            continue
        ids.append(group_id)
        for acc in accs:
            if acc in DTYPE_BY_ACCESSION:
                dtype = DTYPE_BY_ACCESSION[acc]
        for name, acc, *_ in group.cv_params:
            if acc == ZLIB_COMPRESSION:
                zlib_compressed = True
            elif acc != NO_COMPRESSION and (
                acc in COMPRESSION_NAMES or "compression" in str(name).lower()
            ):
                raise ImzMLUnsupported(
                    f"the {label} arrays of every spectrum (referenceableParamGroup "
                    f"{group_id!r}) use {COMPRESSION_NAMES.get(acc, name)} ({acc}); EM²Q reads "
                    "uncompressed (MS:1000576) and zlib-compressed (MS:1000574) arrays only: "
                    "convert the file without that compression (e.g. msconvert --zlib or "
                    "without --numpress*)"
                )
    if not ids:
        raise ImzMLNotImzML(
            f"no referenceableParamGroup declares the {label} array ({accession}): "
            "not an imzML file this reader understands"
        )
    if dtype is None:
        raise ImzMLNotImzML(
            f"the {label} array group declares no binary data type (16/32/64-bit float or "
            "32/64-bit integer)"
        )
    return dtype, frozenset(ids), zlib_compressed


def _check_well_formed_bytes(data: bytes) -> None:
    import xml.parsers.expat

    parser = xml.parsers.expat.ParserCreate()
    try:
        parser.Parse(data, True)
    except xml.parsers.expat.ExpatError as exc:
        raise ImzMLNotWellFormed(f"the imzML is not well-formed XML: {exc}") from exc


_FAST_PARAM = re.compile(rb'IMS:1000(05[012]|10[234])"[^v>]*(?:v(?!alue=)[^v>]*)*value="([^"]*)"')
_FAST_REF = re.compile(rb'<binaryDataArray\b[^>]*>\s*<referenceableParamGroupRef\s+ref="([^"]*)"')
_SPECTRUM_START = re.compile(rb"<spectrum[\s>]")
_INLINE_COMPRESSION = re.compile(rb'"(MS:100(?:057[46]|231[234]|274[678]|308[89]|3090))"')


def _windows(data: Any, start: int) -> Iterator[tuple[Any, int, int]]:
    """``(buffer, pos, end)`` windows of an in-memory/mapped document, ending on
    ``</spectrum>``."""
    size = len(data)
    pos = start
    while pos < size:
        end = min(size, pos + _SCAN_WINDOW)
        if end < size:
            cut = data.find(b"</spectrum>", end)
            end = size if cut < 0 else cut + 11
        yield data, pos, end
        pos = end


def _stream_windows(
    fs: fsspec.AbstractFileSystem, path: str, start: int
) -> Iterator[tuple[bytes, int, int]]:
    """The same windows read sequentially from a remote file, one window in memory at a
    time."""
    carry = b""
    with fs.open(path, "rb", block_size=_SCAN_WINDOW) as f:
        f.seek(start)
        while True:
            chunk = f.read(_SCAN_WINDOW)
            buf = carry + chunk
            if not chunk:
                if buf:
                    yield buf, 0, len(buf)
                return
            cut = buf.rfind(b"</spectrum>")
            if cut < 0:
                carry = buf
                continue
            yield buf, 0, cut + 11
            carry = buf[cut + 11 :]


def scan_index(data: Any, start: int, header: Header) -> SpectraIndex:
    """Build the spectrum index from the raw imzML bytes (``bytes`` or ``mmap``)."""
    return scan_windows(_windows(data, start), header)


def scan_windows(windows: Iterable[tuple[Any, int, int]], header: Header) -> SpectraIndex:
    """Build the spectrum index from ``(buffer, pos, end)`` windows of the spectrum list.

    Windows end on ``</spectrum>`` so memory stays bounded for multi-GB documents.
    Each window first tries a fast path (three literal-prefix regular expressions and numpy
    bookkeeping) that holds for the layout every common writer uses: position cvParams with
    ``accession`` before ``value``, two binaryDataArrays per spectrum each opening with its
    group reference. When any count does not add up, the window is re-read by the general
    tokenizer, which follows the document structure token by token.
    """
    ref_kind: dict[bytes, int] = {g.encode(): 1 for g in header.mz_group_ids}
    ref_kind.update({g.encode(): 2 for g in header.intensity_group_ids})
    parts: list[np.ndarray] = []
    group_compression = {
        ZLIB_COMPRESSION if header.mz_compression else NO_COMPRESSION,
        ZLIB_COMPRESSION if header.intensity_compression else NO_COMPRESSION,
    }
    seen = 0
    for data, pos, end in windows:
        _check_inline_compression(data, pos, end, group_compression, seen)
        table = _scan_window_fast(data, pos, end, ref_kind)
        if table is None:
            table = _scan_window_general(data, pos, end, ref_kind)
        parts.append(table)
        seen += table.shape[0]
    table = np.concatenate(parts) if parts else np.empty((0, 9), np.int64)
    if table.shape[0] == 0:
        raise ImzMLNotImzML("the imzML declares no spectra")
    cols = [np.ascontiguousarray(table[:, i]) for i in range(3, 9)]
    index = SpectraIndex(np.ascontiguousarray(table[:, :3]), *cols)
    _check_index_complete(index)
    return index


def _check_inline_compression(
    data: Any, pos: int, end: int, group_compression: set[str], seen: int
) -> None:
    """Refuse a compression declared inside a spectrum that its array groups do not declare:
    the reader decodes every array the way its referenceableParamGroup says. (Every
    compression term's name, a required attribute, holds "compression": one plain ``find``
    skips windows without any, at memory speed.)"""
    hint = data.find(b"compression", pos, end)
    if hint < 0:
        return
    at = max(pos, data.rfind(b"<", pos, hint))
    while (match := _INLINE_COMPRESSION.search(data, at, end)) is not None:
        acc = match.group(1).decode()
        at = match.end()
        if acc in group_compression:
            continue
        spectrum = seen + len(_SPECTRUM_START.findall(data, pos, match.start())) - 1
        declared = " and ".join(sorted(COMPRESSION_NAMES[a] for a in group_compression))
        raise ImzMLUnsupported(
            f"spectrum {spectrum} declares {COMPRESSION_NAMES[acc]} ({acc}) on one of its "
            f"binary data arrays, but the array groups declare {declared}: per-spectrum "
            "compression is not supported (EM²Q reads uncompressed and zlib-compressed arrays "
            "declared in the referenceableParamGroup)"
        )


def _scan_window_fast(
    data: Any, pos: int, end: int, ref_kind: dict[bytes, int]
) -> np.ndarray | None:
    """Rows ``(x, y, z, mz offset, mz length, mz encoded length, intensity offset, length,
    encoded length)`` for the spectra in ``data[pos:end]``, or ``None`` when the layout is not
    the common one."""
    n = len(_SPECTRUM_START.findall(data, pos, end))
    if n == 0:
        return np.empty((0, 9), np.int64)
    tokens = _FAST_PARAM.findall(data, pos, end)
    refs = _FAST_REF.findall(data, pos, end)
    if len(refs) != 2 * n or not tokens:
        return None
    codes_t, values_t = zip(*tokens, strict=True)
    codes = np.array(codes_t)
    try:
        values = np.array(values_t).astype(np.int64)
    except ValueError:
        return None
    is_x = codes == b"050"
    if not is_x[0] or int(is_x.sum()) != n:
        return None
    spec = np.cumsum(is_x) - 1
    one = np.arange(n)
    two = np.repeat(one, 2)
    out = np.full((n, 9), -1, dtype=np.int64)
    out[:, 2] = 1
    for code, col, expect in ((b"050", 0, one), (b"051", 1, one), (b"052", 2, one)):
        sel = codes == code
        if code == b"052" and not sel.any():
            continue
        if not np.array_equal(spec[sel], expect):
            return None
        out[:, col] = values[sel]
    try:
        kinds = np.array([ref_kind[r] for r in refs], dtype=np.int64).reshape(n, 2)
    except KeyError:
        return None
    if not np.all(np.sort(kinds, axis=1) == [1, 2]):
        return None
    mz_slot = np.argmin(kinds, axis=1)  # which of the two arrays holds m/z
    for code, offset in ((b"102", 0), (b"103", 1), (b"104", 2)):
        sel = codes == code
        if code == b"104" and not sel.any():
            continue
        if not np.array_equal(spec[sel], two):
            return None
        vals = values[sel].reshape(n, 2)
        out[:, 3 + offset] = vals[one, mz_slot]
        out[:, 6 + offset] = vals[one, 1 - mz_slot]
    return out


def _scan_window_general(data: Any, pos: int, end: int, ref_kind: dict[bytes, int]) -> np.ndarray:
    """The structure-following tokenizer: any attribute order, array kind by group reference
    or by an inline m/z / intensity cvParam."""
    rows: list[list[int]] = []
    spec: list[int] | None = None
    kind = 0  # 1 m/z, 2 intensity
    arr = [-1, -1, -1]  # offset, length, encoded length
    key_of = {
        b"IMS:1000050": 0,
        b"IMS:1000051": 1,
        b"IMS:1000052": 2,
        b"IMS:1000102": 3,
        b"IMS:1000103": 4,
        b"IMS:1000104": 5,
        b"MS:1000514": 6,
        b"MS:1000515": 7,
    }
    for el_start, el_end, ref, acc_a, val_a, val_b, acc_b, acc_c in _TOKEN.findall(data, pos, end):
        if el_start:
            if el_start == b"spectrum":
                spec = [-1, -1, 1, -1, -1, -1, -1, -1, -1]
            else:
                kind = 0
                arr = [-1, -1, -1]
        elif el_end:
            if spec is None:
                continue
            if el_end == b"spectrum":
                rows.append(spec)
                spec = None
            elif kind == 1:
                spec[3:6] = arr
            elif kind == 2:
                spec[6:9] = arr
            kind = 0
        elif ref:
            kind = ref_kind.get(ref, kind)
        elif spec is not None:
            key = key_of[acc_a or acc_b or acc_c]
            try:
                value = int(val_a or val_b) if key < 6 else 0
            except ValueError as exc:
                raise ImzMLNotImzML(
                    f"spectrum {len(rows)}: {(acc_a or acc_b).decode()} has the non-integer "
                    f"value {(val_a or val_b).decode()!r}"
                ) from exc
            if key < 3:
                spec[key] = value
            elif key < 6:
                arr[key - 3] = value
            else:
                kind = 1 if key == 6 else 2
    return np.array(rows, dtype=np.int64).reshape(-1, 9)


def _check_index_complete(index: SpectraIndex) -> None:
    for name in ("mz_offsets", "mz_lengths", "intensity_offsets", "intensity_lengths"):
        bad = np.flatnonzero(getattr(index, name) < 0)
        if bad.size:
            raise ImzMLNotImzML(
                f"{bad.size} spectra declare no {name.replace('_', ' ')[:-1]} "
                f"(IMS:1000102/1000103), first spectrum {int(bad[0])}"
            )
    bad = np.flatnonzero((index.coordinates[:, 0] < 0) | (index.coordinates[:, 1] < 0))
    if bad.size:
        raise ImzMLNotImzML(
            f"{bad.size} spectra declare no position x/y (IMS:1000050/1000051), "
            f"first spectrum {int(bad[0])}"
        )


def _cache_key(size: int, mtime: Any, digest: str) -> str:
    return f"v{INDEX_VERSION}:{size}:{mtime}:{digest}"


def _mtime(fs: fsspec.AbstractFileSystem, path: str) -> str:
    if is_local(fs):
        return str(os.stat(path).st_mtime_ns)
    info = fs.info(path)
    for key in ("mtime", "LastModified", "ETag", "created"):
        if info.get(key) is not None:
            return str(info[key])
    return "unknown"


class ImzML:
    """An open imzML/ibd pair; spectra are read on demand, in blocks.

    Use :meth:`open`; ``coordinates`` are 1-based ``(x, y, z)`` with ``z = 1`` when the file
    declares none (as pyimzml does).
    """

    def __init__(
        self,
        fs: fsspec.AbstractFileSystem,
        imzml_path: str,
        ibd_path: str,
        header: Header,
        index: SpectraIndex,
        index_source: str,
    ) -> None:
        self.fs = fs
        self.imzml_path = imzml_path
        self.ibd_path = ibd_path
        self.header = header
        self.index = index
        #: ``"scan"`` when the XML was scanned, else the cache path the index came from.
        self.index_source = index_source
        self.ibd_size = int(fs.size(ibd_path))
        self._local = is_local(fs)
        self._mz_axis: np.ndarray | None = None
        self._mmap: Any = None
        self._bytes: np.ndarray | None = None
        #: Local files larger than this are streamed: each block's pages are released from
        #: this process's mapping after the copy, so RSS stays one block whatever the file
        #: size. Smaller files stay mapped, so repeated reads run at memory-copy speed.
        self.resident_bytes = _RESIDENT_BYTES

    # -- opening -------------------------------------------------------------------------
    @classmethod
    def open(
        cls,
        url: str,
        storage_options: dict | None = None,
        cache_dir: str | None = None,
        use_cache: bool = True,
    ) -> ImzML:
        """Open ``url`` (local path or fsspec URL of the .imzML; the .ibd lies beside it).

        The index is read from ``<url>.em2q-index.npz`` or ``cache_dir`` when its key matches
        the imzML's size, mtime and header digest, else scanned and written back (into
        ``cache_dir`` when given, else beside the data; never an error when neither works).
        """
        fs, path = split_url(url, storage_options)
        if not fs.exists(path):
            raise ImzMLMissingFile(f"no imzML file at {url}")
        ibd = ibd_path_for(fs, path)
        data, spectrum_list_at = read_header(fs, path)
        header = parse_header(data, spectrum_list_at)
        size = int(fs.size(path))
        key = _cache_key(size, _mtime(fs, path), header.digest)
        candidates = _cache_candidates(fs, path, cache_dir)
        if use_cache:
            for cfs, cpath in candidates:
                index = _load_cached_index(cfs, cpath, key)
                if index is not None:
                    return cls(fs, path, ibd, header, index, cpath)
        index = _scan_file(fs, path, spectrum_list_at, header)
        if use_cache:
            # An explicit cache folder wins for writing, so shared read-only data is never
            # written to by a caller that named one.
            for cfs, cpath in candidates[::-1]:
                if _store_index(cfs, cpath, key, index):
                    break
        return cls(fs, path, ibd, header, index, "scan")

    def close(self) -> None:
        """Unmap the .ibd (reads after this map it again)."""
        self._bytes = None
        if self._mmap is not None:
            with contextlib.suppress(BufferError, ValueError):
                self._mmap.close()
            self._mmap = None

    def __enter__(self) -> ImzML:
        return self

    def __getstate__(self) -> dict[str, Any]:
        """Picklable (for process pools): the mapping is reopened on first read."""
        state = self.__dict__.copy()
        state["_mmap"] = state["_bytes"] = None
        return state

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- properties ----------------------------------------------------------------------
    @property
    def mode(self) -> str:
        return self.header.mode

    @property
    def n_spectra(self) -> int:
        return len(self.index)

    def __len__(self) -> int:
        return self.n_spectra

    @property
    def coordinates(self) -> np.ndarray:
        return self.index.coordinates

    @property
    def mz_dtype(self) -> np.dtype:
        return self.header.mz_dtype

    @property
    def intensity_dtype(self) -> np.dtype:
        return self.header.intensity_dtype

    @property
    def uuid(self) -> str | None:
        return self.header.uuid

    @property
    def checksum_type(self) -> str | None:
        return self.header.checksum_type

    @property
    def checksum(self) -> str | None:
        return self.header.checksum

    @property
    def metadata(self) -> Any:
        """pyimzml's ``Metadata`` of the header (cv params by accession or name)."""
        return self.header.metadata

    # -- raw byte access -----------------------------------------------------------------
    def read_bytes(self, start: int, stop: int) -> np.ndarray:
        """Bytes ``[start, stop)`` of the .ibd as a ``uint8`` array (a copy)."""
        if start < 0 or stop > self.ibd_size or stop < start:
            raise ImzMLOffsetOutOfRange(
                f"bytes {start}..{stop} lie outside the .ibd ({self.ibd_size} bytes)"
            )
        if stop == start:
            return np.empty(0, np.uint8)
        if self._local:
            out = np.array(self._local_bytes()[start:stop])
            self._release(start, stop)
            return out
        return np.frombuffer(self.fs.cat_file(self.ibd_path, start=start, end=stop), dtype=np.uint8)

    def _local_bytes(self) -> np.ndarray:
        """The whole local .ibd as a read-only ``uint8`` view of one persistent mapping."""
        if self._bytes is None:
            import mmap

            if self.ibd_size == 0:
                return np.empty(0, np.uint8)
            with open(self.ibd_path, "rb") as f:
                self._mmap = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
            self._bytes = np.frombuffer(self._mmap, dtype=np.uint8)
        return self._bytes

    def _release(self, start: int, stop: int) -> None:
        """Drop bytes ``[start, stop)`` from this process's mapping (not from the page cache)
        when the file is streamed; a later read maps them again."""
        if self._mmap is None or self.ibd_size <= self.resident_bytes:
            return
        import mmap

        page = mmap.PAGESIZE
        lo = (start // page) * page
        hi = min(self.ibd_size, -(-stop // page) * page)
        if hi > lo:
            self._mmap.madvise(mmap.MADV_DONTNEED, lo, hi - lo)

    def _check_range(self, what: str, first: int, offsets: np.ndarray, nbytes: np.ndarray) -> None:
        ends = offsets + nbytes
        bad = np.flatnonzero((offsets < 0) | (ends > self.ibd_size))
        if bad.size:
            i = int(bad[0])
            raise ImzMLOffsetOutOfRange(
                f"spectrum {first + i}: the {what} array at offset {int(offsets[i])} "
                f"({int(nbytes[i])} bytes) ends at byte {int(ends[i])}, beyond the end of the "
                f".ibd ({self.ibd_size} bytes)"
            )

    # -- spectra -------------------------------------------------------------------------
    def mz_axis(self) -> np.ndarray:
        """The shared m/z axis of a continuous file."""
        if self.mode != "continuous":
            raise ImzMLContinuousMismatch("a processed file has no shared m/z axis")
        if self._mz_axis is None:
            idx = self.index
            if np.any(idx.mz_offsets != idx.mz_offsets[0]) or np.any(
                idx.mz_lengths != idx.mz_lengths[0]
            ):
                raise ImzMLContinuousMismatch(
                    "the file declares continuous mode but its spectra point to different m/z "
                    "arrays"
                )
            if np.any(idx.intensity_lengths != idx.mz_lengths[0]):
                bad = int(np.flatnonzero(idx.intensity_lengths != idx.mz_lengths[0])[0])
                raise ImzMLContinuousMismatch(
                    f"spectrum {bad} has {int(idx.intensity_lengths[bad])} intensities but the "
                    f"shared m/z axis has {int(idx.mz_lengths[0])} values"
                )
            n = int(idx.mz_lengths[0])
            off = int(idx.mz_offsets[0])
            nbytes = self._stored_bytes("m/z", 0, idx.mz_lengths[:1], idx.mz_encoded_lengths[:1])
            self._check_range("m/z", 0, idx.mz_offsets[:1], nbytes)
            raw = self.read_bytes(off, off + int(nbytes[0]))
            if self.header.mz_compression:
                axis = np.empty(n, self.mz_dtype)
                _inflate(raw, axis.view(np.uint8), "m/z", 0)
                self._mz_axis = axis
            else:
                self._mz_axis = raw.view(self.mz_dtype)
        return self._mz_axis

    def _stored_bytes(
        self, what: str, first: int, lengths: np.ndarray, encoded: np.ndarray
    ) -> np.ndarray:
        """Bytes each array takes in the .ibd: its encoded length when compressed (which the
        file must then declare), else length × item size."""
        compressed = (
            self.header.mz_compression if what == "m/z" else self.header.intensity_compression
        )
        dtype = self.mz_dtype if what == "m/z" else self.intensity_dtype
        if not compressed:
            return lengths * dtype.itemsize
        missing = np.flatnonzero(encoded < 0)
        if missing.size:
            i = first + int(missing[0])
            raise ImzMLCompressedDataError(
                f"spectrum {i} (x={', y='.join(str(int(v)) for v in self.coordinates[i, :2])}): "
                f"its zlib-compressed {what} array declares no external encoded length "
                "(IMS:1000104), so its bytes in the .ibd are unknown"
            )
        return encoded

    def read_block(self, start: int, stop: int) -> SpectraBlock:
        """Spectra ``[start, stop)`` in file order, as stored (no dtype conversion)."""
        n = self.n_spectra
        start, stop = max(0, int(start)), min(n, int(stop))
        if stop < start:
            stop = start
        coords = self.index.coordinates[start:stop]
        if self.mode == "continuous":
            return self._read_continuous(start, stop, coords)
        mz, intensity, offsets = self._read_processed(start, stop)
        return SpectraBlock(mz, intensity, offsets, coords, start)

    def _read_continuous(self, start: int, stop: int, coords: np.ndarray) -> SpectraBlock:
        mz = self.mz_axis()
        n_bins = mz.shape[0]
        dt = self.intensity_dtype
        row_bytes = n_bins * dt.itemsize
        offs = self.index.intensity_offsets[start:stop]
        rows = stop - start
        if self.header.intensity_compression:
            stored = self._stored_bytes(
                "intensity",
                start,
                self.index.intensity_lengths[start:stop],
                self.index.intensity_encoded_lengths[start:stop],
            )
            self._check_range("intensity", start, offs, stored)
            block = np.empty((rows, n_bins), dt)
            for r, (off, nb) in enumerate(zip(offs.tolist(), stored.tolist(), strict=True)):
                _inflate(
                    self.read_bytes(off, off + nb), block[r].view(np.uint8), "intensity", start + r
                )
            return SpectraBlock(mz, block, None, coords, start)
        self._check_range("intensity", start, offs, np.full(rows, row_bytes))
        if rows == 0:
            return SpectraBlock(mz, np.empty((0, n_bins), dt), None, coords, start)
        steps = np.diff(offs)
        stride = int(steps[0]) if rows > 1 else row_bytes
        if np.all(steps == stride) and stride >= row_bytes:
            first = int(offs[0])
            span = stride * (rows - 1) + row_bytes
            if self._local:
                raw = self._local_bytes()[first : first + span]
            else:
                raw = self.read_bytes(first, first + span)
            if stride == row_bytes:
                block = (np.array(raw) if self._local else raw).view(dt).reshape(rows, n_bins)
            else:
                view = np.lib.stride_tricks.as_strided(
                    raw, shape=(rows, row_bytes), strides=(stride, 1), writeable=False
                )
                block = np.ascontiguousarray(view).view(dt)
            if self._local:
                self._release(first, first + span)
        else:
            block = np.empty((rows, n_bins), dt)
            for r, off in enumerate(offs.tolist()):
                block[r] = self.read_bytes(off, off + row_bytes).view(dt)
        return SpectraBlock(mz, block, None, coords, start)

    def _read_processed(
        self, start: int, stop: int, read_intensity: bool = True
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        idx = self.index
        lengths = idx.mz_lengths[start:stop]
        ilengths = idx.intensity_lengths[start:stop]
        if np.any(lengths != ilengths):
            bad = int(np.flatnonzero(lengths != ilengths)[0])
            raise ImzMLArrayLengthMismatch(
                f"spectrum {start + bad} has {int(lengths[bad])} m/z values but "
                f"{int(ilengths[bad])} intensities"
            )
        offsets = np.zeros(stop - start + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        parts = [
            (
                "m/z",
                idx.mz_offsets[start:stop],
                idx.mz_encoded_lengths[start:stop],
                self.mz_dtype,
                bool(self.header.mz_compression),
            )
        ]
        if read_intensity:
            parts.append(
                (
                    "intensity",
                    idx.intensity_offsets[start:stop],
                    idx.intensity_encoded_lengths[start:stop],
                    self.intensity_dtype,
                    bool(self.header.intensity_compression),
                )
            )
        total = int(offsets[-1])
        outs = [np.empty(total, dt) for _, _, _, dt, _ in parts]
        if stop == start:
            return outs[0], (outs[1] if read_intensity else outs[0][:0]), offsets
        nbytes = [self._stored_bytes(what, start, lengths, enc) for what, _, enc, _, _ in parts]
        for (what, offs, _, _, _), nb in zip(parts, nbytes, strict=True):
            self._check_range(what, start, offs, nb)
        # Compressed arrays are gathered into a staging buffer, then inflated one by one.
        targets = [
            np.empty(int(nb.sum()), np.uint8) if packed else out.view(np.uint8)
            for out, (_, _, _, _, packed), nb in zip(outs, parts, nbytes, strict=True)
        ]
        lo = min(int(p[1].min()) for p in parts)
        hi = max(int((p[1] + nb).max()) for p, nb in zip(parts, nbytes, strict=True))
        needed = sum(int(nb.sum()) for nb in nbytes)
        if hi - lo <= 2 * needed + (1 << 20):
            raw = self._local_bytes()[lo:hi] if self._local else self.read_bytes(lo, hi)
            for target, p, nb in zip(targets, parts, nbytes, strict=True):
                _gather(raw, (p[1] - lo).tolist(), nb.tolist(), target)
            if self._local:
                self._release(lo, hi)
        else:
            for target, p, nb in zip(targets, parts, nbytes, strict=True):
                pos = 0
                for o, b in zip(p[1].tolist(), nb.tolist(), strict=True):
                    target[pos : pos + b] = self.read_bytes(o, o + b)
                    pos += b
        for out, target, (what, _, _, dt, packed), nb in zip(
            outs, targets, parts, nbytes, strict=True
        ):
            if not packed:
                continue
            dest = out.view(np.uint8)
            src = np.concatenate(([0], np.cumsum(nb)))
            for r in range(stop - start):
                a, b = int(offsets[r]) * dt.itemsize, int(offsets[r + 1]) * dt.itemsize
                _inflate(target[src[r] : src[r + 1]], dest[a:b], what, start + r)
        if not read_intensity:
            return outs[0], outs[0][:0], offsets
        return outs[0], outs[1], offsets

    def iter_blocks(
        self,
        rows_per_block: int | None = None,
        start: int = 0,
        stop: int | None = None,
        block_bytes: int = _DEFAULT_BLOCK_BYTES,
    ) -> Iterator[SpectraBlock]:
        """Blocks of consecutive spectra covering ``[start, stop)``; by default each block
        holds about ``block_bytes`` of data so memory stays bounded whatever the file size."""
        stop = self.n_spectra if stop is None else min(stop, self.n_spectra)
        if rows_per_block is None:
            rows_per_block = self.rows_for_bytes(block_bytes)
        for s in range(start, stop, rows_per_block):
            yield self.read_block(s, min(stop, s + rows_per_block))

    def rows_for_bytes(self, block_bytes: int) -> int:
        """How many spectra make about ``block_bytes`` of m/z + intensity data."""
        lengths = self.index.intensity_lengths
        mean_len = float(lengths.mean()) if lengths.size else 1.0
        per = self.intensity_dtype.itemsize + (
            0 if self.mode == "continuous" else self.mz_dtype.itemsize
        )
        return max(1, int(block_bytes // max(1.0, mean_len * per)))

    def spectrum(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """``(mz, intensity)`` of spectrum ``i`` in file order."""
        if not 0 <= i < self.n_spectra:
            raise IndexError(f"spectrum {i} out of range 0..{self.n_spectra - 1}")
        return self.read_block(i, i + 1).spectrum(0)

    def mz_range(self) -> tuple[float, float]:
        """Smallest and largest m/z over all spectra (reads the m/z arrays once)."""
        if self.mode == "continuous":
            mz = self.mz_axis()
            return float(mz.min()), float(mz.max())
        lo, hi = np.inf, -np.inf
        rows = self.rows_for_bytes(_DEFAULT_BLOCK_BYTES)
        for s in range(0, self.n_spectra, rows):
            mz, _, _ = self._read_processed(s, min(self.n_spectra, s + rows), read_intensity=False)
            if mz.size:
                lo, hi = min(lo, float(mz.min())), max(hi, float(mz.max()))
        return lo, hi

    def facts(self) -> dict[str, Any]:
        """The measurement facts the metadata schema records (JSON-serialisable)."""
        from em2q_msi.facts import measurement_facts

        return measurement_facts(self)


def _inflate(raw: np.ndarray, out: np.ndarray, what: str, spectrum: int) -> None:
    """Decompress one zlib stream into ``out`` (bytes), which it must fill exactly."""
    try:
        data = zlib.decompress(raw)
    except zlib.error as exc:
        raise ImzMLCompressedDataError(
            f"spectrum {spectrum}: the zlib-compressed {what} array ({raw.size} bytes) does not "
            f"decompress: {exc}"
        ) from exc
    if len(data) != out.size:
        raise ImzMLCompressedDataError(
            f"spectrum {spectrum}: the zlib-compressed {what} array decompresses to "
            f"{len(data)} bytes, its declared array length needs {out.size}"
        )
    out[:] = np.frombuffer(data, np.uint8)


def _gather(raw: np.ndarray, starts: list[int], nbytes: list[int], out: np.ndarray) -> None:
    """Concatenate byte ranges of ``raw`` into ``out``. A plain loop of slice copies: each is
    a memcpy, and it beats numba (byte loops), ``np.concatenate`` and ``os.preadv`` scattering
    straight from the file (measured, 6,000-peak spectra). Slices of memoryviews, not of
    arrays: a third of the per-range overhead. What remains is memcpy's own cost for pieces
    of a spectrum's size (benchmarks/bench_reader.py prints that floor)."""
    source, target = memoryview(raw), memoryview(out)
    pos = 0
    for s, b in zip(starts, nbytes, strict=True):
        target[pos : pos + b] = source[s : s + b]
        pos += b


def _scan_file(
    fs: fsspec.AbstractFileSystem, path: str, start: int, header: Header
) -> SpectraIndex:
    if is_local(fs):
        import mmap

        with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mm:
            return scan_index(mm, start, header)
    return scan_windows(_stream_windows(fs, path, start), header)


def _cache_candidates(
    fs: fsspec.AbstractFileSystem, path: str, cache_dir: str | None
) -> list[tuple[fsspec.AbstractFileSystem, str]]:
    out = [(fs, path + INDEX_SUFFIX)]
    if cache_dir:
        cfs, cpath = split_url(cache_dir)
        name = hashlib.sha1(f"{fs.protocol}:{path}".encode()).hexdigest()[:20]
        base = os.path.basename(path)
        out.append((cfs, f"{cpath.rstrip('/')}/{base}.{name}{INDEX_SUFFIX}"))
    return out


def _load_cached_index(fs: fsspec.AbstractFileSystem, path: str, key: str) -> SpectraIndex | None:
    try:
        if not fs.exists(path):
            return None
        with np.load(io.BytesIO(fs.cat_file(path)), allow_pickle=False) as z:
            if str(z["key"]) != key:
                return None
            index = SpectraIndex(*(np.array(z[name]) for name in SpectraIndex.FIELDS))
    except (OSError, ValueError, KeyError):
        return None
    n = len(index)
    if index.coordinates.shape != (n, 3) or any(
        getattr(index, name).shape != (n,) for name in SpectraIndex.FIELDS[1:]
    ):
        return None
    return index


def _store_index(fs: fsspec.AbstractFileSystem, path: str, key: str, index: SpectraIndex) -> bool:
    """Cache the index at ``path`` (atomically: ``temporaries.write_atomic``); False when that
    folder cannot be written (a read-only data folder), never an error."""
    buf = io.BytesIO()
    np.savez(buf, key=np.array(key), **{name: getattr(index, name) for name in index.FIELDS})
    try:
        write_atomic(fs, path, buf.getvalue())
        return True
    except (OSError, ValueError, NotImplementedError):  # PermissionError is an OSError
        return False
