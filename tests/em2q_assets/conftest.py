"""Fixtures for the Dagster platform: a real Elasticsearch store, storage, a Dagster instance."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import dagster as dg
import pytest

from em2q.setup_file import measurement_from_setup, read_setup
from em2q_assets.definitions import build_definitions
from em2q_resources.metadata.store import utc_now
from em2q_resources.settings import PROJECT_ROOT, Settings

EXAMPLES = PROJECT_ROOT.parent / "shared" / "data" / "imzml"
CHUNKS = 3


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def register_copy(store, folder: Path, stem: str, measurement_id: str, **setup_changes):
    """Copy an example pair into ``folder`` and write its UPLOADED Measurement document."""
    folder.mkdir(parents=True, exist_ok=True)
    files = []
    for suffix, role in ((".imzML", "IMZML"), (".ibd", "IBD")):
        target = folder / f"{stem}{suffix}"
        shutil.copyfile(EXAMPLES / f"{stem}{suffix}", target)
        files.append(
            {
                "role": role,
                "uri": str(target),
                "size_bytes": target.stat().st_size,
                "checksum_type": "SHA256",
                "checksum": sha256(target),
            }
        )
    setup = {**read_setup(PROJECT_ROOT / "examples" / "setup.yaml"), **setup_changes}
    doc = measurement_from_setup(setup, id=measurement_id, uploaded_at=utc_now(), files=files)
    store.create(doc, refresh=True)
    return doc


@pytest.fixture
def platform(metadata_store, elasticsearch_url, tmp_path):
    """Definitions wired to the test store and a storage folder, plus an ephemeral instance."""
    settings = Settings(
        elasticsearch_url=elasticsearch_url,
        index_prefix=metadata_store.prefix,
        storage=str(tmp_path / "storage"),
        cache_dir=tmp_path / "cache",
        spectra_chunks=CHUNKS,
    )
    defs = build_definitions(settings)
    instance = dg.DagsterInstance.ephemeral()
    return defs, instance, metadata_store, tmp_path
