"""Crafted ids and keys cannot reach other measurements' files, on any surface.

The attack this reproduces: a technician registered a measurement whose id was
``../measurements`` through the Thrift service, and an admin's ``em2q delete ../measurements``
then removed the uploaded files of every measurement. Each test counts the files in storage
before and after.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest
from click.testing import CliRunner
from thriftpy2.rpc import make_client

from em2q.cli import main
from em2q.client import Catalog, DeletionRefused
from em2q_resources.auth import Authenticator, Role, TokensFile, Unauthenticated, User
from em2q_resources.metadata import MetadataStore, load_schema
from em2q_resources.metadata.schema import InvalidIdentifier, to_document
from em2q_resources.settings import Settings
from em2q_resources.storage import StorageResource
from tests.fixtures.metadata_service import running_server

S = load_schema()
TRAVERSALS = [
    "../measurements",
    "..",
    "measurements/../measurements",
    "/srv/em2q/storage/measurements",
    "%2e%2e",
    "%2e%2e%2fmeasurements",
    "\u2024\u2024",  # ONE DOT LEADER ×2
    "\uff0e\uff0e",  # FULLWIDTH FULL STOP ×2
    "example-continuous\x00",
    "..\\measurements",
]


@pytest.fixture(scope="module")
def loaded(elasticsearch_url, tmp_path_factory):
    """The examples uploaded (files in storage) as `make run` does; shared, never changed."""
    root = tmp_path_factory.mktemp("confinement")
    prefix = f"conf-{uuid.uuid4().hex[:8]}"
    env = {
        "EM2Q_ELASTICSEARCH_URL": elasticsearch_url,
        "EM2Q_INDEX_PREFIX": prefix,
        "EM2Q_CACHE_DIR": str(root / "cache"),
        "EM2Q_STORAGE": str(root / "storage"),
    }
    assert CliRunner().invoke(main, ["dev", "--once"], env=env).exit_code == 0
    store = MetadataStore.connect(elasticsearch_url, index_prefix=prefix)
    yield env, store, StorageResource(root=env["EM2Q_STORAGE"])
    store.drop_all()


def cli(env, *args):
    return CliRunner().invoke(main, list(args), env=env)


def files_in(storage: StorageResource) -> list[str]:
    return storage.find("measurements")


def _poison(store: MetadataStore, doc_id: str, **changes) -> None:
    """Index a record as an old platform would have stored it, bypassing today's validation."""
    document = to_document(store.get(S.Measurement, "example-continuous").doc)
    document.update(id=doc_id, **changes)
    store.client.index(index=store.alias("Measurement"), id=doc_id, document=document, refresh=True)


@pytest.mark.parametrize("measurement_id", TRAVERSALS)
def test_cli_delete_of_a_traversal_id_is_refused_and_removes_no_file(loaded, measurement_id):
    env, _, storage = loaded
    before = files_in(storage)
    assert len(before) == 4  # two example pairs
    result = cli(env, "delete", measurement_id, "--yes")
    assert result.exit_code == 1, result.output
    assert "is not a valid identifier" in result.output
    assert files_in(storage) == before


def test_a_poisoned_record_with_a_traversal_id_cannot_be_deleted_through(loaded):
    env, store, storage = loaded
    _poison(store, "../measurements")
    try:
        before = files_in(storage)
        result = cli(env, "delete", "../measurements", "--yes")
        assert result.exit_code == 1 and "is not a valid identifier" in result.output
        assert files_in(storage) == before
    finally:
        store.client.delete(index=store.alias("Measurement"), id="../measurements", refresh=True)


def test_delete_dry_run_lists_only_the_measurements_own_files_and_removes_nothing(loaded):
    env, _, storage = loaded
    before = files_in(storage)
    result = cli(env, "delete", "example-continuous", "--dry-run", "--json")
    assert result.exit_code == 0, result.output
    plan = json.loads(result.output)
    assert plan["dry_run"] is True
    assert plan["files"] == [k for k in before if k.startswith("measurements/example-continuous/")]
    assert len(plan["files"]) == 2
    assert files_in(storage) == before
    shown = cli(env, "delete", "example-continuous", "--dry-run")
    assert "measurements/example-continuous/Example_Continuous.imzML" in shown.output
    assert "dry run" in shown.output


def test_delete_is_refused_when_another_record_points_at_its_files(loaded):
    env, store, storage = loaded
    victim = store.get(S.Measurement, "example-continuous").doc
    _poison(store, "intruder", files=[to_document(f) for f in victim.files])
    try:
        before = files_in(storage)
        result = cli(env, "delete", "example-continuous", "--yes")
        assert result.exit_code == 1, result.output
        assert "would remove files of measurement(s) intruder" in result.output
        assert files_in(storage) == before
        assert store.exists(S.Measurement, "example-continuous")
    finally:
        store.client.delete(index=store.alias("Measurement"), id="intruder", refresh=True)


