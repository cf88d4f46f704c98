"""Roles in the Thrift MetadataService: login per connection, each forbidden action refused."""

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
    "sci-token": User("sam", Role.SCIENTIST),
    "admin-token": User("ada", Role.ADMIN),
}


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

    def open_as(token: str | None):
        client = make_client(S.MetadataService, server.host, server.port, timeout=30_000)
        clients.append(client)
        if token is not None:
            client.login(token)
        return client

    yield open_as
    for client in clients:
        client.close()


def _values():
    return [S.ParameterValue(step="peak_picking", name="snr_threshold", number=4.0)]


def _workflow():
    return S.Workflow(
        id="qc", name="qc", assets=["raw_measurement"], published_by="", published_at=""
    )


def test_login_names_the_user_and_role(connect):
    client = connect(None)
    principal = client.login("sci-token")
    assert (principal.user, principal.role) == ("sam", "scientist")


def test_unknown_token_is_refused(connect):
    with pytest.raises(S.Forbidden) as raised:
        connect(None).login("guessed")
    assert "not recognised" in raised.value.message


def test_calls_before_login_are_refused_with_what_to_do(connect):
    with pytest.raises(S.Forbidden) as raised:
        connect(None).searchMeasurements(S.SearchRequest())
    assert "nobody is signed in" in raised.value.message


@pytest.mark.parametrize(
    ("token", "call", "action", "needed"),
    [
        ("tech-token", lambda c: c.saveParameterSet("t", _values(), "x", None), "save parameter set", "scientist"),
        ("tech-token", lambda c: c.deleteMeasurement("m-0000900"), "delete", "admin"),
        ("tech-token", lambda c: c.publishWorkflow(_workflow()), "publish workflow", "admin"),
        ("sci-token", lambda c: c.deleteMeasurement("m-0000900"), "delete", "admin"),
        ("sci-token", lambda c: c.publishWorkflow(_workflow()), "publish workflow", "admin"),
    ],
    ids=["tech-save-params", "tech-delete", "tech-publish", "sci-delete", "sci-publish"],
)  # fmt: skip
def test_forbidden_action_is_refused_naming_user_role_action_and_needed_role(
    connect, store, token, call, action, needed
):
    if not store.exists(S.Measurement, "m-0000900"):
        store.create(measurement(S, 900), refresh=True)
    client = connect(token)
    with pytest.raises(S.Forbidden) as raised:
        call(client)
    user = TOKENS[token]
    message = raised.value.message
    assert f"{user.name} has the {user.role} role" in message
    assert f"may not {action}" in message
    assert f"needs the {needed} role" in message
    assert store.exists(S.Measurement, "m-0000900")
    assert store.parameter_sets("t") == []
    assert not store.exists(S.Workflow, "qc")


def test_technician_registers_and_reads_and_the_platform_records_runs(connect, store):
    client = connect("tech-token")
    created = client.createMeasurement(
        measurement(S, 901, status=S.MeasurementStatus.UPLOADED, files=None, facts=None)
    )
    assert client.getMeasurement(created.id).measurement == created
    run = S.WorkflowRun(
        id="r1:qc_report:m-0000901", engine=S.RunEngine.DAGSTER, run_id="r1",
        workflow="qc_report", measurement_id=created.id, status=S.RunStatus.SUCCEEDED,
    )  # fmt: skip
    connect("admin-token").recordWorkflowRun(run)
    assert [r.id for r in client.workflowRunsOf(created.id)] == [run.id]


def test_scientist_saves_parameter_sets(connect):
    saved = connect("sci-token").saveParameterSet("sci-set", _values(), "sam", "stricter")
    assert saved.id == "sci-set@v1"


def test_admin_publishes_a_workflow_as_themselves_and_deletes(connect, store):
    admin = connect("admin-token")
    published = admin.publishWorkflow(_workflow())
    assert (published.name, published.published_by) == ("qc", "ada")
    assert [w.name for w in connect("tech-token").listWorkflows()] == ["qc"]
    store.create(measurement(S, 902), refresh=True)
    admin.deleteMeasurement("m-0000902")
    assert not store.exists(S.Measurement, "m-0000902")


def test_each_connection_acts_as_its_own_user(connect):
    admin, technician = connect("admin-token"), connect("tech-token")
    with pytest.raises(S.Forbidden):
        technician.deleteMeasurement("m-0000903")
    with pytest.raises(S.NotFound):  # allowed; the measurement just does not exist
        admin.deleteMeasurement("m-0000903")
