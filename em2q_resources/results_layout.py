"""The results layout: where results live, and how their files are written and read back.

``results/<measurement>/<asset>/<parameter hash16 or "raw">/<chunk-NNNN or "all">/…``: results
of different parameter sets live side by side; each such folder holds the asset's files and
its ``manifest.json`` (:func:`manifest_key`: the URLs of what it wrote), which exists only once
the asset is materialized. Every file is written through ``em2q_msi.temporaries.write_atomic``
(a temporary name, then a move), so a reader never sees half a file; the bytes depend only on
the inputs (``.npy`` and sorted JSON, no timestamps), so re-materializing gives identical files.

It sits beside storage, below the Dagster layer: the assets write with it, and the web, the
client and the CLI read with it, without importing Dagster.
"""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import fsspec
import numpy as np

from em2q_msi import finite_json
from em2q_msi.qc_report import parse_qc_report, qc_report_bytes
from em2q_msi.temporaries import write_atomic
from em2q_resources.storage import StorageResource

#: the file in each result folder naming what the asset wrote
MANIFEST = "manifest.json"
#: the file of ``qc_report``'s verdict (one format with ``python -m em2q_msi.steps qc``)
QC_REPORT = "qc.json"


def result_key(
    measurement_id: str, asset: str, parameter_hash: str | None, chunk: int | None
) -> str:
    """The folder of an asset's results for one measurement (chunk), parameter set or raw."""
    segment = parameter_hash[:16] if parameter_hash else "raw"
    where = "all" if chunk is None else f"chunk-{chunk:04d}"
    return f"results/{measurement_id}/{asset}/{segment}/{where}"


def manifest_key(
    asset: str, measurement_id: str, chunk: int | None, parameter_hash: str | None
) -> str:
    """Where an asset partition's manifest lives: the one spelling, for the IO manager, the
    step CLI (``python -m em2q_assets.step``) and the results reader alike."""
    return f"{result_key(measurement_id, asset, parameter_hash, chunk)}/{MANIFEST}"


def _fs(storage: StorageResource, url: str) -> tuple[fsspec.AbstractFileSystem, str]:
    return fsspec.core.url_to_fs(url, **storage.storage_options)


#: bytes read at once when a stored file is hashed again
HASH_BLOCK_BYTES = 4 * 1024 * 1024


@dataclass(frozen=True)
class Checksum:
    """What a stored result is: its SHA-256 (hex) and size in bytes. A folder (a chunk of
    spectra) is hashed as the SHA-256 of its sorted ``<relative path> <sha256> <size>`` lines,
    its size the sum of its files'."""

    sha256: str
    size: int

    def to_dict(self) -> dict[str, Any]:
        return {"sha256": self.sha256, "size": self.size}


class StoredFile(str):
    """The URL of a file just written, carrying the checksum of the bytes written: the steps'
    output tables stay ``{name: url}`` while the records get the checksum without reading the
    file back."""

    checksum: Checksum

    def __new__(cls, url: str, checksum: Checksum) -> StoredFile:
        made = super().__new__(cls, url)
        made.checksum = checksum
        return made


def write_bytes(storage: StorageResource, key: str, data: bytes) -> StoredFile:
    """Write ``data`` at ``key`` atomically; returns its URL with the checksum of ``data``."""
    url = storage.url(key)
    fs, path = _fs(storage, url)
    write_atomic(fs, path, data)
    return StoredFile(url, Checksum(hashlib.sha256(data).hexdigest(), len(data)))


def _hash_file(
    fs: fsspec.AbstractFileSystem, path: str, progress: Callable[[int], None] | None
) -> Checksum:
    digest, size = hashlib.sha256(), 0
    with fs.open(path, "rb") as handle:
        while block := handle.read(HASH_BLOCK_BYTES):
            digest.update(block)
            size += len(block)
            if progress is not None:
                progress(len(block))
    return Checksum(digest.hexdigest(), size)


