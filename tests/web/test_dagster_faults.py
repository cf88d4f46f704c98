"""Dagster's daemon killed under the local platform (``dagster dev``, what ``make run`` starts):
starting a workflow from the web catalog or the CLI says Dagster does not answer (503 / exit
3) and records nothing; once Dagster is back, starting works again."""

from __future__ import annotations

import time
import uuid

import httpx
import psutil
from click.testing import CliRunner
from fastapi.testclient import TestClient

from em2q.cli import main
from em2q.dagster_api import DagsterAPI
from em2q.platform import dagster_dev
from em2q.web import create_app
from em2q.web.server import free_port
from em2q_resources.connections import set_up_metadata_store
from em2q_resources.metadata import MetadataStore, load_schema
from em2q_resources.metadata.schema import to_document
from em2q_resources.settings import Settings
from tests.em2q_assets.conftest import register_copy
from tests.web.conftest import with_csrf

S = load_schema()


def _kill_daemon(url: str, dev_pid: int) -> None:
    """Kill the ``dagster-daemon`` child of ``dagster dev``; ``dagster dev`` then stops."""
    children = psutil.Process(dev_pid).children(recursive=True)
    daemons = [p for p in children if "daemon" in " ".join(p.cmdline())]
    assert daemons, [p.cmdline() for p in children]
    for process in daemons:
        process.kill()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            httpx.get(f"{url}/server_info", timeout=2)
        except httpx.HTTPError:
            return
        time.sleep(0.5)
    raise AssertionError("dagster dev kept serving after its daemon was killed")


def test_a_killed_daemon_gives_503_and_exit_3_records_nothing_and_recovers(
    elasticsearch_url, tmp_path
):
    port = free_port()
    settings = Settings(
        elasticsearch_url=elasticsearch_url,
        index_prefix=f"test-daemon-{uuid.uuid4().hex[:8]}",
        storage=str(tmp_path / "storage"),
        cache_dir=tmp_path / "cache",
        spectra_chunks=2,
        dagster_url=f"http://127.0.0.1:{port}",
    )
    store = MetadataStore.connect(elasticsearch_url, index_prefix=settings.index_prefix)
    set_up_metadata_store(store)
    env = {
        "EM2Q_ELASTICSEARCH_URL": elasticsearch_url,
        "EM2Q_INDEX_PREFIX": settings.index_prefix,
        "EM2Q_STORAGE": settings.storage,
        "EM2Q_CACHE_DIR": str(settings.cache_dir),
        "EM2Q_DAGSTER_URL": settings.dagster_url,
    }
    try:
        with dagster_dev(settings, elasticsearch_url, port=port) as url:
            dev = [p for p in psutil.process_iter(["cmdline"])
                   if p.info["cmdline"] and "dev" in p.info["cmdline"] and str(port) in p.info["cmdline"]]  # fmt: skip
            _kill_daemon(url, dev[0].pid)
            # registered now, with the sensors' daemon gone: it stays UPLOADED unless a launch
            # that failed wrote something
            register_copy(store, tmp_path / "src", "Example_Continuous", "daemon-run")
            with TestClient(create_app(settings, store=store)) as client:
                started = with_csrf(client).post(
                    "/measurements/daemon-run/runs",
                    data={"workflow": "qc"},
                    headers={"Accept": "application/json"},
                )
            cli = CliRunner().invoke(main, ["run", "daemon-run", "-w", "qc"], env=env)
        assert started.status_code == 503 and "did not answer" in started.json()["message"]
        assert cli.exit_code == 3 and "did not answer" in cli.output
        store.refresh()
        assert store.search(S.WorkflowRun).total == 0
        assert to_document(store.get(S.Measurement, "daemon-run").doc)["status"] == "UPLOADED"

        with dagster_dev(settings, elasticsearch_url, port=port):
            again = CliRunner().invoke(main, ["run", "daemon-run", "-w", "qc", "--json"], env=env)
            assert again.exit_code == 0, again.output
            DagsterAPI(settings.dagster_url).cancel(again.output.split('"id": "')[1].split('"')[0])
    finally:
        store.drop_all()
