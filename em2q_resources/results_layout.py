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

import io
import json
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


def write_bytes(storage: StorageResource, key: str, data: bytes) -> str:
    """Write ``data`` at ``key`` atomically; returns its URL."""
    url = storage.url(key)
    fs, path = _fs(storage, url)
    write_atomic(fs, path, data)
    return url


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


def read_peak_table(
    storage: StorageResource, outputs: dict[str, str]
) -> tuple[np.ndarray, np.ndarray]:
    """``(feature_mz, matrix (n_spectra, n_features))`` from a ``peak_table`` manifest's
    outputs, dense float64, spectra in file order (segmentation, colocalisation)."""
    feature_mz = read_npy(storage, outputs["feature_mz"])
    n_features, n_spectra = read_json(storage, outputs["shape"])
    matrix = np.zeros((n_spectra, n_features))
    np.add.at(
        matrix,
        (read_npy(storage, outputs["matrix_col"]), read_npy(storage, outputs["matrix_row"])),
        read_npy(storage, outputs["matrix_value"]),
    )
    return feature_mz, matrix
