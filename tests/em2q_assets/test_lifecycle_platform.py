"""Failures injected into the real platform (``dagster dev``: webserver, daemon, sensors, code
server, SQLite instance; the session Elasticsearch; local storage) each end FAILED with the true
root reason within a sensor tick or two, and recover on retry (FAILED → PROCESSING → READY).

The platform runs once for this module with its sensors on, K = 2 chunks and a stall time of
60 s. The four injections are made together (module fixture ``failed``), each test reads one
failure, and the retries run together too (``recovered``): a retry is a Dagster backfill, whose
daemon moves on every 30 s, so one retry after the other would take minutes each.
Injections, all real:

* an exception inside a chunk step: a file stands where the chunk results folder goes, so
  ``spectra_chunks`` raises the operating system's error while writing a chunk;
* a killed run: the ingest run's process is SIGKILLed (its pid from the run's event log);
* Elasticsearch unreachable during processing: a run whose metadata resource points at a
  closed port (run config), while the sensors' cluster stays up;
* a stall: a measurement REGISTERED an hour ago whose ingest request was lost.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import pytest
from fastapi.testclient import TestClient

from em2q.dagster_api import DagsterAPI
from em2q.platform import dagster_dev, dagster_home
from em2q.setup_file import measurement_from_setup, read_setup
from em2q.web import create_app
from em2q_msi.parameters import ProcessingParameters
from em2q_resources import lifecycle
from em2q_resources.lifecycle import MEASUREMENT_TAG, Action, Kind, Status
from em2q_resources.metadata import MetadataStore, load_schema
from em2q_resources.metadata.schema import to_document
from em2q_resources.settings import PROJECT_ROOT, Settings
from em2q_resources.storage import StorageResource
from tests.em2q_assets.conftest import register_copy, remember_storage, sha256
from tests.fixtures.dagster import free_port

S = load_schema()
STALLED_AFTER_S = 60.0
EXAMPLES = PROJECT_ROOT.parent / "shared" / "data" / "imzml"

pytestmark = pytest.mark.slow


class Platform:
    def __init__(self, url: str, settings: Settings, store: MetadataStore, root: Path) -> None:
        self.url, self.settings, self.store, self.root = url, settings, store, root
        self.instance = dg.DagsterInstance.from_config(str(dagster_home(settings)))

    def env(self) -> dict[str, str]:
        return {
            **os.environ,
            "PYTHONPATH": str(PROJECT_ROOT),
            "EM2Q_ELASTICSEARCH_URL": self.settings.elasticsearch_url,
            "EM2Q_INDEX_PREFIX": self.settings.index_prefix,
            "EM2Q_STORAGE": self.settings.storage,
            "EM2Q_CACHE_DIR": str(self.settings.cache_dir),
            "EM2Q_DAGSTER_URL": self.url,
        }

    def em2q(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "em2q.cli", *args], env=self.env(), capture_output=True,
            text=True, encoding="utf-8", timeout=120, cwd=PROJECT_ROOT,
        )  # fmt: skip

    def wait_for(self, measurement_id: str, status: Status, timeout_s: float = 300):
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            doc = self.store.get(S.Measurement, measurement_id).doc
            if lifecycle.status_of(doc) == status:
                return doc, lifecycle.reason_of(doc)
            time.sleep(1)
        raise AssertionError(
            f"{measurement_id} still {lifecycle.status_of(doc)} ({doc.status_reason}) after "
            f"{timeout_s:.0f}s, not {status}"
        )


@pytest.fixture(scope="module")
def platform(elasticsearch_url, tmp_path_factory) -> Platform:
    root = tmp_path_factory.mktemp("lifecycle-platform")
    port = free_port()
    settings = Settings(
        elasticsearch_url=elasticsearch_url,
        index_prefix=f"test-lifecycle-{uuid.uuid4().hex[:8]}",
        storage=str(root / "storage"),
        cache_dir=root / "cache",
        spectra_chunks=2,
        stalled_after_s=STALLED_AFTER_S,
        dagster_url=f"http://127.0.0.1:{port}",
    )
    remember_storage(settings)
    store = MetadataStore.connect(elasticsearch_url, index_prefix=settings.index_prefix)
    store.ensure_indices()
    try:
        with dagster_dev(settings, elasticsearch_url, port=port, max_concurrent_runs=4) as url:
            defaults = ProcessingParameters.defaults().to_dict()
            store.save_parameter_set("default", defaults, author="test")
            yield Platform(url, settings, store, root)
    finally:
        store.drop_all()


def registered_long_ago(platform: Platform, measurement_id: str, age_s: float):
    """A measurement whose files are in place (in the platform's storage, where an upload puts
    them) and whose status began ``age_s`` ago."""
    store = platform.store
    storage = StorageResource(root=platform.settings.storage)
    folder = Path(storage.path(f"measurements/{measurement_id}"))
    folder.mkdir(parents=True, exist_ok=True)
    files = []
    for suffix, role in ((".imzML", "IMZML"), (".ibd", "IBD")):
        target = folder / f"Example_Continuous{suffix}"
        target.write_bytes((EXAMPLES / f"Example_Continuous{suffix}").read_bytes())
        uri = storage.url(f"measurements/{measurement_id}/{target.name}")
        files.append(
            {"role": role, "uri": str(uri), "size_bytes": target.stat().st_size,
             "checksum_type": "SHA256", "checksum": sha256(target)}
        )  # fmt: skip
    then = lifecycle.iso(time.time() - age_s)
    detail = lifecycle.Reason(
        Kind.REGISTERED, "partition created; ingest requested", actor=lifecycle.Actor.SENSOR,
        at=then, previous_status=Status.UPLOADED,
    ).to_thrift()  # fmt: skip
    setup = read_setup(PROJECT_ROOT / "examples" / "setup.yaml")
    doc = measurement_from_setup(
        setup, id=measurement_id, uploaded_at=then, files=files, status="REGISTERED",
        status_reason="partition created; ingest requested", status_detail=to_document(detail),
    )  # fmt: skip
    store.create(doc, refresh=True)


@dataclass
class Injected:
    """The measurements failed on purpose, and what each test needs to know about them."""

    killed_run_id: str
    closed_port: int
    chunk_blocker: Path
    reasons: dict[str, lifecycle.Reason]


CHUNK, KILLED, STORE_DOWN, STALLED = "chunk-error", "killed-run", "store-down", "stalled"


def kill_ingest_run(platform: Platform, m: str) -> str:
    """SIGKILL the process of the first run of ``m`` as soon as it has one; its run id."""
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        for run in platform.instance.get_runs(dg.RunsFilter(tags={MEASUREMENT_TAG: m})):
            for entry in platform.instance.all_logs(run.run_id):
                found = re.search(r"Started process for run \(pid: (\d+)\)", entry.message or "")
                if found:
                    os.kill(int(found.group(1)), signal.SIGKILL)
                    return run.run_id
        time.sleep(0.1)
    raise AssertionError("the ingest run never started")


def launch_with_unreachable_store(platform: Platform, m: str) -> int:
    """Ingest ``m`` in a run whose Elasticsearch is a closed port; the port."""
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        closed = sock.getsockname()[1]
    api = DagsterAPI(platform.url)
    api.ensure_partition(m)
    params = {
        "selector": {**api.repository(), "jobName": "__ASSET_JOB",
                     "assetSelection": [{"path": ["raw_measurement"]}]},
        "runConfigData": {"resources": {"metadata": {"config": {
            "url": f"http://127.0.0.1:{closed}"}}}},
        "executionMetadata": {"tags": [{"key": "dagster/partition", "value": m},
                                       {"key": MEASUREMENT_TAG, "value": m}]},
    }  # fmt: skip
    launched = api.graphql(LAUNCH, {"params": params})["launchRun"]
    assert launched["__typename"] == "LaunchRunSuccess", launched
    return closed


@pytest.fixture(scope="module")
def failed(platform: Platform) -> Injected:
    register_copy(platform.store, platform.root / KILLED, "Example_Continuous", KILLED)
    killed_run_id = kill_ingest_run(platform, KILLED)

    blocker = Path(platform.settings.storage) / "results" / CHUNK / "spectra_chunks"
    blocker.parent.mkdir(parents=True)
    blocker.write_text("a file where the chunk results folder goes", encoding="utf-8")
    register_copy(platform.store, platform.root / CHUNK, "Example_Continuous", CHUNK)

    registered_long_ago(platform, STORE_DOWN, age_s=0)
    closed = launch_with_unreachable_store(platform, STORE_DOWN)

    registered_long_ago(platform, STALLED, age_s=3600)

    reasons = {
        m: platform.wait_for(m, Status.FAILED)[1] for m in (KILLED, CHUNK, STORE_DOWN, STALLED)
    }
    return Injected(killed_run_id, closed, blocker, reasons)


def test_an_exception_in_a_chunk_step_fails_the_measurement_with_its_root_error_and_chunk(
    platform, failed
):
    reason = failed.reasons[CHUNK]
    assert reason.kind == Kind.RUN_FAILED and reason.next_action == Action.RETRY
    assert reason.asset == "spectra_chunks"
    assert reason.error_type in {"NotADirectoryError", "FileExistsError"}, reason
    assert "spectra_chunks" in reason.error_message
    assert re.fullmatch(rf"{CHUNK}\|[01]", reason.partition), reason.partition
    run = platform.instance.get_run_by_id(reason.run_id)
    assert run.tags["dagster/asset_partition_range_start"] == f"{CHUNK}|0"  # the chunk range run
    assert reason.run_url == f"{platform.url}/runs/{reason.run_id}"


def test_em2q_status_shows_the_root_error_and_the_retry_instead_of_not_processed_yet(
    platform, failed
):
    reason = failed.reasons[CHUNK]
    status = platform.em2q("status", CHUNK)
    assert status.returncode == 0, status.stderr
    assert f"root error: {reason.error_type}" in status.stdout
    assert f"run: {reason.run_url}" in status.stdout
    assert f"next: retry once the cause is gone: `em2q run {CHUNK} --workflow standard`" in (
        status.stdout
    )
    assert "not processed yet" not in status.stdout


def test_a_killed_run_fails_the_measurement_as_killed(failed):
    reason = failed.reasons[KILLED]
    assert reason.kind == Kind.KILLED and reason.run_id == failed.killed_run_id
    # the kill lands while the run's process starts (the code server reports "Subprocess …
    # terminated unexpectedly with exit code -9") or runs ("… terminated by signal 9 (SIGKILL)")
    assert re.search(r"signal 9 \(SIGKILL\)|exit code -9", reason.message), reason.message
    assert reason.next_action == Action.RETRY


def test_an_unreachable_elasticsearch_fails_the_run_with_the_store_error(failed):
    reason = failed.reasons[STORE_DOWN]
    assert reason.error_type == "StoreUnavailable", reason
    assert f"127.0.0.1:{failed.closed_port} did not answer" in reason.error_message
    assert (reason.asset, reason.partition) == ("raw_measurement", STORE_DOWN)


def test_a_measurement_nothing_runs_for_is_failed_as_stalled_by_the_watchdog(failed):
    reason = failed.reasons[STALLED]
    assert reason.kind == Kind.STALLED and reason.actor == lifecycle.Actor.WATCHER
    assert reason.message.startswith("stalled: REGISTERED for ")
    assert "no run ever started for it" in reason.message
    assert reason.next_action == Action.RETRY


def test_the_page_of_a_failed_measurement_shows_the_reason_and_a_retry(platform, failed):
    app = create_app(platform.settings, store=platform.store)
    with TestClient(app) as client:
        page = client.get(f"/measurements/{STALLED}")
    assert page.status_code == 200
    assert "stalled: REGISTERED for" in page.text and 'id="retry"' in page.text
    assert "not processed yet" not in page.text


@pytest.fixture(scope="module")
def recovered(platform: Platform, failed: Injected) -> dict[str, Status]:
    """Every cause removed, every measurement retried: three from the CLI, one from its page."""
    failed.chunk_blocker.unlink()
    for m in (CHUNK, KILLED, STORE_DOWN):
        launched = platform.em2q("run", m, "--workflow", "standard", "--json")
        assert launched.returncode == 0, launched.stderr
    app = create_app(platform.settings, store=platform.store)
    with TestClient(app) as client:
        page = client.get(f"/measurements/{STALLED}").text
        form = page[page.index('id="retry-form"') :]
        fields = dict(re.findall(r'name="(\w+)" value="([^"]*)"', form[: form.index("</form>")]))
        assert set(fields) == {"csrf_token", "workflow", "parameter_set"}, fields
        retried = client.post(f"/measurements/{STALLED}/runs", data=fields, follow_redirects=False)
    assert retried.status_code == 303, retried.text
    started = {
        m: lifecycle.status_of(platform.store.get(S.Measurement, m).doc) for m in failed.reasons
    }
    assert set(started.values()) == {Status.PROCESSING}, started
    return {
        m: lifecycle.status_of(platform.wait_for(m, Status.READY, timeout_s=420)[0])
        for m in failed.reasons
    }


@pytest.mark.parametrize("m", [CHUNK, KILLED, STORE_DOWN, STALLED])
def test_a_retry_recovers_the_failed_measurement_once_the_cause_is_gone(platform, recovered, m):
    assert recovered[m] == Status.READY
    reason = lifecycle.reason_of(platform.store.get(S.Measurement, m).doc)
    assert reason.kind == Kind.QC_PASSED and reason.error_type is None


LAUNCH = """
mutation ($params: ExecutionParams!) {
  launchRun(executionParams: $params) {
    __typename
    ... on LaunchRunSuccess { run { runId } }
    ... on PythonError { message }
    ... on InvalidSubsetError { message }
    ... on RunConfigValidationInvalid { errors { message } }
  }
}"""
