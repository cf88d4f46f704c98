"""StorageResource on a local folder and on a real S3 API server (moto) on loopback."""

from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from em2q_resources.metadata.schema import InvalidIdentifier
from em2q_resources.settings import Settings
from em2q_resources.storage import (
    StorageResource,
    StorageUnavailable,
    UnsafeKey,
    measurement_prefixes,
)
from tests.fixtures.s3 import S3Endpoint


@pytest.fixture(params=["folder", "s3"])
def storage(request, tmp_path: Path) -> StorageResource:
    if request.param == "folder":
        return StorageResource(root=str(tmp_path / "storage"))
    s3: S3Endpoint = request.getfixturevalue("s3_endpoint")
    return StorageResource(
        root=f"s3://{s3.bucket()}/prefix",
        s3_endpoint_url=s3.endpoint_url,
        s3_key=s3.key,
        s3_secret=s3.secret,
    )


def test_put_file_streams_in_blocks_reporting_bytes_and_move_commits(storage, tmp_path):
    source = tmp_path / "data.ibd"
    payload = os.urandom(13 * 1024 * 1024 + 17)
    source.write_bytes(payload)
    storage.check()
    seen: list[int] = []
    digest = storage.put_file(source, "staging/u1/data.ibd", progress=seen.append)
    assert sum(seen) == len(payload) and len(seen) == 2  # 8 MiB blocks
    assert digest == __import__("hashlib").sha256(payload).hexdigest()
    storage.move("staging/u1", "measurements/m1")
    assert storage.find() == ["measurements/m1/data.ibd"]
    with storage.open("measurements/m1/data.ibd") as handle:
        assert handle.read() == payload
    assert storage.exists("measurements/m1/data.ibd") and not storage.exists("staging/u1/data.ibd")
    storage.remove("measurements/m1")
    assert storage.find() == []


def test_urls_and_options_reach_the_same_files_through_fsspec(storage):
    import fsspec

    with storage.open("a/b.txt", "wb") as handle:
        handle.write(b"hello")
    url = storage.url("a", "b.txt")
    assert url.startswith(("file:///", "s3://")) and url.endswith("/a/b.txt")
    fs, path = fsspec.core.url_to_fs(url, **storage.storage_options)
    assert fs.cat_file(path) == b"hello"


#: keys that would leave the root or another measurement's prefix, in the forms attackers use
CLIMBING_KEYS = [
    "../measurements",
    "measurements/../measurements",
    "measurements/m1/../../measurements",
    "/etc/passwd",
    "measurements/%2e%2e/measurements",
    "measurements/%2E%2E%2Fmeasurements",
    "measurements/\u2024\u2024/measurements",  # ONE DOT LEADER
    "measurements/\uff0e\uff0e/measurements",  # FULLWIDTH FULL STOP
    "measurements/m1\uff0fx",  # FULLWIDTH SOLIDUS
    "measurements/m1\x00/x",
    "measurements\\..\\measurements",
    "measurements/./m1",
]


def _uploaded_pair(storage: StorageResource) -> list[str]:
    for measurement in ("m1", "m2"):
        for name in ("data.imzML", "data.ibd"):
            with storage.open(f"measurements/{measurement}/{name}", "wb") as handle:
                handle.write(b"x")
    return storage.find()


@pytest.mark.parametrize("key", CLIMBING_KEYS)
def test_climbing_keys_are_refused_and_nothing_is_removed(storage, key):
    before = _uploaded_pair(storage)
    assert len(before) == 4
    with pytest.raises(UnsafeKey):
        storage.remove(key)
    with pytest.raises(UnsafeKey):
        storage.url(key)
    assert storage.find() == before


def test_removal_outside_the_prefix_it_is_confined_to_is_refused(storage):
    before = _uploaded_pair(storage)
    with pytest.raises(UnsafeKey, match="outside measurements/m1/"):
        storage.remove("measurements/m2", within="measurements/m1")
    with pytest.raises(UnsafeKey):  # a sibling whose name starts the same is not inside
        storage.remove("measurements/m10", within="measurements/m1")
    assert storage.find() == before
    storage.remove("measurements/m1", within="measurements/m1")
    assert storage.find() == [k for k in before if k.startswith("measurements/m2/")]


@pytest.mark.parametrize(
    "uri",
    [
        "http://127.0.0.1:18999/internal/admin.imzML",
        "file:///etc/passwd",
        "s3://another-bucket/measurements/m1/data.imzML",
        "{root}/../outside/data.imzML",
        "{root}/measurements/m1/%2e%2e/%2e%2e/x.imzML",
        "{root}x/measurements/m1/data.imzML",  # a sibling folder whose name starts the same
        "{root}/measurements/m2/data.imzML",  # another measurement's files
    ],
)
def test_uris_outside_the_storage_or_the_measurement_prefix_are_refused(storage, uri):
    uri = uri.format(root=storage.url())
    with pytest.raises(UnsafeKey):
        storage.key_of(uri, within="measurements/m1")