def checksum_of(
    storage: StorageResource, url: str, progress: Callable[[int], None] | None = None
) -> Checksum:
    """The checksum of what is stored at ``url`` now, read once in blocks (``progress`` gets
    the bytes read); ``FileNotFoundError`` when nothing is there."""
    fs, path = _fs(storage, url)
    if not fs.exists(path):
        raise FileNotFoundError(url)
    if not fs.isdir(path):
        return _hash_file(fs, path, progress)
    root = path.rstrip("/")
    lines, total = [], 0
    for found in sorted(fs.find(root)):
        part = _hash_file(fs, found, progress)
        lines.append(f"{found[len(root) + 1 :]} {part.sha256} {part.size}\n")
        total += part.size
    return Checksum(hashlib.sha256("".join(lines).encode()).hexdigest(), total)


def checksum_of_output(storage: StorageResource, url: str) -> Checksum:
    """The checksum of an output a step just wrote: carried by a :class:`StoredFile`, else
    (a folder written by the chunk writer, a file a pod wrote) read from storage once."""
    if isinstance(url, StoredFile):
        return url.checksum
    return checksum_of(storage, url)


def read_bytes(storage: StorageResource, url: str) -> bytes:
    fs, path = _fs(storage, url)
    return fs.cat_file(path)


def npy_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, np.ascontiguousarray(array), allow_pickle=False)
    return buffer.getvalue()


def write_npy(storage: StorageResource, key: str, array: np.ndarray) -> str:
    return write_bytes(storage, key, npy_bytes(array))


def read_npy(storage: StorageResource, url: str) -> np.ndarray:
    return np.load(io.BytesIO(read_bytes(storage, url)), allow_pickle=False)


def json_bytes(value: Any) -> bytes:
    """Strict JSON: a non-finite number is written as null (``em2q_msi.finite_json``), never
    as a NaN/Infinity token nor a crash; its producer states the reason beside it."""
    return finite_json.dumps(value, sort_keys=True, indent=1).encode()


def write_json(storage: StorageResource, key: str, value: Any) -> str:
    return write_bytes(storage, key, json_bytes(value))


def read_json(storage: StorageResource, url: str) -> Any:
    return json.loads(read_bytes(storage, url))


def write_qc_report(storage: StorageResource, folder: str, report: dict[str, Any]) -> str:
    """Write ``qc_report``'s verdict as ``<folder>/qc.json``; returns its URL."""
    return write_bytes(storage, f"{folder}/{QC_REPORT}", qc_report_bytes(report))


def read_qc_report(storage: StorageResource, url: str) -> dict[str, Any]:
    return parse_qc_report(read_bytes(storage, url), url)


def optical_key(measurement_id: str, sha256: str, name: str) -> str:
    """Where a measurement's optical image files live: beside its raw files (deleted with
    them), in a folder per content so a new upload never overwrites the one in use."""
    return f"measurements/{measurement_id}/optical/{sha256[:16]}/{name}"


# ---------------------------------------------------------------------- studies

#: the study assets' files live under ``studies/<study>/<asset>/…`` (beside ``results/``, so a
#: study id never meets a measurement id)
STUDIES = "studies"


def study_key(study_id: str, asset: str, *parts: str) -> str:
    """A folder of a study asset's results (``parts``: content hashes, member ids)."""
    return "/".join([STUDIES, study_id, asset, *parts])


def study_manifest_key(asset: str, study_id: str) -> str:
    """The manifest of a study asset's latest materialization (the IO manager's key)."""
    return f"{study_key(study_id, asset)}/{MANIFEST}"


def exists(storage: StorageResource, key: str) -> bool:
    fs, path = _fs(storage, storage.url(key))
    return fs.exists(path)


def member_peak_manifests(
    storage: StorageResource, measurement_id: str, parameter_hash: str
) -> list[dict[str, Any]]:
    """The ``preprocessed_chunks`` manifests of a measurement under a parameter set, in chunk
    order; empty when that set has not processed it."""
    folder = f"{result_key(measurement_id, 'preprocessed_chunks', parameter_hash, 0)}"
    pattern = storage.url(folder.rsplit("/", 1)[0] + f"/chunk-*/{MANIFEST}")
    fs, path = _fs(storage, pattern)
    return [json.loads(fs.cat_file(p)) for p in sorted(fs.glob(path))]


