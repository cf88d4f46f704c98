"""Fixtures for the Dagster platform: a real Elasticsearch store, storage, a Dagster instance."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import dagster as dg
import pytest

from em2q.setup_file import measurement_from_setup, read_setup
from em2q_assets.definitions import build_definitions
from em2q_resources.metadata.schema import utc_now
from em2q_resources.settings import PROJECT_ROOT, Settings
from em2q_resources.storage import StorageResource

EXAMPLES = PROJECT_ROOT.parent / "shared" / "data" / "imzml"
CHUNKS = 3


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


#: the storage root of each test platform, by index prefix: records may point only into the
#: platform's own storage (under measurements/<id>/), so register_copy puts the pair there
STORAGE_ROOTS: dict[str, str] = {}


def remember_storage(settings: Settings) -> Settings:
    """Let :func:`register_copy` find the storage of the store with ``settings.index_prefix``."""
    STORAGE_ROOTS[settings.index_prefix] = settings.storage
    return settings


def register_pair(
    store, imzml: Path, ibd: Path, measurement_id: str, folder: Path, **setup_changes
):
    """Copy an imzML/ibd pair where an upload puts it, ``measurements/<id>/`` in the storage of
    the store's platform (``folder`` when none is known), and write its UPLOADED Measurement
    document (the example setup, with ``setup_changes``)."""
    root = STORAGE_ROOTS.get(store.prefix)
    storage = StorageResource(root=root) if root else None
    if storage is not None:
        folder = Path(storage.path(f"measurements/{measurement_id}"))
    folder.mkdir(parents=True, exist_ok=True)
    files = []
    for source, role in ((imzml, "IMZML"), (ibd, "IBD")):
        target = folder / source.name
        shutil.copyfile(source, target)
        uri = storage.url(f"measurements/{measurement_id}/{target.name}") if storage else target
        files.append(
            {
                "role": role,
                "uri": str(uri),
                "size_bytes": target.stat().st_size,
                "checksum_type": "SHA256",
                "checksum": sha256(target),
            }
        )
    setup = {**read_setup(PROJECT_ROOT / "examples" / "setup.yaml"), **setup_changes}
    doc = measurement_from_setup(setup, id=measurement_id, uploaded_at=utc_now(), files=files)
    store.create(doc, refresh=True)
    return doc


def register_copy(store, folder: Path, stem: str, measurement_id: str, **setup_changes):
    """:func:`register_pair` of an official example (``stem``: ``Example_Continuous`` …)."""
    return register_pair(
        store, EXAMPLES / f"{stem}.imzML", EXAMPLES / f"{stem}.ibd", measurement_id, folder,
        **setup_changes,
    )  # fmt: skip


@pytest.fixture
def platform(metadata_store, elasticsearch_url, tmp_path):
    """Definitions wired to the test store and a storage folder, plus an ephemeral instance."""
    settings = remember_storage(
        Settings(
            elasticsearch_url=elasticsearch_url,
            index_prefix=metadata_store.prefix,
            storage=str(tmp_path / "storage"),
            cache_dir=tmp_path / "cache",
            spectra_chunks=CHUNKS,
        )
    )
    defs = build_definitions(settings)
    instance = dg.DagsterInstance.ephemeral()
    return defs, instance, metadata_store, tmp_path
