"""Uploads end to end: real Elasticsearch, storage on a folder and on moto's S3 server.

Broken inputs are byte/XML edits of copies of the example pair in ``tmp_path``; the shared
example files are only ever read.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner
from elasticsearch import Elasticsearch

from em2q.cli import main
from em2q.dev import EXAMPLE_SETUP, EXAMPLES_DIR
from em2q.setup_file import read_setup
from em2q.upload import DuplicateUpload, InvalidUpload, upload_measurement
from em2q_resources.metadata import (
    AlreadyExists,
    MetadataStore,
    StoreUnavailable,
    load_schema,
)
from em2q_resources.metadata.schema import to_document
from em2q_resources.storage import StorageResource

if not EXAMPLES_DIR.exists():  # a checkout outside /work
    EXAMPLES_DIR = Path("/work/shared/data/imzml")


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def copy_example(folder: Path, name: str = "Example_Continuous") -> Path:
    """A private copy of an example pair; returns the imzML path."""
    folder.mkdir(parents=True, exist_ok=True)
    for suffix in (".imzML", ".ibd"):
        shutil.copyfile(EXAMPLES_DIR / f"{name}{suffix}", folder / f"{name}{suffix}")
    return folder / f"{name}.imzML"


def set_sha1(xml: bytes, ibd: bytes) -> bytes:
    digest = hashlib.sha1(ibd).hexdigest().upper().encode()
    return re.sub(
        rb'(accession="IMS:1000091"[^>]*?value=")[^"]*(")', rb"\g<1>" + digest + rb"\2", xml
    )


@pytest.fixture(scope="module")
def shared_store(elasticsearch_url: str) -> Iterator[MetadataStore]:
    """One set of indices for the module (creating indices per test costs seconds)."""
    store = MetadataStore.connect(
        elasticsearch_url, index_prefix=f"test-upload-{uuid.uuid4().hex[:8]}"
    )
    store.ensure_indices()
    yield store
    store.drop_all()


@pytest.fixture
def metadata_store(shared_store: MetadataStore) -> Iterator[MetadataStore]:
    """The module's store, emptied of measurements after each test."""
    yield shared_store
    measurement = load_schema().Measurement
    for doc_id in registered(shared_store):
        shared_store.delete(measurement, doc_id)
    shared_store.refresh()


@pytest.fixture
def folder_storage(tmp_path: Path) -> StorageResource:
    return StorageResource(root=str(tmp_path / "storage"))


@pytest.fixture(params=["folder", "s3"])
def storage(request, tmp_path: Path) -> StorageResource:
    if request.param == "folder":
        return StorageResource(root=str(tmp_path / "storage"))
    s3 = request.getfixturevalue("s3_endpoint")
    return StorageResource(
        root=f"s3://{s3.bucket()}/em2q",
        s3_endpoint_url=s3.endpoint_url,
        s3_key=s3.key,
        s3_secret=s3.secret,
    )


@pytest.fixture
def setup_doc() -> dict:
    return read_setup(EXAMPLE_SETUP)


@pytest.fixture
def upload(metadata_store, setup_doc, tmp_path) -> Callable:
    def run(imzml, storage, **kwargs):
        kwargs.setdefault("setup", setup_doc)
        kwargs.setdefault("progress", False)
        kwargs.setdefault("cache_dir", tmp_path / "cache")
        return upload_measurement(imzml, store=metadata_store, storage=storage, **kwargs)

    return run


def registered(store: MetadataStore) -> list[str]:
    store.refresh()
    return [m.id for m in store.search(load_schema().Measurement, page_size=100).hits]


# ---------------------------------------------------------------- success


def test_upload_stores_identical_files_and_registers_the_document(
    upload, storage, metadata_store, tmp_path
):
    imzml = copy_example(tmp_path / "src")
    sent: list[int] = []
    measurement = upload(imzml, storage, progress=sent.append, operator="Ada Lovelace")

    assert re.fullmatch(r"imzml-example-3x3-pixels-[0-9a-f]{8}", measurement.id)
    folder = f"measurements/{measurement.id}"
    assert storage.find() == [
        f"{folder}/Example_Continuous.ibd",
        f"{folder}/Example_Continuous.imzML",
    ]
    for suffix in (".imzML", ".ibd"):
        with storage.open(f"{folder}/Example_Continuous{suffix}") as handle:
            assert handle.read() == imzml.with_suffix(suffix).read_bytes()
    assert sum(sent) == imzml.stat().st_size + imzml.with_suffix(".ibd").stat().st_size

    doc = to_document(metadata_store.get(load_schema().Measurement, measurement.id).doc)
    assert doc["status"] == "UPLOADED" and doc["operator"] == "Ada Lovelace"
    assert doc["settings"]["polarity"] == "POSITIVE"
    assert doc["files"] == [
        {
            "role": role,
            "uri": storage.url(folder, f"Example_Continuous{suffix}"),
            "size_bytes": imzml.with_suffix(suffix).stat().st_size,
            "checksum_type": "SHA256",
            "checksum": sha256(imzml.with_suffix(suffix).read_bytes()),
        }
        for role, suffix in (("IMZML", ".imzML"), ("IBD", ".ibd"))
    ]
    facts = doc["facts"]
    assert (facts["mode"], facts["spectra_count"]) == ("CONTINUOUS", 9)
    assert (facts["pixels_x"], facts["pixels_y"], facts["pixels_z"]) == (3, 3, 1)
    assert 100.0 < facts["mz_range"]["min_mz"] < facts["mz_range"]["max_mz"] < 800.0
    assert facts["uuid"] and facts["mz_dtype"] and facts["intensity_dtype"]


