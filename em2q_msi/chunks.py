"""Chunk i of K of a measurement's spectra: contiguous index ranges, stored as plain ``.npy``.

Storage format, and why: a chunk is a folder (any fsspec URL) holding one ``.npy`` file per
array of :class:`~em2q_msi.spectra.SpectraBlock` (``mz``, ``intensity``, ``coordinates``, and
``offsets`` for processed data) plus ``meta.json``. NPY is a fixed-size header followed by the
raw C-ordered array, so

* a local reader maps it with ``np.load(mmap_mode="r")`` (zero-copy, page cache shared between
  the processes of a node),
* a remote reader fetches any row range with one HTTP range request after reading the header
  (rows of a continuous block, or ``offsets[a]..offsets[b]`` of a processed one),
* nothing beyond numpy is needed to read it from any language or notebook.

Zarr would add compression and N-D chunking, but spectra chunks are already the unit of work,
MSI intensities compress poorly, and a second storage library in every pod buys little.

Atomic writes: each file is written under a temporary name in the chunk folder and moved into
place (a rename locally, a server-side copy on object stores), and ``meta.json`` is written
last, the same way, as the commit marker. A chunk without ``meta.json`` does not exist for
:func:`read_chunk`, and a rewrite first removes the old marker, so a reader never sees a
half-written chunk.
"""

from __future__ import annotations

import contextlib
import io
import json
import threading
from collections.abc import Callable, Iterator
from typing import Any

import fsspec
import numpy as np

from em2q_msi import temporaries
from em2q_msi.errors import ChunkCorrupt, ChunkNotFound
from em2q_msi.imzml import is_local, split_url
from em2q_msi.spectra import SpectraBlock

FORMAT = "em2q-spectra-chunk"
VERSION = 1
META = "meta.json"
#: CPython 3.11 may fail parsing Python literals in two threads at once ("AST constructor
#: recursion depth mismatch", gh-106905); a .npy header is such a literal, and the chunks of a
#: range run are read side by side, so headers are parsed one at a time
_HEADER_LOCK = threading.Lock()


def stored_dtype(dtype: np.dtype | type) -> np.dtype:
    """The dtype a chunk stores values of ``dtype`` in: 16-bit floats widened (exactly) to
    32-bit, since the numba kernels of every later step have no 16-bit float; all other types
    as they are."""
    dtype = np.dtype(dtype)
    return np.dtype("<f4") if dtype == np.float16 else dtype


def chunk_ranges(n_spectra: int, k: int) -> list[tuple[int, int]]:
    """``k`` contiguous, balanced ``(start, stop)`` ranges covering ``range(n_spectra)``.

    Sizes differ by at most one; with ``k > n_spectra`` the last ``k - n_spectra`` ranges are
    empty, so "chunk i of K" exists for every ``i < K`` whatever the measurement size.
    """
    if k < 1:
        raise ValueError(f"the number of chunks must be >= 1, got {k}")
    if n_spectra < 0:
        raise ValueError(f"the number of spectra must be >= 0, got {n_spectra}")
    base, extra = divmod(n_spectra, k)
    ranges = []
    start = 0
    for i in range(k):
        stop = start + base + (1 if i < extra else 0)
        ranges.append((start, stop))
        start = stop
    return ranges


def chunk_range(n_spectra: int, k: int, i: int) -> tuple[int, int]:
    """``(start, stop)`` of chunk ``i`` of ``k`` (0-based)."""
    if not 0 <= i < k:
        raise ValueError(f"chunk index {i} is outside 0..{k - 1}")
    return chunk_ranges(n_spectra, k)[i]


def _join(path: str, name: str) -> str:
    return f"{path.rstrip('/')}/{name}"


