"""Faults under the web catalog and the CLI: Elasticsearch frozen (SIGSTOP) and stopped, a fresh
cluster without indices, storage read-only and full. Each answers a clear 503/507 page or exit
3, leaves nothing half-written and recovers when the part comes back.

Elasticsearch faults use a cluster of their own (``LocalElasticsearch``), never the session's.
Storage faults mount a small tmpfs, which needs root (CAP_SYS_ADMIN); elsewhere they skip.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from em2q.web import create_app
from em2q.web.server import serve_in_thread
from em2q_resources.elasticsearch_server import LocalElasticsearch
from em2q_resources.metadata import MetadataStore, load_schema
from em2q_resources.settings import Settings
from em2q_resources.storage import StorageResource
from tests.web.conftest import EXAMPLE_SETUP, setup_form_values, with_csrf
from tests.web.test_pages import _register, post_upload

S = load_schema()
JSON = {"Accept": "application/json"}
#: a bound on how long a page may take while a backend is frozen (the setting below is 2 s;
#: before the timeouts were bounded, a page took over two minutes)
CLIENT_BOUND_S = 45


def _cli(settings: Settings, *args: str) -> subprocess.CompletedProcess:
    env = {
        **os.environ,
        "EM2Q_ELASTICSEARCH_URL": settings.elasticsearch_url or "",
        "EM2Q_INDEX_PREFIX": settings.index_prefix,
        "EM2Q_STORAGE": settings.storage,
        "EM2Q_ELASTICSEARCH_TIMEOUT_S": str(settings.elasticsearch_timeout_s),
        "PYTHONPATH": str(Path(__file__).resolve().parents[2]),
    }
    return subprocess.run(
        [sys.executable, "-m", "em2q.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        encoding="utf-8",
        timeout=CLIENT_BOUND_S + 30,
    )


@pytest.fixture(scope="module")
def own_elasticsearch(settings) -> Iterator[LocalElasticsearch]:
    cluster = LocalElasticsearch(cache_dir=settings.cache_dir, start_timeout_s=300)
    cluster.start()
    yield cluster
    if cluster.process is not None and cluster.process.poll() is None:
        os.killpg(cluster.process.pid, signal.SIGCONT)
    cluster.stop()


@pytest.fixture
def own_settings(own_elasticsearch, tmp_path) -> Settings:
    return Settings(
        elasticsearch_url=own_elasticsearch.url,
        index_prefix=f"fault-{uuid.uuid4().hex[:8]}",
        storage=str(tmp_path / "storage"),
        cache_dir=tmp_path / "cache",
        elasticsearch_timeout_s=2.0,
    )


def test_a_frozen_elasticsearch_gives_503_and_exit_3_then_the_catalog_recovers(
    own_elasticsearch, own_settings
):
    store = MetadataStore.connect(own_settings.elasticsearch_url, index_prefix=own_settings.index_prefix)  # fmt: skip
    store.ensure_indices()
    _register(store, "survivor")
    store.refresh()
    group = own_elasticsearch.process.pid
    with serve_in_thread(create_app(own_settings)) as url:
        assert httpx.get(f"{url}/catalog", timeout=CLIENT_BOUND_S).status_code == 200
        os.killpg(group, signal.SIGSTOP)
        try:
            page = httpx.get(f"{url}/catalog", timeout=CLIENT_BOUND_S)
            api = httpx.get(f"{url}/api/measurements/survivor/status", timeout=CLIENT_BOUND_S)
            cli = _cli(own_settings, "search")
        finally:
            os.killpg(group, signal.SIGCONT)
        assert page.status_code == 503 and "did not answer" in page.text
        assert api.status_code == 503 and "did not answer" in api.json()["message"]
        assert cli.returncode == 3 and "did not answer" in cli.stderr
        assert "Traceback" not in cli.stderr
        recovered = httpx.get(f"{url}/catalog", timeout=CLIENT_BOUND_S)
    assert recovered.status_code == 200 and 'data-id="survivor"' in recovered.text
    assert _cli(own_settings, "search").returncode == 0


def test_a_stopped_elasticsearch_gives_503_and_exit_3(own_elasticsearch, own_settings):
    """Runs last in this module: the cluster does not come back."""
    own_elasticsearch.stop()
    with serve_in_thread(create_app(own_settings)) as url:
        page = httpx.get(f"{url}/catalog", timeout=CLIENT_BOUND_S)
    cli = _cli(own_settings, "search", "kidney")
    assert page.status_code == 503 and "did not answer" in page.text
    assert cli.returncode == 3 and "Is it running?" in cli.stderr
    assert "Traceback" not in cli.stderr


def test_a_fresh_cluster_without_indices_shows_an_empty_catalog(elasticsearch_url, tmp_path):
    settings = Settings(
        elasticsearch_url=elasticsearch_url,
        index_prefix=f"fresh-{uuid.uuid4().hex[:8]}",
        storage=str(tmp_path / "storage"),
        cache_dir=tmp_path / "cache",
    )
    with TestClient(create_app(settings)) as client:
        answers = {
            path: client.get(path)
            for path in ("/catalog", "/catalog?q=kidney&f=status=READY", "/parameter-sets",
                         "/parameter-sets/new", "/compare", "/upload")
        }  # fmt: skip
        missing = client.get("/measurements/nothing-here")
    assert {path: a.status_code for path, a in answers.items()} == dict.fromkeys(answers, 200)
    assert '<strong id="total">0</strong>' in answers["/catalog"].text
    assert missing.status_code == 404
    cli = _cli(settings, "search")
    assert cli.returncode == 0 and "0 of 0" in cli.stdout


# ---------------------------------------------------------------- storage read-only or full


@pytest.fixture
def small_tmpfs(tmp_path) -> Iterator[Path]:
    """A 256 KiB tmpfs (the example pair is 360 kB): a disk that fills up."""
    mount_point = tmp_path / "tmpfs"
    mount_point.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mount_point)],
        capture_output=True,
        text=True,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {mounted.stderr.strip()}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)


def _remount(mount_point: Path, options: str) -> None:
    subprocess.run(["mount", "-o", f"remount,{options}", str(mount_point)], check=True)


@pytest.fixture
def tmpfs_client(small_tmpfs, web_settings, metadata_store):
    settings = web_settings.with_overrides(storage=str(small_tmpfs / "storage"))
    storage = StorageResource.from_settings(settings)
    with TestClient(create_app(settings, store=metadata_store, storage=storage)) as client:
        yield with_csrf(client), storage, small_tmpfs


def test_a_full_disk_refuses_the_upload_with_507_keeps_nothing_and_recovers(
    tmpfs_client, metadata_store
):
    client, storage, mount_point = tmpfs_client
    values = setup_form_values(EXAMPLE_SETUP)
    full = post_upload(client, values, headers=JSON)
    assert full.status_code == 507 and "is full" in full.json()["message"]
    metadata_store.refresh()
    assert metadata_store.search(S.Measurement).total == 0
    assert storage.find() == []  # the staged part was removed
    _remount(mount_point, "size=8m")
    assert post_upload(client, values, headers=JSON).status_code == 201


def test_a_read_only_storage_refuses_the_upload_with_503_and_recovers(tmpfs_client, metadata_store):
    client, storage, mount_point = tmpfs_client
    _remount(mount_point, "size=8m")
    storage.check()  # the root folder exists before the file system turns read-only
    _remount(mount_point, "ro")
    values = setup_form_values(EXAMPLE_SETUP)
    refused = post_upload(client, values, headers=JSON)
    assert refused.status_code == 503 and "refuses writes" in refused.json()["message"]
    metadata_store.refresh()
    assert metadata_store.search(S.Measurement).total == 0
    _remount(mount_point, "rw")
    assert storage.find() == []
    assert post_upload(client, values, headers=JSON).status_code == 201