def read_member_peaks(
    storage: StorageResource, manifests: list[dict[str, Any]]
) -> dict[str, np.ndarray]:
    """A measurement's pixel peaks (``mz``, ``intensity``, ``offsets``, ``coordinates``) from
    its ``preprocessed_chunks`` manifests, the chunks concatenated in file order."""
    parts = {
        name: [read_npy(storage, m["outputs"][f"peaks_{name}"]) for m in manifests]
        for name in ("mz", "intensity", "offsets", "coordinates")
    }
    offsets, total = [np.zeros(1, np.int64)], 0
    for chunk_offsets in parts["offsets"]:
        chunk_offsets = chunk_offsets.astype(np.int64) - int(chunk_offsets[0])
        offsets.append(chunk_offsets[1:] + total)
        total += int(chunk_offsets[-1])

    def joined(name: str, empty: np.ndarray) -> np.ndarray:
        return np.concatenate(parts[name]) if manifests else empty

    return {
        "mz": joined("mz", np.zeros(0)),
        "intensity": joined("intensity", np.zeros(0, np.float32)),
        "offsets": np.concatenate(offsets),
        "coordinates": joined("coordinates", np.zeros((0, 3), np.int64)),
    }


def write_csr_zarr(
    storage: StorageResource,
    key: str,
    matrix: Any,
    arrays: dict[str, np.ndarray],
    attrs: dict[str, Any],
) -> str:
    """A pixels × features CSR matrix (``data``, ``indices``, ``indptr``) and per-pixel
    ``arrays`` as one Zarr group at ``key``; returns its URL. Readers trust it only once the
    manifest naming it is written (after this returns)."""
    import zarr
    from zarr.storage import FsspecStore

    url = storage.url(key)
    options = dict(storage.storage_options)
    if url.startswith("file://") or "://" not in url:
        options["auto_mkdir"] = True
    group = zarr.open_group(
        store=FsspecStore.from_url(url, read_only=False, storage_options=options), mode="w"
    )
    chunk = 1 << 20
    for name, values in (
        ("data", matrix.data),
        ("indices", matrix.indices),
        ("indptr", matrix.indptr),
        *arrays.items(),
    ):
        values = np.ascontiguousarray(values)
        chunks = (min(chunk, max(values.shape[0], 1)),) + values.shape[1:]
        group.create_array(name, data=values, chunks=chunks)
    group.attrs.update({"format": "csr", "shape": list(matrix.shape), **attrs})
    return url


def open_zarr(storage: StorageResource, url: str) -> Any:
    """A Zarr group read lazily (only the chunks asked for are fetched)."""
    import zarr
    from zarr.storage import FsspecStore

    return zarr.open_group(
        store=FsspecStore.from_url(url, read_only=True, storage_options=storage.storage_options),
        mode="r",
    )


def read_csr_zarr(storage: StorageResource, url: str) -> tuple[Any, dict[str, np.ndarray]]:
    """``(csr_array, {per-pixel array: values})`` of :func:`write_csr_zarr`."""
    import scipy.sparse as sp

    group = open_zarr(storage, url)
    shape = tuple(group.attrs["shape"])
    matrix = sp.csr_array((group["data"][:], group["indices"][:], group["indptr"][:]), shape=shape)
    others = {name: group[name][:] for name in group.array_keys()}
    for name in ("data", "indices", "indptr"):
        others.pop(name)
    return matrix, others


def read_peak_table_csr(
    storage: StorageResource, outputs: dict[str, str]
) -> tuple[np.ndarray, np.ndarray, Any]:
    """``(feature_mz, frequency, intensities)`` from a ``peak_table`` manifest's outputs, the
    intensities a features × spectra ``scipy.sparse`` CSR matrix (spectra in file order)."""
    import scipy.sparse as sp

    matrix = sp.coo_matrix(
        (
            read_npy(storage, outputs["matrix_value"]),
            (read_npy(storage, outputs["matrix_row"]), read_npy(storage, outputs["matrix_col"])),
        ),
        shape=tuple(read_json(storage, outputs["shape"])),
    ).tocsr()
    return read_npy(storage, outputs["feature_mz"]), read_npy(storage, outputs["frequency"]), matrix


def read_peak_table(
    storage: StorageResource, outputs: dict[str, str]
) -> tuple[np.ndarray, np.ndarray]:
    """``(feature_mz, matrix (n_spectra, n_features))``, dense float64 (segmentation,
    colocalisation)."""
    feature_mz, _, matrix = read_peak_table_csr(storage, outputs)
    return feature_mz, np.asarray(matrix.T.toarray(), dtype=np.float64)