def _npy_header(dtype: np.dtype, shape: tuple[int, ...]) -> bytes:
    buf = io.BytesIO()
    np.lib.format.write_array_header_2_0(
        buf, {"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False, "shape": shape}
    )
    return buf.getvalue()


class ChunkWriter:
    """Write one chunk block by block (memory stays one block), then :meth:`commit`.

    The array shapes are fixed up front (``n_values``: total m/z–intensity pairs for processed
    data, bins for continuous), so each ``.npy`` header is written first and blocks streamed
    after it.
    """

    def __init__(
        self,
        url: str,
        *,
        continuous: bool,
        n_spectra: int,
        n_values: int,
        mz_dtype: np.dtype,
        intensity_dtype: np.dtype,
        first_index: int = 0,
        extra: dict[str, Any] | None = None,
        storage_options: dict | None = None,
    ) -> None:
        self.fs, self.path = split_url(url, storage_options)
        self.url = url
        self.continuous = continuous
        self.n_spectra = n_spectra
        self.n_values = n_values
        self.first_index = first_index
        self.extra = dict(extra or {})
        self._token = temporaries.token()
        self._rows = 0
        self._values = 0
        self._mz_written = False
        self.fs.makedirs(self.path, exist_ok=True)
        temporaries.sweep_orphans(self.fs, self.path)  # what a killed writer left here
        with contextlib.suppress(FileNotFoundError):
            self.fs.rm(_join(self.path, META))  # un-commit an older chunk before replacing it
        mz_dtype, intensity_dtype = stored_dtype(mz_dtype), stored_dtype(intensity_dtype)
        shapes: dict[str, tuple[np.dtype, tuple[int, ...]]] = {
            "coordinates": (np.dtype("<i8"), (n_spectra, 3)),
        }
        if continuous:
            shapes["mz"] = (np.dtype(mz_dtype), (n_values,))
            shapes["intensity"] = (np.dtype(intensity_dtype), (n_spectra, n_values))
        else:
            shapes["mz"] = (np.dtype(mz_dtype), (n_values,))
            shapes["intensity"] = (np.dtype(intensity_dtype), (n_values,))
            shapes["offsets"] = (np.dtype("<i8"), (n_spectra + 1,))
        self.shapes = shapes
        self._files = {name: self.fs.open(self._tmp(name), "wb") for name in shapes}
        for name, (dtype, shape) in shapes.items():
            self._files[name].write(_npy_header(dtype, shape))
        if not continuous:
            self._files["offsets"].write(np.zeros(1, "<i8").tobytes())

    def _tmp(self, name: str) -> str:
        return _join(self.path, f".{name}.npy.tmp-{self._token}")

    def _write(self, name: str, array: np.ndarray) -> None:
        dtype = self.shapes[name][0]
        # the array's own buffer, not ``tobytes()``: a block is written without a copy of it
        # (one when its dtype or layout must change)
        data = np.ascontiguousarray(array, dtype=dtype)
        self._files[name].write(memoryview(data.reshape(-1)).cast("B"))

    def append(self, block: SpectraBlock) -> None:
        """Add the next spectra, in order; dtypes are converted to the stored ones."""
        if block.is_continuous != self.continuous:
            raise ValueError("block layout does not match the chunk layout")
        rows = len(block)
        if self._rows + rows > self.n_spectra:
            raise ValueError(f"more than the declared {self.n_spectra} spectra")
        self._write("coordinates", block.coordinates)
        if self.continuous:
            if block.intensity.shape[1] != self.n_values:
                raise ValueError(
                    f"block has {block.intensity.shape[1]} bins, the chunk {self.n_values}"
                )
            if not self._mz_written:
                self._write("mz", block.mz)
                self._mz_written = True
            self._write("intensity", block.intensity)
        else:
            local = block.offsets.astype(np.int64)
            self._write("mz", block.mz[local[0] : local[-1]])
            self._write("intensity", block.intensity[local[0] : local[-1]])
            self._write("offsets", local[1:] - local[0] + self._values)
            self._values += int(local[-1] - local[0])
        self._rows += rows

    def commit(self) -> dict[str, Any]:
        """Close the files, move them into place, then write ``meta.json``; returns the meta."""
        if self._rows != self.n_spectra or (not self.continuous and self._values != self.n_values):
            self.abort()
            raise ValueError(
                f"chunk incomplete: {self._rows}/{self.n_spectra} spectra, "
                f"{self._values}/{self.n_values} values written"
            )
        if self.continuous and not self._mz_written:
            self._write("mz", np.zeros(self.n_values))
        for f in self._files.values():
            f.close()
        files = {}
        for name, (dtype, shape) in self.shapes.items():
            final = _join(self.path, f"{name}.npy")
            self.fs.mv(self._tmp(name), final)
            files[name] = {
                "dtype": dtype.str,
                "shape": list(shape),
                "bytes": int(self.fs.size(final)),
            }
        meta = {
            "format": FORMAT,
            "version": VERSION,
            "layout": "continuous" if self.continuous else "processed",
            "first_index": self.first_index,
            "n_spectra": self.n_spectra,
            "n_values": self.n_values,
            "files": files,
            **({"extra": self.extra} if self.extra else {}),
        }
        temporaries.write_atomic(
            self.fs, _join(self.path, META), json.dumps(meta, indent=1).encode()
        )
        return meta

    def abort(self) -> None:
        for name, f in self._files.items():
            with contextlib.suppress(Exception):
                f.close()
            with contextlib.suppress(Exception):
                self.fs.rm(self._tmp(name))


def write_chunk(
    block: SpectraBlock,
    url: str,
    storage_options: dict | None = None,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Store ``block`` as a chunk folder at ``url`` (atomically); returns its ``meta.json``."""
    n_values = (
        int(block.intensity.shape[1])
        if block.is_continuous
        else int(block.offsets[-1] - block.offsets[0])
    )
    writer = ChunkWriter(
        url,
        continuous=block.is_continuous,
        n_spectra=len(block),
        n_values=n_values,
        mz_dtype=block.mz.dtype,
        intensity_dtype=block.intensity.dtype,
        first_index=block.first_index,
        extra=extra,
        storage_options=storage_options,
    )
    try:
        writer.append(block)
    except BaseException:
        writer.abort()
        raise
    return writer.commit()


def write_measurement_chunk(
    reader: Any,
    chunk_count: int,
    chunk_index: int,
    url: str,
    *,
    storage_options: dict | None = None,
    extra: dict[str, Any] | None = None,
    on_block: Callable[[SpectraBlock], None] | None = None,
    block_bytes: int | None = None,
) -> tuple[int, int, dict[str, Any]]:
    """Copy chunk ``chunk_index`` of ``chunk_count`` of an open ``ImzML`` to ``url``, block by
    block (``on_block`` sees each block, e.g. to accumulate QC sums in the same pass).

    Returns ``(start, stop, meta)``; nothing is committed if a block fails.
    """
    start, stop = chunk_range(reader.n_spectra, chunk_count, chunk_index)
    continuous = reader.mode == "continuous"
    lengths = reader.index.intensity_lengths[start:stop]
    n_values = int(reader.index.mz_lengths[0]) if continuous else int(lengths.sum())
    writer = ChunkWriter(
        url,
        continuous=continuous,
        n_spectra=stop - start,
        n_values=n_values,
        mz_dtype=reader.mz_dtype,
        intensity_dtype=reader.intensity_dtype,
        first_index=start,
        extra=extra,
        storage_options=storage_options,
    )
    blocks = (
        reader.iter_blocks(start=start, stop=stop)
        if block_bytes is None
        else reader.iter_blocks(start=start, stop=stop, block_bytes=block_bytes)
    )
    if stop == start:
        # An empty chunk still stores the shared m/z axis and shows ``on_block`` one block of
        # zero spectra (e.g. so a mean-spectrum accumulator has its axis).
        blocks = iter([reader.read_block(start, stop)])
    try:
        for block in blocks:
            writer.append(block)
            if on_block is not None:
                on_block(block)
        meta = writer.commit()
    except BaseException:
        writer.abort()
        raise
    return start, stop, meta


def chunk_meta(url: str, storage_options: dict | None = None) -> dict[str, Any]:
    """The committed chunk's ``meta.json``; :class:`ChunkNotFound` when there is none."""
    fs, path = split_url(url, storage_options)
    try:
        meta = json.loads(fs.cat_file(_join(path, META)))
    except FileNotFoundError as exc:
        raise ChunkNotFound(f"no committed chunk at {url} (no {META})") from exc
    if meta.get("format") != FORMAT:
        raise ChunkCorrupt(f"{url}/{META} is not an {FORMAT} description")
    return meta


class _Npy:
    """Row access to one stored ``.npy``: mmap locally, range requests elsewhere."""

    def __init__(self, fs: fsspec.AbstractFileSystem, path: str, expect: dict[str, Any]) -> None:
        self.fs, self.path = fs, path
        self.local = is_local(fs)
        try:
            head = fs.cat_file(path, start=0, end=4096)
        except FileNotFoundError as exc:
            raise ChunkCorrupt(f"{path} is missing from a committed chunk") from exc
        f = io.BytesIO(head)
        version = np.lib.format.read_magic(f)
        read_header = (
            np.lib.format.read_array_header_1_0
            if version == (1, 0)
            else np.lib.format.read_array_header_2_0
        )
        with _HEADER_LOCK:
            shape, fortran, dtype = read_header(f)
        if fortran or list(shape) != expect["shape"] or dtype.str != expect["dtype"]:
            raise ChunkCorrupt(f"{path}: header {dtype.str} {shape} does not match {META}")
        self.header_bytes = f.tell()
        self.shape, self.dtype = tuple(shape), dtype
        self.row_bytes = int(np.prod(shape[1:], dtype=np.int64)) * dtype.itemsize
        expected = self.header_bytes + shape[0] * self.row_bytes if shape else 0
        if expect.get("bytes") not in (None, expected):
            raise ChunkCorrupt(f"{path}: {expect['bytes']} bytes on record, {expected} expected")

    def rows(self, start: int, stop: int) -> np.ndarray:
        n = max(0, stop - start)
        if self.local:
            if n == 0 or not self.shape or self.shape[0] == 0:
                return np.empty((0, *self.shape[1:]), self.dtype)
            # the header is parsed already: map the rows at its offset, no second parse
            mm = np.memmap(self.path, dtype=self.dtype, mode="r", offset=self.header_bytes,
                           shape=self.shape)  # fmt: skip
            out = np.array(mm[start:stop])
            del mm
            return out
        if n == 0:
            return np.empty((0, *self.shape[1:]), self.dtype)
        a = self.header_bytes + start * self.row_bytes
        raw = self.fs.cat_file(self.path, start=a, end=a + n * self.row_bytes)
        return np.frombuffer(raw, dtype=self.dtype).reshape(n, *self.shape[1:]).copy()


def read_chunk(
    url: str,
    start: int | None = None,
    stop: int | None = None,
    storage_options: dict | None = None,
) -> SpectraBlock:
    """Spectra ``[start, stop)`` of the chunk at ``url`` (positions inside the chunk; the whole
    chunk by default). Only the needed bytes are read."""
    meta = chunk_meta(url, storage_options)
    fs, path = split_url(url, storage_options)
    n = int(meta["n_spectra"])
    start = 0 if start is None else max(0, min(n, start))
    stop = n if stop is None else max(start, min(n, stop))
    files = {
        name: _Npy(fs, _join(path, f"{name}.npy"), spec) for name, spec in meta["files"].items()
    }
    coords = files["coordinates"].rows(start, stop)
    first = int(meta["first_index"]) + start
    if meta["layout"] == "continuous":
        mz = files["mz"].rows(0, files["mz"].shape[0])
        return SpectraBlock(mz, files["intensity"].rows(start, stop), None, coords, first)
    offsets = files["offsets"].rows(start, stop + 1)
    a, b = int(offsets[0]), int(offsets[-1])
    return SpectraBlock(
        files["mz"].rows(a, b), files["intensity"].rows(a, b), offsets - a, coords, first
    )


#: bytes of spectra per block when a chunk is read back in blocks (``iter_chunk``)
CHUNK_BLOCK_BYTES = 32 << 20


def rows_for_bytes(meta: dict[str, Any], block_bytes: int) -> int:
    """How many spectra of the chunk ``meta`` describes make about ``block_bytes`` of m/z and
    intensity data (spectra of processed data differ in size: the chunk's mean)."""
    files = meta["files"]
    n = max(1, int(meta["n_spectra"]))
    per_value = np.dtype(files["intensity"]["dtype"]).itemsize
    if meta["layout"] == "processed":
        per_value += np.dtype(files["mz"]["dtype"]).itemsize
        per_spectrum = per_value * int(meta["n_values"]) / n
    else:
        per_spectrum = per_value * int(meta["n_values"])
    return max(1, int(block_bytes // max(1.0, per_spectrum)))


def iter_chunk(
    url: str,
    rows_per_block: int | None = None,
    storage_options: dict | None = None,
    *,
    block_bytes: int = CHUNK_BLOCK_BYTES,
) -> Iterator[SpectraBlock]:
    """The chunk in blocks of ``rows_per_block`` spectra (default: about ``block_bytes`` of
    data each, so memory stays bounded whatever the spectra's size). An empty chunk
    (K > number of spectra) is one block of zero spectra, so every step that maps blocks gives
    its empty result (with the chunk's m/z axis and dtypes) instead of nothing."""
    meta = chunk_meta(url, storage_options)
    n = int(meta["n_spectra"])
    if n == 0:
        yield read_chunk(url, 0, 0, storage_options)
        return
    if rows_per_block is None:
        rows_per_block = rows_for_bytes(meta, block_bytes)
    for s in range(0, n, rows_per_block):
        yield read_chunk(url, s, s + rows_per_block, storage_options)
