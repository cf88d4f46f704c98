"""Where results live and how they are written: content-addressed keys, atomic, deterministic.

``results/<measurement>/<asset>/<parameter hash or "raw">/<chunk-i or "all">/…``: results of
different parameter sets live side by side. Every file is written under a temporary name and
moved into place, so a reader never sees half a file; the bytes depend only on the inputs
(``.npy`` and sorted JSON, no timestamps), so re-materializing gives identical files.
"""

from __future__ import annotations

import io
import json
from typing import Any

import fsspec
import numpy as np

from em2q_msi import finite_json
from em2q_msi.temporaries import sweep_orphans, temporary_name
from em2q_resources.storage import StorageResource


def result_key(
    measurement_id: str, asset: str, parameter_hash: str | None, chunk: int | None
) -> str:
    segment = parameter_hash[:16] if parameter_hash else "raw"
    where = "all" if chunk is None else f"chunk-{chunk:04d}"
    return f"results/{measurement_id}/{asset}/{segment}/{where}"


def _fs(storage: StorageResource, url: str) -> tuple[fsspec.AbstractFileSystem, str]:
    return fsspec.core.url_to_fs(url, **storage.storage_options)


_swept: set[tuple[int, str]] = set()


def write_bytes(storage: StorageResource, key: str, data: bytes) -> str:
    """Write ``data`` at ``key`` atomically; returns its URL."""
    url = storage.url(key)
    fs, path = _fs(storage, url)
    parent = path.rsplit("/", 1)[0]
    fs.makedirs(parent, exist_ok=True)
    if (id(fs), parent) not in _swept:  # once per folder and process
        sweep_orphans(fs, parent)
        _swept.add((id(fs), parent))
    temporary = f"{parent}/{temporary_name(path.rsplit('/', 1)[-1])}"
    fs.pipe_file(temporary, data)
    try:
        fs.mv(temporary, path)
    except BaseException:
        fs.rm(temporary)
        raise
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
