"""The Thrift MetadataService over a real thriftpy2 client, on a real Elasticsearch."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator

import pytest
from thriftpy2.rpc import make_client
from thriftpy2.thrift import TApplicationException
from thriftpy2.transport import TTransportException

from em2q.thrift_service import make_server
from em2q_resources.metadata import MetadataStore, SchemaViolation, load_schema
from em2q_resources.metadata.synthetic import measurement
from tests.fixtures.metadata_service import running_server

S = load_schema()


def connect(server):
    return make_client(S.MetadataService, server.host, server.port, timeout=30_000)


@pytest.fixture(scope="module")
def store(elasticsearch_url: str) -> Iterator[MetadataStore]:
    """One store for the module (creating indices takes seconds); tests use distinct ids."""
    store = MetadataStore.connect(elasticsearch_url, index_prefix=f"test-{uuid.uuid4().hex[:8]}")
    store.ensure_indices()
    yield store
    store.drop_all()


@pytest.fixture(scope="module")
def server(store: MetadataStore):
    with running_server(store) as server:
        yield server


@pytest.fixture
def client(server) -> Iterator:
    client = connect(server)
    yield client
    client.close()


def test_created_measurement_reads_back_equal_with_its_version(client, store):
    original = measurement(S, 1)
    assert client.createMeasurement(original) == original
    stored = client.getMeasurement(original.id)
    assert stored.measurement == original
    direct = store.get(S.Measurement, original.id)
    assert (stored.version.seq_no, stored.version.primary_term) == (
        direct.seq_no,
        direct.primary_term,
    )


def test_update_with_stale_version_is_refused_with_version_conflict(client):
    client.createMeasurement(measurement(S, 2))
    first = client.getMeasurement("m-0000002")
    changed = first.measurement
    changed.status = S.MeasurementStatus.REGISTERED
    updated = client.updateMeasurement(changed, first.version)
    assert updated.version.seq_no > first.version.seq_no

    changed.status = S.MeasurementStatus.FAILED  # a second writer still holding the old version
    with pytest.raises(S.VersionConflict) as raised:
        client.updateMeasurement(changed, first.version)
    assert raised.value.id == "m-0000002"
    assert client.getMeasurement("m-0000002").measurement.status == S.MeasurementStatus.REGISTERED


def test_update_without_version_is_refused(client):
    client.createMeasurement(measurement(S, 3))
    with pytest.raises(S.InvalidDocument) as raised:
        client.updateMeasurement(measurement(S, 3), None)
    assert raised.value.field == "expected"


def test_creating_an_existing_id_is_a_version_conflict(client):
    client.createMeasurement(measurement(S, 4))
    with pytest.raises(S.VersionConflict) as raised:
        client.createMeasurement(measurement(S, 4))
    assert raised.value.id == "m-0000004"
    assert "already exists" in raised.value.message


def test_missing_measurement_is_not_found(client):
    with pytest.raises(S.NotFound) as raised:
        client.getMeasurement("m-missing")
    assert (raised.value.entity, raised.value.id) == ("Measurement", "m-missing")
    with pytest.raises(S.NotFound):
        client.deleteMeasurement("m-missing")


def test_deleted_measurement_is_gone(client):
    client.createMeasurement(measurement(S, 5))
    client.deleteMeasurement("m-0000005")
    with pytest.raises(S.NotFound):
        client.getMeasurement("m-0000005")


@pytest.mark.parametrize(
    ("change", "field"),
    [
        (lambda m: setattr(m.settings, "polarity", 42), "Measurement.settings.polarity"),
        (lambda m: setattr(m, "title", None), "Measurement.title"),
        (lambda m: setattr(m.files[1], "size_bytes", None), "Measurement.files[1].size_bytes"),
    ],
)
def test_invalid_measurement_is_refused_naming_the_field(client, store, change, field):
    bad = measurement(S, 6)
    change(bad)
    with pytest.raises(S.InvalidDocument) as raised:
        client.createMeasurement(bad)
    assert raised.value.field == field
    assert not store.exists(S.Measurement, "m-0000006")


def test_search_applies_text_filters_facets_sort_and_paging(client, store):
    docs = [measurement(S, 1000 + i, project_id="p-search") for i in range(30)]
    assert store.bulk_put(docs, refresh=True).ok
    positive = [d for d in docs if d.settings.polarity == S.Polarity.POSITIVE]
    request = S.SearchRequest(
        filters=[
            S.Filter(field="project_id", terms=["p-search"]),
            S.Filter(field="settings.polarity", terms=["POSITIVE"]),
            S.Filter(field="settings.resolving_power", gte="0", lte="1e9"),
        ],
        facets=["settings.analyzer", "sample.organism"],
        sort=[S.SortField(field="id", descending=True)],
        page_size=5,
    )
    page = client.searchMeasurements(request)
    assert page.total == len(positive)
    assert [m.id for m in page.hits] == sorted((d.id for d in positive), reverse=True)[:5]
    assert sum(b.count for b in page.facets["settings.analyzer"]) == len(positive)
    assert {b.value for b in page.facets["sample.organism"]} == {
        d.sample.organism.lower() for d in positive
    }
    seen = [m.id for m in page.hits]
    while page.next_page_token:
        request.page_token = page.next_page_token
        page = client.searchMeasurements(request)
        seen += [m.id for m in page.hits]
    assert seen == sorted((d.id for d in positive), reverse=True)

    in_project = [S.Filter(field="project_id", terms=["p-search"])]
    kidney = client.searchMeasurements(
        S.SearchRequest(text="kidney", filters=in_project, page_size=50)
    )
    assert {m.id for m in kidney.hits} == {d.id for d in docs if d.sample.organ == "kidney"}


@pytest.mark.parametrize(
    ("request_", "field"),
    [
        (S.SearchRequest(filters=[S.Filter(field="settings.colour", terms=["red"])]), "settings.colour"),
        (S.SearchRequest(filters=[S.Filter(field="settings.polarity", terms=["UP"])]), "settings.polarity"),
        (S.SearchRequest(filters=[S.Filter(field="status")]), "filters[0]"),
        (S.SearchRequest(facets=["sample"]), "sample"),
        (S.SearchRequest(page_size=0), "page_size"),
    ],
)  # fmt: skip
def test_invalid_search_is_refused_naming_the_field(client, request_, field):
    with pytest.raises(S.InvalidDocument) as raised:
        client.searchMeasurements(request_)
    assert raised.value.field == field


def test_parameter_set_with_same_values_keeps_its_id_and_new_values_get_a_version(client):
    values = [
        S.ParameterValue(step="peak_picking", name="snr_threshold", number=3.0),
        S.ParameterValue(step="smoothing", name="method", text="savgol"),
        S.ParameterValue(step="ion_images", name="mz", numbers=[100.5, 200.25]),
    ]
    first = client.saveParameterSet("lipids", values, "Ada", "first try")
    again = client.saveParameterSet("lipids", list(reversed(values)), "Rosalind", None)
    assert (first.id, again.id) == ("lipids@v1", "lipids@v1")
    assert again == first

    values[0].number = 5.0
    second = client.saveParameterSet("lipids", values, "Ada", "stricter")
    assert second.id == "lipids@v2"
    assert [p.id for p in client.listParameterSets("lipids")] == ["lipids@v1", "lipids@v2"]
    assert client.getParameterSet("lipids@v1") == first
    assert client.getParameterSet("lipids") == second  # a name gives its newest version
    with pytest.raises(S.NotFound):
        client.getParameterSet("lipids@v9")


def test_parameter_value_with_two_kinds_of_value_is_refused(client):
    values = [S.ParameterValue(step="peaks", name="snr", number=3.0, text="three")]
    with pytest.raises(S.InvalidDocument) as raised:
        client.saveParameterSet("x", values, "Ada", None)
    assert raised.value.field == "values[0]"
    with pytest.raises(S.InvalidDocument) as raised:
        client.saveParameterSet("not a name!", [S.ParameterValue("a", "b", 1.0)], "Ada", None)
    assert raised.value.field == "ParameterSet.name"


@pytest.mark.parametrize(
    ("value", "field"),
    [
        (S.ParameterValue(step="peak_picking", name="snr", number=3.0), "values.peak_picking.snr"),
        (
            S.ParameterValue(step="smoothing", name="window_points", number=8.0),
            "values.smoothing.window_points",
        ),
        (
            S.ParameterValue(step="peak_picking", name="snr_threshold", text="high"),
            "values.peak_picking.snr_threshold",
        ),
        (S.ParameterValue(step="peaks", name="snr_threshold", number=3.0), "values.peaks"),
    ],
)
def test_parameter_set_no_step_can_use_is_refused_naming_the_value(client, value, field):
    name = f"unusable-{uuid.uuid4().hex[:6]}"
    with pytest.raises(S.InvalidDocument) as raised:
        client.saveParameterSet(name, [value], "Ada", None)
    assert raised.value.field == field
    assert raised.value.message.startswith(field.removeprefix("values.") + ": ")
    assert client.listParameterSets(name) == []  # nothing was stored


def test_recorded_workflow_runs_are_listed_per_measurement(client):
    def run(i: int, status):
        return S.WorkflowRun(
            id=f"r-{i}", engine=S.RunEngine.DAGSTER, run_id=f"dagster-{i}", workflow="qc_report",
            measurement_id="m-1" if i < 3 else "m-2", status=status,
            started_at=f"2026-03-01T10:0{i}:00Z",
        )  # fmt: skip

    for i in range(4):
        client.recordWorkflowRun(run(i, S.RunStatus.RUNNING))
    client.recordWorkflowRun(run(1, S.RunStatus.SUCCEEDED))  # recorded again as it moves on
    runs = client.workflowRunsOf("m-1")
    assert [(r.id, r.status) for r in runs] == [
        ("r-0", S.RunStatus.RUNNING),
        ("r-1", S.RunStatus.SUCCEEDED),
        ("r-2", S.RunStatus.RUNNING),
    ]
    with pytest.raises(S.InvalidDocument) as raised:
        client.recordWorkflowRun(S.WorkflowRun(id="r-9", engine=S.RunEngine.ARGO))
    assert raised.value.field == "WorkflowRun.run_id"


def test_unreachable_elasticsearch_is_store_unavailable():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    store = MetadataStore.connect(f"http://127.0.0.1:{closed_port}", attempts=2, backoff_s=0.01)
    with running_server(store) as server:
        client = connect(server)
        with pytest.raises(S.StoreUnavailable) as raised:
            client.getMeasurement("m-1")
        assert "did not answer after 2 attempts" in raised.value.message
        assert client.ping() == "em2q-metadata"  # the connection survives the error
        client.close()


def test_several_clients_are_served_at_once(server):
    first = connect(server)
    assert first.ping() == "em2q-metadata"
    answers = []
    second_thread = threading.Thread(target=lambda: answers.append(connect(server).ping()))
    second_thread.start()
    second_thread.join(timeout=5)  # a single-threaded server would still serve `first`
    assert answers == ["em2q-metadata"]
    first.close()


def test_close_stops_the_server_with_a_client_still_connected(store):
    """close() ends serve() although a client holds an idle connection: the serving thread
    returns, the idle connection is shut down by the server, new connections are refused."""
    server = make_server(store)
    thread = threading.Thread(target=server.serve, daemon=True)
    thread.start()
    idle = connect(server)
    assert idle.ping() == "em2q-metadata"
    server.close()
    thread.join(timeout=30)  # a liveness bound, not a speed figure: serve() must return
    assert not thread.is_alive()
    with pytest.raises(TTransportException):
        idle.ping()  # the server shut the idle connection down instead of waiting on it
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection((server.host, server.port), timeout=1)
    idle.close()


def test_metadata_serve_command_serves_until_terminated(elasticsearch_url, store, tmp_path):
    env = {
        **os.environ,
        "EM2Q_ELASTICSEARCH_URL": elasticsearch_url,
        "EM2Q_INDEX_PREFIX": store.prefix,  # indices exist already: ensure_indices is quick
        "EM2Q_CACHE_DIR": str(tmp_path),
        "EM2Q_STORAGE": "s3://em2q",  # the file URIs of the test documents lie in it
    }
    command = [sys.executable, "-m", "em2q.cli", "metadata-serve", "--port", "0"]
    process = subprocess.Popen(
        command, env=env, stderr=subprocess.PIPE, text=True, encoding="utf-8"
    )
    try:
        output = []
        for line in process.stderr:  # warnings may come first
            output.append(line)
            address = re.search(r"listening on ([\d.]+):(\d+)", line)
            if address:
                break
        else:
            pytest.fail(f"no address announced:\n{''.join(output)}")
        client = make_client(S.MetadataService, address[1], int(address[2]), timeout=30_000)
        client.createMeasurement(measurement(S, 7))
        client.close()
        assert store.get(S.Measurement, "m-0000007").doc == measurement(S, 7)
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=10) == 0
    finally:
        if process.poll() is None:
            process.kill()
        process.stderr.close()


def test_error_an_operation_does_not_declare_is_an_application_exception(
    client, store, monkeypatch
):
    def refuse(name):
        raise SchemaViolation("ParameterSet.name", "not declared by listParameterSets")

    monkeypatch.setattr(store, "parameter_sets", refuse)
    with pytest.raises(TApplicationException) as raised:
        client.listParameterSets("lipids")
    assert raised.value.type == TApplicationException.INTERNAL_ERROR
    assert "not declared by listParameterSets" in raised.value.message
    assert client.ping() == "em2q-metadata"  # the connection is still usable
