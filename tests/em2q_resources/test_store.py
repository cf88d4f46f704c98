"""MetadataStore against a real single-node Elasticsearch (started by tests/conftest.py)."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from em2q_resources.metadata import (
    AlreadyExists,
    DocumentNotFound,
    ImmutableDocument,
    MetadataStore,
    SchemaViolation,
    StoreUnavailable,
    VersionConflict,
    load_schema,
)
from em2q_resources.metadata import schema as sch
from em2q_resources.metadata.synthetic import measurement
from em2q_resources.parameter_sets import InvalidParameterSet, values_from_documents

S = load_schema()


def one_of_each_entity():
    """A fully populated instance of every indexed entity."""
    return [
        S.Project(id="p-1", title="Mouse brain atlas", description="lipids", owner="Ada", created_at="2026-01-02T03:04:05.678Z"),
        S.Study(id="st-1", project_id="p-1", title="Coronal sections", created_at="2026-01-02T00:00:00Z"),
        S.Sample(id="s-1", study_id="st-1", organism="Mus musculus", organ="brain", condition=S.SampleCondition.KNOCKOUT, condition_detail="Apoe-/-", preparation=S.SamplePreparation.FRESH_FROZEN, matrix="DHB", matrix_application=S.MatrixApplication.SUBLIMATION, section_thickness_um=10.5),
        S.Instrument(id="i-1", model="Q Exactive HF", vendor="Thermo", analyzer=S.Analyzer.ORBITRAP, source=S.IonisationSource.MALDI, serial_number="SN-0001"),
        measurement(S, 1, status_reason="ok", updated_at="2026-03-01T10:00:00.123Z"),
        S.SpectraPartition(id="m-0000001/0of8", measurement_id="m-0000001", chunk_index=0, chunk_count=8, first_spectrum=0, stop_spectrum=1250, storage_uri="s3://b/chunks/0", created_at="2026-03-01T10:00:00Z"),
        S.ParameterSet(id="lipids@v1", name="lipids", version=1, author="Ada", created_at="2026-03-01T10:00:00Z", comment="first", values=[S.ParameterValue(step="peak_picking", name="snr_threshold", number=3.0), S.ParameterValue(step="smoothing", name="method", text="savgol"), S.ParameterValue(step="ion_images", name="mz", numbers=[100.5, 200.25])], content_hash="ab" * 32),
        S.WorkflowRun(id="r-1", engine=S.RunEngine.DAGSTER, run_id="abc", workflow="qc_report", measurement_id="m-0000001", partition="m-0000001", parameter_set_id="default@v1", parameter_set_hash="ab" * 32, code_version="0.1.0", inputs=[S.ResultLocation(name="raw", uri="s3://b/raw")], outputs=[S.ResultLocation(name="qc", uri="s3://b/qc.json")], status=S.RunStatus.SUCCEEDED, started_at="2026-03-01T10:00:00Z", finished_at="2026-03-01T10:01:00Z", duration_s=60.25, error=None),
    ]  # fmt: skip


def test_every_entity_round_trips_through_elasticsearch_unchanged(metadata_store):
    for original in one_of_each_entity():
        if type(original).__name__ == "ParameterSet":
            metadata_store.create(original)
        else:
            metadata_store.create(original)
        back = metadata_store.get(type(original), original.id).doc
        assert back == original, type(original).__name__
        source = metadata_store.client.get(
            index=metadata_store.alias(type(original)), id=original.id
        )["_source"]
        assert source == sch.to_document(original)


def test_ensure_indices_is_idempotent_and_uses_versioned_indices_behind_aliases(metadata_store):
    first = metadata_store.ensure_indices()
    second = metadata_store.ensure_indices()
    assert first == second
    alias = metadata_store.alias("Measurement")
    assert first[alias] == f"{alias}-v{S.entity('Measurement').mapping_hash}"


def test_mapping_change_is_reindexed_and_the_alias_swapped(metadata_store, tmp_path):
    metadata_store.bulk_put([measurement(S, i) for i in range(25)], refresh=True)
    idl = sch.IDL_PATH.read_text(encoding="utf-8").replace(
        "  16: optional list<string> tags,\n",
        "  16: optional list<string> tags,\n  99: optional double ambient_humidity_percent,\n",
    )
    (tmp_path / "em2q.thrift").write_text(idl, encoding="utf-8")
    changed = load_schema(tmp_path / "em2q.thrift", module_name="em2q_migrated_thrift")
    migrated = MetadataStore(metadata_store.client, metadata_store.prefix, changed)
    indices = migrated.ensure_indices()
    alias = migrated.alias("Measurement")
    assert indices[alias].endswith(changed.entity("Measurement").mapping_hash)
    assert list(metadata_store.client.indices.get_alias(name=alias).body) == [indices[alias]]
    assert metadata_store.client.count(index=alias)["count"] == 25
    doc = migrated.get(changed.Measurement, "m-0000003").doc
    doc.ambient_humidity_percent = 41.5
    migrated.update(doc, None)
    assert migrated.get(changed.Measurement, "m-0000003").doc.ambient_humidity_percent == 41.5


def test_creating_an_existing_id_is_refused(metadata_store):
    metadata_store.create(measurement(S, 1))
    with pytest.raises(AlreadyExists, match="m-0000001"):
        metadata_store.create(measurement(S, 1))


def test_missing_document_is_reported_by_entity_and_id(metadata_store):
    with pytest.raises(DocumentNotFound, match="Measurement 'nope' not found"):
        metadata_store.get(S.Measurement, "nope")


def test_two_writers_never_silently_overwrite_each_other(metadata_store):
    metadata_store.create(measurement(S, 1))
    alice = metadata_store.get(S.Measurement, "m-0000001")
    bob = metadata_store.get(S.Measurement, "m-0000001")
    alice.doc.title = "Alice's title"
    metadata_store.update(alice.doc, alice)
    bob.doc.title = "Bob's title"
    with pytest.raises(VersionConflict, match="read it again"):
        metadata_store.update(bob.doc, bob)
    assert metadata_store.get(S.Measurement, "m-0000001").doc.title == "Alice's title"


def test_modify_retries_read_modify_write_until_it_applies(metadata_store):
    metadata_store.create(measurement(S, 1, tags=[]))
    calls = []

    def add_tag(doc):
        calls.append(1)
        if len(calls) == 1:  # someone else writes between our read and our write
            other = metadata_store.get(S.Measurement, "m-0000001")
            other.doc.tags = ["theirs"]
            metadata_store.update(other.doc, other)
        doc.tags = [*(doc.tags or []), "ours"]

    metadata_store.modify(S.Measurement, "m-0000001", add_tag)
    assert len(calls) == 2
    assert metadata_store.get(S.Measurement, "m-0000001").doc.tags == ["theirs", "ours"]


def test_invalid_document_is_refused_with_the_field_named(metadata_store):
    broken = measurement(S, 1)
    broken.settings.polarity = 42
    with pytest.raises(SchemaViolation, match=r"Measurement\.settings\.polarity"):
        metadata_store.create(broken)
    assert not metadata_store.exists(S.Measurement, "m-0000001")


def test_bulk_with_one_invalid_document_writes_nothing(metadata_store):
    docs = [measurement(S, i) for i in range(50)]
    docs[37].operator = None
    with pytest.raises(SchemaViolation, match=r"\[37\] Measurement\.operator.*nothing was written"):
        metadata_store.bulk_put(docs, refresh=True)
    metadata_store.refresh()
    assert metadata_store.client.count(index=metadata_store.alias("Measurement"))["count"] == 0


def test_bulk_reports_exactly_which_documents_elasticsearch_refused(metadata_store):
    metadata_store.bulk_put([measurement(S, i) for i in (3, 5)])
    result = metadata_store.bulk_put([measurement(S, i) for i in range(8)], create_only=True)
    assert result.succeeded == 6
    assert sorted(f.doc_id for f in result.failed) == ["m-0000003", "m-0000005"]
    assert all(f.status == 409 for f in result.failed)


@pytest.fixture
def catalog(metadata_store):
    rng = random.Random(42)
    docs = [measurement(S, i, rng) for i in range(600)]
    result = metadata_store.bulk_put(docs, refresh=True)
    assert result.ok
    return metadata_store, docs


def test_full_text_search_finds_words_of_titles_and_descriptions(catalog):
    store, docs = catalog
    page = store.search(S.Measurement, text="kidney lipid", page_size=1000)
    expected = {
        d.id
        for d in docs
        if all(
            w
            in f"{d.title} {d.description} {d.operator} {d.sample.organism} {d.sample.organ} {d.sample.matrix}".lower()
            for w in ("kidney", "lipid")
        )
    }
    assert {m.id for m in page.hits} == expected
    assert page.total == len(expected) > 0


def test_filters_on_schema_fields_combine(catalog):
    store, docs = catalog
    page = store.search(
        S.Measurement,
        filters={
            "settings.polarity": "POSITIVE",
            "settings.analyzer": ["ORBITRAP", "FTICR"],
            "sample.organism": "mus MUSCULUS",  # normalised keyword: case does not matter
            "settings.resolving_power": {"gte": 100_000},
            "acquired_at": {"gte": "2025-06-01", "lt": "2026-06-01"},
        },
        page_size=1000,
    )
    expected = {
        d.id
        for d in docs
        if d.settings.polarity == S.Polarity.POSITIVE
        and d.settings.analyzer in (S.Analyzer.ORBITRAP, S.Analyzer.FTICR)
        and d.sample.organism == "Mus musculus"
        and d.settings.resolving_power >= 100_000
        and "2025-06-01" <= d.acquired_at < "2026-06-01"
    }
    assert {m.id for m in page.hits} == expected
    assert expected


def test_nested_filters_match_within_one_file(catalog):
    store, docs = catalog
    page = store.search(
        S.Measurement,
        filters={"files.role": "IBD", "files.size_bytes": {"gte": 5 * 10**9}},
        page_size=1000,
    )
    expected = {
        d.id
        for d in docs
        if any(f.role == S.FileRole.IBD and f.size_bytes >= 5 * 10**9 for f in d.files)
    }
    assert {m.id for m in page.hits} == expected


def test_facets_count_every_value_of_the_matching_documents(catalog):
    store, docs = catalog
    page = store.search(
        S.Measurement,
        filters={"settings.polarity": "NEGATIVE"},
        facets=["settings.analyzer", "sample.organism", "status", "files.role"],
        page_size=1,
    )
    negative = [d for d in docs if d.settings.polarity == S.Polarity.NEGATIVE]
    analyzers = Counter(S.Analyzer._VALUES_TO_NAMES[d.settings.analyzer] for d in negative)
    organisms = Counter(d.sample.organism.lower() for d in negative)
    assert dict(page.facets["settings.analyzer"]) == dict(analyzers)
    assert dict(page.facets["sample.organism"]) == dict(organisms)
    assert sum(c for _, c in page.facets["status"]) == len(negative)
    assert dict(page.facets["files.role"]) == {"IMZML": len(negative), "IBD": len(negative)}


def test_sorting_by_a_schema_field(catalog):
    store, docs = catalog
    page = store.search(S.Measurement, sort=[("settings.resolving_power", True)], page_size=10)
    top = sorted(docs, key=lambda d: -d.settings.resolving_power)[:10]
    assert [m.id for m in page.hits] == [d.id for d in top]


def test_bad_filter_names_the_field(catalog):
    store, _ = catalog
    with pytest.raises(SchemaViolation, match=r"settings\.polarity.*unknown Polarity value 'POS'"):
        store.search(S.Measurement, filters={"settings.polarity": "POS"})
    with pytest.raises(SchemaViolation, match="unknown field 'colour'"):
        store.search(S.Measurement, filters={"sample.colour": "blue"})
    with pytest.raises(SchemaViolation, match="expected a number"):
        store.search(S.Measurement, filters={"settings.resolving_power": {"gte": "high"}})


def test_paging_goes_beyond_ten_thousand_hits_without_gaps_or_repeats(metadata_store):
    rng = random.Random(1)
    base = measurement(S, 0, rng)
    docs = []
    for i in range(10_250):
        doc = sch.from_document(S.Measurement, sch.to_document(base))
        doc.id = f"m-{i:07d}"
        doc.settings.resolving_power = float(rng.randrange(1000))  # many ties: id breaks them
        docs.append(doc)
    assert metadata_store.bulk_put(docs, chunk_size=2000, refresh=True).ok
    seen, token, pages = [], None, 0
    while True:
        page = metadata_store.search(
            S.Measurement, sort=["settings.resolving_power"], page_size=2000, page_token=token
        )
        seen += [m.id for m in page.hits]
        pages += 1
        token = page.next_page_token
        if token is None:
            break
    assert page.total == 10_250
    assert len(seen) == len(set(seen)) == 10_250
    assert pages == 6
    assert sum(1 for _ in metadata_store.scan(S.Measurement, batch_size=3000)) == 10_250


VALUES = {
    "smoothing": {"method": "savgol", "window_points": 7},
    "peak_picking": {"snr_threshold": 3, "noise": "mad"},
    "ion_images": {"mz": [100.5, 200.25]},
}


def test_same_parameter_values_give_the_same_id_new_values_a_new_version(metadata_store):
    first = metadata_store.save_parameter_set("lipids", VALUES, author="ada", comment="start")
    again = metadata_store.save_parameter_set("lipids", {**VALUES}, author="bob", comment="again")
    assert (
        (again.id, again.author, again.version) == (first.id, "ada", 1) == ("lipids@v1", "ada", 1)
    )
    changed = {**VALUES, "peak_picking": {"snr_threshold": 5, "noise": "mad"}}
    second = metadata_store.save_parameter_set("lipids", changed, author="ada")
    assert (second.id, second.version) == ("lipids@v2", 2)
    assert second.content_hash != first.content_hash
    assert values_from_documents(metadata_store.get_parameter_set("lipids@v1").values) == {
        "smoothing": {"method": "savgol", "window_points": 7.0},
        "peak_picking": {"snr_threshold": 3.0, "noise": "mad"},
        "ion_images": {"mz": [100.5, 200.25]},
    }
    assert metadata_store.get_parameter_set("lipids").id == "lipids@v2"


def test_saved_parameter_sets_are_never_mutated(metadata_store):
    saved = metadata_store.save_parameter_set("lipids", VALUES, author="ada")
    saved.comment = "sneaky edit"
    with pytest.raises(ImmutableDocument):
        metadata_store.update(saved, None)
    with pytest.raises(ImmutableDocument):
        metadata_store.delete(S.ParameterSet, saved.id)
    assert metadata_store.get_parameter_set(saved.id).comment is None


def test_parameter_sets_are_found_by_a_parameter_value(metadata_store):
    metadata_store.save_parameter_set(
        "strict", {"peak_picking": {"snr_threshold": 10}, "qc": {"min_median_snr": 2}}, author="a"
    )
    metadata_store.save_parameter_set(
        "loose", {"peak_picking": {"snr_threshold": 2}, "qc": {"min_median_snr": 20}}, author="a"
    )
    metadata_store.refresh()
    page = metadata_store.search(
        S.ParameterSet,
        filters={
            "values.step": "peak_picking",
            "values.name": "snr_threshold",
            "values.number": {"gte": 5},
        },
    )
    assert [p.name for p in page.hits] == ["strict"]  # 'loose' has a 20, but not for snr_threshold


def test_bad_parameter_set_input_names_the_problem(metadata_store):
    with pytest.raises(SchemaViolation, match="not a valid name"):
        metadata_store.save_parameter_set("no spaces", VALUES, author="a")
    with pytest.raises(InvalidParameterSet, match="expected a number") as raised:
        metadata_store.save_parameter_set(
            "x", {"peak_picking": {"snr_threshold": {"a": 1}}}, author="a"
        )
    assert raised.value.field == "peak_picking.snr_threshold"


def test_unreachable_elasticsearch_fails_clearly_after_bounded_retries():
    store = MetadataStore.connect(
        "http://127.0.0.1:9", attempts=3, backoff_s=0.05, request_timeout_s=2
    )
    # bounded: the error counts the attempts made, exactly the 3 configured (no clock needed)
    with pytest.raises(StoreUnavailable, match=r"127\.0\.0\.1:9 did not answer after 3 attempts"):
        store.get(S.Measurement, "m-1")


def test_a_frozen_cluster_is_given_up_after_one_timeout_within_the_deadline():
    """A listener that accepts and never answers (what a SIGSTOPped node looks like): with a
    deadline no retry starts after the first request timed out."""
    import socket

    with socket.socket() as frozen:
        frozen.bind(("127.0.0.1", 0))
        frozen.listen(8)
        url = f"http://127.0.0.1:{frozen.getsockname()[1]}"
        store = MetadataStore.connect(url, attempts=4, request_timeout_s=0.5, deadline_s=0.5)
        with pytest.raises(StoreUnavailable, match="did not answer after 1 attempt over"):
            store.get(S.Measurement, "m-1")
