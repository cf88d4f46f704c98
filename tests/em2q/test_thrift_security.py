"""The Thrift MetadataService refuses crafted ids, foreign file URIs, other people's records,
claimed authors and run records from anyone but the platform (em2q_resources.policy)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from thriftpy2.rpc import make_client

from em2q_resources.auth import Authenticator, Role, User
from em2q_resources.metadata import MetadataStore, load_schema
from em2q_resources.metadata.synthetic import measurement
from tests.fixtures.metadata_service import running_server

S = load_schema()
TOKENS = {
    "tech-token": User("tess", Role.TECHNICIAN),
    "tech2-token": User("theo", Role.TECHNICIAN),
    "sci-token": User("sam", Role.SCIENTIST),
    "admin-token": User("ada", Role.ADMIN),
}
#: ids that would reach outside a measurement's own storage prefix, in the forms attackers use
TRAVERSAL_IDS = [
    "../measurements",
    "..",
    "a/../../measurements",
    "/etc",
    "%2e%2e",
    "\u2024\u2024",  # ONE DOT LEADER ×2
    "\uff0e\uff0e",  # FULLWIDTH FULL STOP ×2
    "m\x00",
    "a\\b",
    "measurements/x",
]


@pytest.fixture(scope="module")
def store(elasticsearch_url: str) -> Iterator[MetadataStore]:
    store = MetadataStore.connect(elasticsearch_url, index_prefix=f"test-{uuid.uuid4().hex[:8]}")
    store.ensure_indices()
    yield store
    store.drop_all()


@pytest.fixture(scope="module")
def server(store: MetadataStore):
    with running_server(store, Authenticator("token", tokens=TOKENS)) as server:
        yield server


@pytest.fixture
def connect(server):
    clients = []

    def open_as(token: str):
        client = make_client(S.MetadataService, server.host, server.port, timeout=30_000)
        clients.append(client)
        client.login(token)
        return client

    yield open_as
    for client in clients:
        client.close()


def _new(index: int, **overrides):
    """A measurement as a technician registers it: UPLOADED, no files or facts of their own."""
    fields = {"status": S.MeasurementStatus.UPLOADED, "files": None, "facts": None, **overrides}
    return measurement(S, index, **fields)


@pytest.mark.parametrize("bad_id", TRAVERSAL_IDS)
def test_a_traversal_id_is_refused_naming_the_id_and_nothing_is_stored(connect, store, bad_id):
    store.refresh()
    before = store.search(S.Measurement, page_size=1).total
    with pytest.raises(S.InvalidDocument) as raised:
        connect("tech-token").createMeasurement(_new(800, id=bad_id))
    assert raised.value.field == "Measurement.id"
    store.refresh()
    assert store.search(S.Measurement, page_size=1).total == before


def test_the_refusal_of_an_id_states_the_grammar(connect):
    with pytest.raises(S.InvalidDocument) as raised:
        connect("tech-token").createMeasurement(_new(801, id="../measurements"))
    assert raised.value.message.startswith("'../measurements' is not a valid identifier: use 1-128")


@pytest.mark.parametrize(
    "uri",
    [
        "http://127.0.0.1:18999/internal/admin.imzML",
        "file:///etc/passwd",
        "s3://em2q/measurements/m-0000999/data.imzML",  # another measurement's folder
        "s3://em2q/measurements/m-0000810/../m-0000999/data.imzML",
        "s3://other-bucket/measurements/m-0000810/data.imzML",
    ],
)
def test_file_uris_outside_the_measurements_own_storage_are_refused(connect, store, uri):
    files = [
        S.StoredFile(
            role=S.FileRole.IMZML, uri=uri, size_bytes=1, checksum_type=S.ChecksumType.SHA256,
            checksum="0" * 64,
        )
    ]  # fmt: skip
    with pytest.raises(S.InvalidDocument) as raised:  # even the platform may not store them
        connect("admin-token").createMeasurement(measurement(S, 810, files=files))
    assert raised.value.field == "Measurement.files[0].uri"
    assert not store.exists(S.Measurement, "m-0000810")


def test_a_technician_may_not_claim_a_status_files_or_facts(connect, store):
    technician = connect("tech-token")
    with pytest.raises(S.Forbidden, match="only as UPLOADED"):
        technician.createMeasurement(_new(820, status=S.MeasurementStatus.READY))
    with pytest.raises(S.Forbidden, match="Measurement.files"):
        technician.createMeasurement(_new(820, files=measurement(S, 820).files))
    assert not store.exists(S.Measurement, "m-0000820")


def test_the_owner_is_who_is_signed_in_not_who_the_record_names(connect, store):
    created = connect("tech-token").createMeasurement(_new(830, uploaded_by="ada"))
    assert created.uploaded_by == "tess"
    assert store.get(S.Measurement, "m-0000830").doc.uploaded_by == "tess"


def test_a_technician_edits_only_what_they_uploaded(connect, store):
    connect("tech-token").createMeasurement(_new(840))
    stored = connect("tech2-token").getMeasurement("m-0000840")
    stored.measurement.title = "taken over"
    with pytest.raises(S.Forbidden) as raised:
        connect("tech2-token").updateMeasurement(stored.measurement, stored.version)
    assert "uploaded by tess" in raised.value.message
    assert store.get(S.Measurement, "m-0000840").doc.title != "taken over"
    owner = connect("tech-token")
    mine = owner.getMeasurement("m-0000840")
    mine.measurement.title = "renamed by its owner"
    assert owner.updateMeasurement(mine.measurement, mine.version).measurement.title == (
        "renamed by its owner"
    )


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("status", S.MeasurementStatus.READY),
        ("status_reason", "looks fine"),
        ("uploaded_by", "ada"),
        ("files", measurement(S, 850).files),
    ],
)
def test_status_files_and_owner_change_only_through_the_platform(connect, store, field, value):
    if not store.exists(S.Measurement, "m-0000850"):
        connect("tech-token").createMeasurement(_new(850))
    for token in ("tech-token", "sci-token"):
        client = connect(token)
        stored = client.getMeasurement("m-0000850")
        setattr(stored.measurement, field, value)
        with pytest.raises(S.Forbidden, match=f"Measurement.{field}"):
            client.updateMeasurement(stored.measurement, stored.version)
    assert store.get(S.Measurement, "m-0000850").doc.status == S.MeasurementStatus.UPLOADED


def _run(measurement_id: str) -> object:
    return S.WorkflowRun(
        id=f"r1:qc_report:{measurement_id}", engine=S.RunEngine.DAGSTER, run_id="r1",
        workflow="qc_report", measurement_id=measurement_id, status=S.RunStatus.SUCCEEDED,
    )  # fmt: skip


@pytest.mark.parametrize("token", ["tech-token", "sci-token"])
def test_workflow_runs_are_recorded_by_the_platform_only(connect, store, token):
    with pytest.raises(S.Forbidden, match="recorded by the platform"):
        connect(token).recordWorkflowRun(_run("m-0000860"))
    assert connect("admin-token").recordWorkflowRun(_run("m-0000860")).run_id == "r1"


def test_saved_parameter_sets_pass_the_processing_parameter_validation(connect, store):
    values = [S.ParameterValue(step="peak_picking", name="snr_threshold", number=-3.0)]
    with pytest.raises(S.InvalidDocument) as raised:
        connect("sci-token").saveParameterSet("negative-snr", values, "sam", None)
    assert "snr_threshold" in raised.value.message
    unknown = [S.ParameterValue(step="peak_picking", name="no_such_knob", number=1.0)]
    with pytest.raises(S.InvalidDocument, match="no_such_knob"):
        connect("sci-token").saveParameterSet("unknown-knob", unknown, "sam", None)
    assert store.parameter_sets("negative-snr") == store.parameter_sets("unknown-knob") == []


def test_the_author_of_a_saved_set_is_who_is_signed_in(connect):
    values = [S.ParameterValue(step="peak_picking", name="snr_threshold", number=4.0)]
    saved = connect("sci-token").saveParameterSet("claimed", values, "ada", "not mine")
    assert saved.author == "sam"


@pytest.mark.parametrize(
    ("title", "problem"),
    [("a\x00b", "NUL"), ("bell\x07", "control character"), ("esc\x1b[31m", "control character")],
)
def test_titles_with_control_characters_are_never_stored(connect, store, title, problem):
    with pytest.raises(S.InvalidDocument) as raised:
        connect("tech-token").createMeasurement(_new(870, title=title))
    assert raised.value.field == "Measurement.title" and problem in raised.value.message
    assert not store.exists(S.Measurement, "m-0000870")


def test_a_mass_range_with_min_above_max_is_refused(connect, store):
    settings = measurement(S, 880).settings
    settings.mass_range = S.MassRange(min_mz=900.0, max_mz=-5.0)
    with pytest.raises(S.InvalidDocument) as raised:
        connect("tech-token").createMeasurement(_new(880, settings=settings))
    assert raised.value.field.startswith("Measurement.settings.mass_range")
    assert not store.exists(S.Measurement, "m-0000880")