def test_ibd_with_another_name_is_stored_beside_the_imzml_under_its_stem(
    upload, folder_storage, tmp_path
):
    imzml = copy_example(tmp_path / "src", "Example_Processed")
    ibd = imzml.with_suffix(".ibd").rename(tmp_path / "src" / "raw-data.ibd")
    measurement = upload(imzml, folder_storage, ibd_path=ibd, measurement_id="processed-1")
    assert measurement.id == "processed-1"
    assert folder_storage.find() == [
        "measurements/processed-1/Example_Processed.ibd",
        "measurements/processed-1/Example_Processed.imzML",
    ]
    assert measurement.facts.spectra_count == 9


# ---------------------------------------------------------------- refused: invalid input


def _flip_data_byte(ibd: bytes) -> bytes:
    return ibd[:-1] + bytes([ibd[-1] ^ 0xFF])


BROKEN = {
    "checksum_mismatch": dict(edit_ibd=_flip_data_byte, fix_checksum=False),
    "ibd_truncated": dict(edit_ibd=lambda ibd: ibd[: len(ibd) // 2]),
    "uuid_mismatch": dict(edit_ibd=lambda ibd: bytes(16) + ibd[16:]),
    "xml_not_well_formed": dict(edit_xml=lambda xml: xml.replace(b"</mzML>", b"</mzM")),
    "coordinate_outside_grid": dict(
        edit_xml=lambda xml: xml.replace(
            b'name="position x" value="3"', b'name="position x" value="9"', 1
        )
    ),
}


def broken_copy(folder: Path, edit_xml=None, edit_ibd=None, fix_checksum: bool = True) -> Path:
    imzml = copy_example(folder)
    xml, ibd = imzml.read_bytes(), imzml.with_suffix(".ibd").read_bytes()
    ibd = edit_ibd(ibd) if edit_ibd else ibd
    xml = edit_xml(xml) if edit_xml else xml
    xml = set_sha1(xml, ibd) if fix_checksum else xml
    imzml.write_bytes(xml)
    imzml.with_suffix(".ibd").write_bytes(ibd)
    return imzml


@pytest.mark.parametrize("code", sorted(BROKEN))
def test_each_broken_file_class_is_refused_with_the_problem_named_and_nothing_kept(
    code, upload, folder_storage, metadata_store, tmp_path
):
    imzml = broken_copy(tmp_path / "src", **BROKEN[code])
    with pytest.raises(InvalidUpload) as refused:
        upload(imzml, folder_storage)
    assert code in [p.code for p in refused.value.problems]
    assert code in str(refused.value)
    assert folder_storage.find() == [] and registered(metadata_store) == []


def test_missing_ibd_is_refused(upload, folder_storage, metadata_store, tmp_path):
    imzml = copy_example(tmp_path / "src")
    imzml.with_suffix(".ibd").unlink()
    with pytest.raises(InvalidUpload, match="Example_Continuous.ibd"):
        upload(imzml, folder_storage)
    assert folder_storage.find() == [] and registered(metadata_store) == []


@pytest.mark.parametrize(
    ("edit", "field"),
    [
        (lambda s: s["settings"].update(polarity="SIDEWAYS"), "settings.polarity"),
        (lambda s: s.pop("title"), "Measurement.title"),
        (lambda s: s["sample"].update(colour="blue"), "sample.colour"),
        (lambda s: s.update(status="READY"), "status"),
    ],
    ids=["bad-enum", "missing-required", "unknown-field", "platform-field"],
)
def test_bad_setup_is_refused_naming_the_field(
    edit, field, upload, folder_storage, metadata_store, setup_doc, tmp_path
):
    edit(setup_doc)
    with pytest.raises(InvalidUpload) as refused:
        upload(copy_example(tmp_path / "src"), folder_storage, setup=setup_doc)
    assert [p.where for p in refused.value.problems] == ["setup"]
    assert field in str(refused.value)
    assert folder_storage.find() == [] and registered(metadata_store) == []


def test_setup_and_file_problems_are_reported_together(upload, folder_storage, setup_doc, tmp_path):
    setup_doc["settings"]["analyzer"] = "ABACUS"
    imzml = broken_copy(tmp_path / "src", edit_ibd=_flip_data_byte, fix_checksum=False)
    with pytest.raises(InvalidUpload) as refused:
        upload(imzml, folder_storage, setup=setup_doc)
    assert [p.code for p in refused.value.problems] == ["setup", "checksum_mismatch"]


# ---------------------------------------------------------------- refused: duplicates, ids


def test_the_same_files_uploaded_twice_are_refused_as_duplicate(
    upload, folder_storage, metadata_store, tmp_path
):
    first = upload(copy_example(tmp_path / "a"), folder_storage)
    again = copy_example(tmp_path / "b")  # same bytes, another place
    with pytest.raises(DuplicateUpload, match=first.id) as refused:
        upload(again, folder_storage, setup=read_setup(EXAMPLE_SETUP) | {"title": "other"})
    assert refused.value.existing_id == first.id
    assert registered(metadata_store) == [first.id]
    assert all(key.startswith(f"measurements/{first.id}/") for key in folder_storage.find())


@pytest.mark.parametrize("attempt", range(3))
def test_concurrent_uploads_of_the_same_files_register_one(
    attempt, upload, folder_storage, metadata_store, tmp_path
):
    """Both pass the duplicate check (they meet at a barrier during the copy); one withdraws."""
    barrier = threading.Barrier(2, timeout=30)
    outcomes: dict[int, object] = {}

    def run(n: int) -> None:
        met: list[bool] = []

        def meet(_bytes: int) -> None:
            if not met:
                met.append(True)
                barrier.wait()

        try:
            outcomes[n] = upload(copy_example(tmp_path / f"src{n}"), folder_storage, progress=meet)
        except Exception as exc:  # noqa: BLE001 - the outcome is what the test checks
            outcomes[n] = exc

    threads = [threading.Thread(target=run, args=(n,)) for n in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    kept = [o for o in outcomes.values() if not isinstance(o, Exception)]
    refused = [o for o in outcomes.values() if isinstance(o, DuplicateUpload)]
    assert len(kept) == 1 and len(refused) == 1, outcomes
    assert refused[0].existing_id == kept[0].id
    assert registered(metadata_store) == [kept[0].id]
    assert {key.split("/")[1] for key in folder_storage.find()} == {kept[0].id}


def test_every_refusal_of_five_concurrent_same_file_uploads_names_the_registered_one(
    upload, folder_storage, metadata_store, tmp_path
):
    """Five uploads of one pair meet during the copy, so all pass the duplicate check and all
    register; four withdraw, and each refusal names the one that stays (not another twin
    that is withdrawing at the same time)."""
    workers = 5
    barrier = threading.Barrier(workers, timeout=60)
    outcomes: dict[int, object] = {}

    def run(n: int) -> None:
        met: list[bool] = []

        def meet(_bytes: int) -> None:
            if not met:
                met.append(True)
                barrier.wait()

        try:
            outcomes[n] = upload(copy_example(tmp_path / f"src{n}"), folder_storage, progress=meet)
        except Exception as exc:  # noqa: BLE001 - the outcome is what the test checks
            outcomes[n] = exc

    threads = [threading.Thread(target=run, args=(n,)) for n in range(workers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    kept = [o for o in outcomes.values() if not isinstance(o, Exception)]
    refused = [o for o in outcomes.values() if isinstance(o, DuplicateUpload)]
    assert len(kept) == 1 and len(refused) == workers - 1, outcomes
    assert {r.existing_id for r in refused} == {kept[0].id}
    assert registered(metadata_store) == [kept[0].id]


def test_a_taken_explicit_id_is_refused_and_the_existing_files_stay(
    upload, folder_storage, metadata_store, tmp_path
):
    upload(copy_example(tmp_path / "a"), folder_storage, measurement_id="mine")
    before = folder_storage.find()
    with pytest.raises(AlreadyExists):
        upload(
            copy_example(tmp_path / "b", "Example_Processed"), folder_storage, measurement_id="mine"
        )
    assert folder_storage.find() == before and registered(metadata_store) == ["mine"]


# ---------------------------------------------------------------- backends down


def test_elasticsearch_unreachable_leaves_nothing_in_storage(folder_storage, setup_doc, tmp_path):
    down = MetadataStore.connect("http://127.0.0.1:9", attempts=1, request_timeout_s=2)
    with pytest.raises(StoreUnavailable):
        upload_measurement(
            copy_example(tmp_path / "src"),
            setup=setup_doc,
            store=down,
            storage=folder_storage,
            progress=False,
        )
    assert folder_storage.find() == []


def test_elasticsearch_lost_during_the_copy_removes_the_committed_files(
    upload, storage, metadata_store, tmp_path
):
    """The cluster stops answering after the duplicate check: the document write fails."""
    reachable = metadata_store.client

    def lose_cluster(_bytes: int) -> None:
        metadata_store.client = Elasticsearch("http://127.0.0.1:9", max_retries=0)
        metadata_store.attempts = 1

    try:
        with pytest.raises(StoreUnavailable):
            upload(copy_example(tmp_path / "src"), storage, progress=lose_cluster)
    finally:
        metadata_store.client = reachable
    assert storage.find() == [] and registered(metadata_store) == []


# ---------------------------------------------------------------- the CLI


@pytest.fixture
def cli_env(metadata_store, elasticsearch_url, tmp_path) -> dict:
    return {
        "EM2Q_ELASTICSEARCH_URL": elasticsearch_url,
        "EM2Q_INDEX_PREFIX": metadata_store.prefix,
        "EM2Q_STORAGE": str(tmp_path / "storage"),
        "EM2Q_CACHE_DIR": str(tmp_path / "cache"),
    }


def cli(env: dict, *args: str):
    return CliRunner().invoke(main, list(args), env=env)


def test_cli_upload_prints_the_id_then_refuses_the_duplicate(cli_env, tmp_path):
    imzml = str(copy_example(tmp_path / "src"))
    first = cli(cli_env, "upload", imzml, "--setup", str(EXAMPLE_SETUP))
    assert first.exit_code == 0, first.output
    measurement_id = first.stdout.strip()
    assert re.fullmatch(r"imzml-example-3x3-pixels-[0-9a-f]{8}", measurement_id)
    assert "upload" in first.stderr  # the progress bar
    again = cli(cli_env, "upload", imzml, "--setup", str(EXAMPLE_SETUP), "--json")
    assert again.exit_code == 1
    assert f"already uploaded as measurement '{measurement_id}'" in again.output


def test_cli_upload_json_describes_the_measurement(cli_env, tmp_path):
    imzml = copy_example(tmp_path / "src", "Example_Processed")
    ibd = imzml.with_suffix(".ibd")
    result = cli(
        cli_env, "upload", str(imzml), "--ibd", str(ibd), "--setup", str(EXAMPLE_SETUP), "--json"
    )
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["status"] == "UPLOADED" and doc["facts"]["mode"] == "PROCESSED"


def test_cli_upload_lists_every_problem_and_exits_1(cli_env, tmp_path):
    setup = tmp_path / "setup.yaml"
    setup.write_text(
        EXAMPLE_SETUP.read_text(encoding="utf-8").replace("polarity: POSITIVE", "polarity: UP")
    )
    imzml = broken_copy(tmp_path / "src", edit_ibd=lambda ibd: ibd[: len(ibd) // 2])
    result = cli(cli_env, "upload", str(imzml), "--setup", str(setup))
    assert result.exit_code == 1
    assert "settings.polarity" in result.output and "ibd_truncated" in result.output
    assert not (tmp_path / "storage" / "measurements").exists()


def test_cli_upload_exits_3_when_a_backend_is_unreachable(
    cli_env, metadata_store, s3_endpoint, tmp_path
):
    imzml = str(copy_example(tmp_path / "src"))
    es_down = cli_env | {"EM2Q_ELASTICSEARCH_URL": "http://127.0.0.1:9"}
    result = cli(es_down, "upload", imzml, "--setup", str(EXAMPLE_SETUP))
    assert result.exit_code == 3 and "did not answer" in result.output
    s3_down = cli_env | {  # a bucket that is not there (an unreachable endpoint: test_storage)
        "EM2Q_STORAGE": "s3://no-such-bucket/em2q",
        "EM2Q_S3_ENDPOINT_URL": s3_endpoint.endpoint_url,
        "AWS_ACCESS_KEY_ID": s3_endpoint.key,
        "AWS_SECRET_ACCESS_KEY": s3_endpoint.secret,
    }
    result = cli(s3_down, "upload", imzml, "--setup", str(EXAMPLE_SETUP))
    assert result.exit_code == 3 and "'no-such-bucket' does not exist" in result.output
    assert registered(metadata_store) == []