def _settings(env) -> Settings:
    return Settings.from_env(env)


@pytest.mark.parametrize("measurement_id", TRAVERSALS[:4])
def test_client_delete_of_a_traversal_id_is_refused(loaded, measurement_id):
    env, store, storage = loaded
    catalog = Catalog(_settings(env), store=store, storage=storage)
    before = files_in(storage)
    with pytest.raises(InvalidIdentifier):
        catalog.delete(measurement_id)
    assert files_in(storage) == before


def test_the_thrift_attack_is_refused_at_registration_and_at_delete(loaded):
    """A technician registers `../measurements` over Thrift; an admin deletes it by the CLI."""
    env, store, storage = loaded
    before = files_in(storage)
    technician = User("tess", Role.TECHNICIAN)
    with running_server(store, Authenticator("token", tokens={"t": technician}), storage) as server:
        client = make_client(S.MetadataService, server.host, server.port, timeout=30_000)
        try:
            client.login("t")
            crafted = store.get(S.Measurement, "example-continuous").doc
            crafted.id, crafted.files, crafted.facts = "../measurements", None, None
            crafted.status = S.MeasurementStatus.UPLOADED
            with pytest.raises(S.InvalidDocument) as raised:
                client.createMeasurement(crafted)
            assert raised.value.field == "Measurement.id"
        finally:
            client.close()
    assert not store.exists(S.Measurement, "../measurements")
    assert cli(env, "delete", "../measurements", "--yes").exit_code == 1
    assert files_in(storage) == before


def test_the_client_takes_no_claimed_identity_in_token_mode(loaded, tmp_path):
    env, store, storage = loaded
    tokens = tmp_path / "tokens.yaml"
    TokensFile(tokens).add("tess", "technician")
    settings = _settings(env).with_overrides(auth_mode="token", tokens_file=tokens)
    with pytest.raises(Unauthenticated, match="not a way to sign in"):
        Catalog(settings, user=User("eve", Role.ADMIN), store=store, storage=storage)


def test_the_client_in_local_mode_never_raises_its_role_by_a_claim(loaded):
    env, store, storage = loaded
    settings = _settings(env).with_overrides(local_role="technician")
    with pytest.raises(Unauthenticated, match="may not act with the admin role"):
        Catalog(settings, user=User("eve", Role.ADMIN), store=store, storage=storage)


def test_the_deletion_refusal_names_the_other_owner_in_the_client(loaded):
    env, store, storage = loaded
    victim = store.get(S.Measurement, "example-processed").doc
    _poison(store, "squatter", files=[to_document(f) for f in victim.files])
    try:
        catalog = Catalog(_settings(env), store=store, storage=storage)
        with pytest.raises(DeletionRefused, match="squatter"):
            catalog.delete("example-processed")
        assert store.exists(S.Measurement, "example-processed")
    finally:
        store.client.delete(index=store.alias("Measurement"), id="squatter", refresh=True)


def test_params_save_refuses_another_author(loaded, tmp_path):
    env, store, _ = loaded
    values = tmp_path / "values.yaml"
    values.write_text("peak_picking: {snr_threshold: 4}\n", encoding="utf-8")
    local = {**env, "EM2Q_LOCAL_USER": "sam", "EM2Q_LOCAL_ROLE": "scientist"}
    result = cli(local, "params", "save", "by-ada", str(values), "--author", "ada")
    assert result.exit_code == 4, result.output
    assert "may not save a parameter set as 'ada'" in result.output
    assert store.parameter_sets("by-ada") == []
    mine = cli(local, "params", "save", "by-sam", str(values), "--author", "sam", "--json")
    assert json.loads(mine.output)["author"] == "sam"


def test_upload_with_a_file_name_outside_the_grammar_is_refused(loaded, tmp_path):
    env, _, storage = loaded
    from em2q.dev import EXAMPLES_DIR

    folder = tmp_path / "odd"
    folder.mkdir()
    for suffix in (".imzML", ".ibd"):
        target = folder / f"a..b{suffix}"
        target.write_bytes((EXAMPLES_DIR / f"Example_Continuous{suffix}").read_bytes())
    setup = Path(__file__).resolve().parents[2] / "examples" / "setup.yaml"
    before = files_in(storage)
    result = cli(env, "upload", str(folder / "a..b.imzML"), "--setup", str(setup))
    assert result.exit_code == 1, result.output
    assert "a..b.imzML" in result.output and "not a valid identifier" in result.output
    assert files_in(storage) == before
