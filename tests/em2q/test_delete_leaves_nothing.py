"""Deleting a measurement leaves nothing behind in the catalog: its m/z search documents and
QC trend records go with it, and a study that had it as a member shows it as missing."""

from __future__ import annotations

import json
import uuid

import numpy as np
import pytest
from click.testing import CliRunner

from em2q.cli import main
from em2q_resources import studies
from em2q_resources.connections import set_up_metadata_store
from em2q_resources.metadata import MetadataStore, load_schema
from em2q_resources.metadata.peak_index import PeakFeatures, index_peak_table
from em2q_resources.metadata.qc_records import record_qc
from em2q_resources.metadata.synthetic import measurement

S = load_schema()
MZ = 760.5851
GONE, KEPT = "m-0000001", "m-0000002"


def cli(env, *args):
    return CliRunner().invoke(main, list(args), env=env, catch_exceptions=False)


@pytest.fixture(scope="module")
def deleted(elasticsearch_url, tmp_path_factory):
    """Two measurements with a peak at MZ, QC records and one study; GONE deleted by the CLI."""
    prefix = f"del-{uuid.uuid4().hex[:8]}"
    store = MetadataStore.connect(elasticsearch_url, index_prefix=prefix)
    set_up_metadata_store(store)
    root = tmp_path_factory.mktemp("delete")
    env = {
        "EM2Q_ELASTICSEARCH_URL": elasticsearch_url,
        "EM2Q_INDEX_PREFIX": prefix,
        "EM2Q_CACHE_DIR": str(root / "cache"),
        "EM2Q_STORAGE": str(root / "storage"),
    }
    for index, condition in ((1, "HEALTHY"), (2, "DISEASED")):
        doc = measurement(S, index)
        doc.sample.condition = S.SampleCondition._NAMES_TO_VALUES[condition]
        store.create(doc, refresh=True)
        table = PeakFeatures(
            np.array([MZ, 500.0]), np.full(2, 0.5), np.array([20.0, 5.0]), 10, 100.0
        )
        index_peak_table(store, doc.id, "default@v1", "ab" * 32, table, refresh=True)
        record_qc(store, doc, "default@v1", {"median_snr": 12.0}, refresh=True)
    studies.create(store, "st-del", title="t", design=["sample.condition"], members=[GONE, KEPT])
    assert {h["id"] for h in search_mz(env)["hits"]} == {GONE, KEPT}  # both found before
    result = cli(env, "delete", GONE, "--yes", "--json")
    assert result.exit_code == 0, result.output
    yield env, store, json.loads(result.output)
    store.drop_all()


def search_mz(env) -> dict:
    result = cli(env, "search", "--mz", str(MZ), "--ppm", "3", "--json")
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


def test_mz_search_no_longer_finds_a_deleted_measurements_peak(deleted):
    env, _, removed = deleted
    assert [h["id"] for h in search_mz(env)["hits"]] == [KEPT]
    assert removed["peak_features"] == 2


def test_a_deleted_measurements_peak_documents_and_qc_records_are_gone(deleted):
    _, store, _ = deleted
    store.refresh()
    for entity in (S.PeakFeature, S.QcRecord):
        assert store.search(entity, filters={"measurement_id": GONE}).total == 0
        assert store.search(entity, filters={"measurement_id": KEPT}).total > 0


def test_a_study_shows_a_deleted_member_as_missing(deleted):
    env, _, _ = deleted
    result = cli(env, "study", "show", "st-del", "--json")
    assert result.exit_code == 0, result.output
    shown = json.loads(result.output)
    assert shown["missing_members"] == [GONE]
    assert shown["groups"] == {KEPT: "DISEASED"}
    text = cli(env, "study", "show", "st-del").output
    assert f"{GONE}  (member missing" in text