def test_uris_inside_the_measurement_prefix_give_their_key(storage):
    uri = storage.url("measurements/m1/data.imzML")
    assert storage.key_of(uri, within="measurements/m1") == "measurements/m1/data.imzML"
    assert storage.checked_url(uri, within="measurements/m1") == uri


@pytest.mark.parametrize("measurement_id", ["../measurements", "a/b", "..", "m1/../m2", ""])
def test_measurement_prefixes_refuse_ids_outside_the_grammar(measurement_id):
    with pytest.raises(InvalidIdentifier):
        measurement_prefixes(measurement_id)


def test_from_settings_takes_root_and_endpoint():
    settings = Settings(storage="s3://bucket/p", s3_endpoint_url="http://127.0.0.1:1")
    storage = StorageResource.from_settings(settings)
    assert storage.storage_options == {"client_kwargs": {"endpoint_url": "http://127.0.0.1:1"}}
    assert storage.url("x") == "s3://bucket/p/x"


def test_unreachable_endpoint_is_storage_unavailable():
    storage = StorageResource(
        root="s3://bucket/p",
        s3_endpoint_url="http://127.0.0.1:9",
        s3_key="k",
        s3_secret="s",
        s3_max_attempts=1,
    )
    with pytest.raises(StorageUnavailable, match="could not be reached"):
        storage.check()


def test_missing_bucket_is_storage_unavailable(s3_endpoint):
    storage = StorageResource(
        root="s3://no-such-bucket/p",
        s3_endpoint_url=s3_endpoint.endpoint_url,
        s3_key=s3_endpoint.key,
        s3_secret=s3_endpoint.secret,
    )
    with pytest.raises(StorageUnavailable, match="does not exist"):
        storage.check()


def test_folder_root_copies_in_the_kernel_without_checksum(tmp_path):
    storage = StorageResource(root=str(tmp_path / "storage"))
    source = tmp_path / "data.ibd"
    payload = os.urandom(3 * 1024 * 1024 + 5)
    source.write_bytes(payload)
    seen: list[int] = []
    assert storage.put_file(source, "m/data.ibd", progress=seen.append, checksum=False) is None
    assert sum(seen) == len(payload)
    assert (tmp_path / "storage" / "m" / "data.ibd").read_bytes() == payload


def test_concurrent_uploads_on_a_folder_root_never_lose_their_staging_folder(tmp_path):
    """Many uploads at once: each stages under ``staging/<id>/``, commits by a move and removes
    its staging folder, whose pruning removes ``staging/`` when it is empty, exactly while
    another upload creates ``staging/<its id>/`` under it. Every upload must still land."""
    storage = StorageResource(root=str(tmp_path / "root"))
    source = tmp_path / "source.bin"
    source.write_bytes(b"x" * 64)
    rounds, workers = 30, 8
    barrier = threading.Barrier(workers)

    def upload(worker: int) -> list[str]:
        failures = []
        for n in range(rounds):
            staging, committed = f"staging/{worker}-{n}", f"measurements/m{worker}-{n}"
            if n % 10 == 0:
                barrier.wait()  # line the workers up so their folders are made at the same time
            try:
                storage.put_file(source, f"{staging}/a.imzML", checksum=False)
                storage.put_file(source, f"{staging}/a.ibd", checksum=worker % 2 == 0)
                storage.move(f"{staging}/a.imzML", f"{committed}/a.imzML")
                storage.move(f"{staging}/a.ibd", f"{committed}/a.ibd")
                storage.remove(staging)
                storage.remove(committed)  # a delete prunes measurements/ the same way
            except OSError as exc:
                failures.append(f"{worker}-{n}: {exc!r}")
        return failures

    with ThreadPoolExecutor(workers) as pool:
        failures = [f for found in pool.map(upload, range(workers)) for f in found]
    assert failures == []
    assert storage.find() == []


def test_a_staging_folder_pruned_between_two_mkdirs_is_made_again(tmp_path, monkeypatch):
    """The exact interleaving of the race above, made to happen every time: right after this
    upload creates ``staging/``, another upload's removal prunes it (empty) again."""
    storage = StorageResource(root=str(tmp_path / "root"))
    source = tmp_path / "source.bin"
    source.write_bytes(b"payload")
    real_mkdir = os.mkdir
    pruned: list[str] = []

    def mkdir_then_pruned(path, *args, **kwargs):
        real_mkdir(path, *args, **kwargs)
        if Path(path).name in ("staging", "measurements") and pruned.count(Path(path).name) < 2:
            pruned.append(Path(path).name)
            os.rmdir(path)  # what a concurrent upload's _prune_empty_parents does

    monkeypatch.setattr(os, "mkdir", mkdir_then_pruned)
    storage.put_file(source, "staging/u1/a.imzML", checksum=False)
    storage.put_file(source, "staging/u1/a.ibd")
    storage.move("staging/u1/a.imzML", "measurements/m1/a.imzML")
    storage.move("staging/u1/a.ibd", "measurements/m1/a.ibd")
    monkeypatch.undo()
    assert sorted(pruned) == ["measurements", "measurements", "staging", "staging"]
    assert storage.find() == ["measurements/m1/a.ibd", "measurements/m1/a.imzML"]
