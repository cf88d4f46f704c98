"""``em2q dev`` / ``make run``: the platform on one machine with its embedded defaults.

Starts (or reuses) Elasticsearch, sets the store up (indices, the ``default`` parameter set:
:func:`em2q_resources.connections.set_up_metadata_store`), uploads the example measurements into
the configured storage (as `em2q upload` would) and shows the catalog.
"""

from __future__ import annotations

import contextlib
import signal
from pathlib import Path
from typing import TYPE_CHECKING

import click

from em2q.dagster_api import DagsterAPI
from em2q.notebooks import notebook_folder
from em2q.platform import (
    LOOPBACK,
    PlatformError,
    dagster_dev,
    dagster_home,
    dev_url_file,
    jupyter_server,
)
from em2q.setup_file import read_setup
from em2q.upload import DuplicateUpload, upload_measurement
from em2q_msi.imzml import ImzML
from em2q_resources.connections import (
    SERVER_REQUEST_TIMEOUT_S,
    open_metadata_store,
    open_storage,
    set_up_metadata_store,
)
from em2q_resources.elasticsearch_server import LocalElasticsearch
from em2q_resources.metadata import AlreadyExists, load_schema
from em2q_resources.settings import PROJECT_ROOT, Settings

if TYPE_CHECKING:
    from em2q_resources.metadata.store import MetadataStore

EXAMPLES_DIR = PROJECT_ROOT.parent / "shared" / "data" / "imzml"
EXAMPLE_SETUP = PROJECT_ROOT / "examples" / "setup.yaml"


def example_id(imzml: Path) -> str:
    """``Example_Continuous.imzML`` → ``example-continuous``: readable, stable across starts."""
    return imzml.stem.lower().replace("_", "-")


def load_examples(
    store: MetadataStore,
    settings: Settings,
    examples_dir: Path,
    dagster: DagsterAPI | None = None,
) -> list[str]:
    """Upload every example imzML into ``settings.storage`` (idempotent: files uploaded on an
    earlier start are recognised by checksum); each new one requests its ingest run from
    ``dagster`` at once."""
    storage = open_storage(settings)
    setup = read_setup(EXAMPLE_SETUP)
    cache_dir = settings.cache_dir / "imzml-index"
    registered = []
    for imzml in sorted(examples_dir.glob("*.imzML")):
        mode = ImzML.open(str(imzml), cache_dir=str(cache_dir)).mode
        try:
            measurement = upload_measurement(
                imzml,
                setup={**setup, "title": f"{setup['title']} ({mode})"},
                store=store,
                storage=storage,
                progress=False,
                measurement_id=example_id(imzml),
                cache_dir=cache_dir,
                dagster=dagster,
            )
            registered.append(measurement.id)
        except DuplicateUpload as exc:  # uploaded on an earlier start
            registered.append(exc.existing_id)
        except AlreadyExists:  # the id is taken (by an earlier version of the example)
            registered.append(example_id(imzml))
    store.refresh()
    return registered


def show_catalog(store: MetadataStore) -> None:
    schema = load_schema()
    page = store.search(
        schema.Measurement, facets=["status", "settings.analyzer", "sample.organism"], page_size=50
    )
    click.echo(f"catalog: {page.total} measurements")
    for m in page.hits:
        status = schema.MeasurementStatus._VALUES_TO_NAMES[m.status]
        click.echo(f"  {m.id:<32} {status:<10} {m.facts.spectra_count:>6} spectra  {m.title}")
    for field, buckets in page.facets.items():
        click.echo(f"  {field}: " + ", ".join(f"{v} ({c})" for v, c in buckets))


def _stop_on_sigterm(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def stop_on_signals() -> None:
    """Ctrl-C (SIGINT) and SIGTERM stop the platform cleanly, however it was started.

    A platform started in the background (`make run &`, nohup, a CI step) inherits SIGINT
    *ignored*, and so would every process it starts: Dagster's then sat out the SIGINT that
    stops them, for 30 s, until they were killed. Python's own handler here means the children
    start with SIGINT at its default again.
    """
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _stop_on_sigterm)


def run_dev(
    settings: Settings,
    *,
    once: bool,
    examples_dir: Path | None,
    port: int = 3000,
    web_port: int = 8080,
    notebook_port: int = 8888,
) -> None:
    """Elasticsearch, then (unless ``once``) the Dagster webserver and daemon, then the examples.

    The examples are uploaded after Dagster is up; each upload requests its ingest run, and the
    sensors request each next stage the moment the one before has done its work. Unless
    ``settings.notebook_url`` names a notebook server already (or ``notebook_port`` is 0), a
    local Jupyter server starts for the catalog's "Open in notebook".
    """
    examples_dir = examples_dir or EXAMPLES_DIR
    stop_on_signals()  # stop Elasticsearch, Dagster and Jupyter cleanly
    url_file = dev_url_file(settings)
    with contextlib.ExitStack() as stack:
        url = settings.elasticsearch_url
        if not url:
            click.echo("starting Elasticsearch (first start fetches it with mvn) …")
            server = LocalElasticsearch(
                cache_dir=settings.cache_dir, data_dir=settings.cache_dir / "dev-es-data"
            )
            url = stack.enter_context(server)
            url_file.parent.mkdir(parents=True, exist_ok=True)
            url_file.write_text(url, encoding="utf-8")
            stack.callback(url_file.unlink, missing_ok=True)
        click.echo(f"Elasticsearch: {url}")
        store = open_metadata_store(settings, url=url, request_timeout_s=SERVER_REQUEST_TIMEOUT_S)
        set_up_metadata_store(store)
        if not once:
            click.echo("starting the Dagster webserver and daemon …")
            ui = stack.enter_context(dagster_dev(settings, url, port=port))
            click.echo(
                f"Dagster UI: {ui} (lineage, partitions, runs; log: {dagster_home(settings)})"
            )
            from em2q.web import create_app
            from em2q.web.server import serve_in_thread

            web_settings = settings.with_overrides(elasticsearch_url=url, dagster_url=ui)
            if not settings.notebook_url and notebook_port:
                click.echo("starting the Jupyter server …")
                try:
                    lab, token = stack.enter_context(
                        jupyter_server(web_settings, url, port=notebook_port)
                    )
                except PlatformError as exc:  # the catalog offers notebooks as downloads
                    click.echo(f"warning: no Jupyter server: {exc}", err=True)
                else:
                    web_settings = web_settings.with_overrides(
                        notebook_url=lab, notebook_token=token
                    )
                    folder = notebook_folder(web_settings, web_settings.local_user)
                    click.echo(f"Jupyter: {lab}/lab?token={token} (notebooks in {folder})")
            catalog = create_app(web_settings, store=store)
            web = stack.enter_context(serve_in_thread(catalog, host=LOOPBACK, port=web_port))
            click.echo(f"Web catalog: {web} (upload, search, results, compare, start workflows)")
        dagster = None if once else stack.enter_context(DagsterAPI(ui))
        registered = load_examples(store, settings, examples_dir, dagster)
        click.echo(f"registered {len(registered)} example measurements from {examples_dir}")
        show_catalog(store)
        if once:
            return
        click.echo(
            "running; new uploads are processed at once (`em2q upload DATA.imzML --setup "
            "setup.yaml` in another terminal), `em2q search` shows the catalog. Ctrl-C stops."
        )
        with contextlib.suppress(KeyboardInterrupt):
            signal.pause()
