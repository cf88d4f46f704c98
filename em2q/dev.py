"""``em2q dev`` / ``make run``: the platform on one machine with its embedded defaults.

Starts (or reuses) Elasticsearch, creates the indices, registers the example measurements with
their facts read from the files, saves the default parameter set and shows the catalog.
"""

from __future__ import annotations

import contextlib
import hashlib
import signal
from pathlib import Path

import click

from em2q.setup_file import measurement_from_setup, read_setup
from em2q_msi.facts import measurement_facts
from em2q_msi.imzml import ImzML
from em2q_msi.parameters import ProcessingParameters
from em2q_resources.elasticsearch_server import LocalElasticsearch
from em2q_resources.metadata import AlreadyExists, MetadataStore, load_schema
from em2q_resources.metadata.store import utc_now
from em2q_resources.settings import PROJECT_ROOT, Settings

EXAMPLES_DIR = PROJECT_ROOT.parent / "shared" / "data" / "imzml"
EXAMPLE_SETUP = PROJECT_ROOT / "examples" / "setup.yaml"


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def example_measurement(imzml: Path, settings: Settings):
    """The Measurement document of one example file, facts read by ``em2q_msi``."""
    reader = ImzML.open(str(imzml), cache_dir=str(settings.cache_dir / "imzml-index"))
    facts = measurement_facts(reader)
    grid = facts["pixel_grid"]
    files = [
        {
            "role": role,
            "uri": path.resolve().as_uri(),
            "size_bytes": path.stat().st_size,
            "checksum_type": "SHA256",
            "checksum": file_sha256(path),
        }
        for role, path in (("IMZML", imzml), ("IBD", imzml.with_suffix(".ibd")))
    ]
    setup = read_setup(EXAMPLE_SETUP)
    setup["title"] = f"{setup['title']} ({facts['mode']})"
    return measurement_from_setup(
        setup,
        id=imzml.stem.lower().replace("_", "-"),
        uploaded_at=utc_now(),
        files=files,
        facts={
            "mode": facts["mode"].upper(),
            "pixels_x": grid["max_x"],
            "pixels_y": grid["max_y"],
            "pixels_z": grid["max_z"],
            "spectra_count": facts["n_spectra"],
            "mz_range": {"min_mz": facts["mz_min"], "max_mz": facts["mz_max"]},
            "uuid": facts["uuid"],
            "mz_dtype": facts["mz_dtype"],
            "intensity_dtype": facts["intensity_dtype"],
        },
    )


def load_examples(store: MetadataStore, settings: Settings, examples_dir: Path) -> list[str]:
    """Register every example imzML (idempotent) and the default parameter set."""
    registered = []
    for imzml in sorted(examples_dir.glob("*.imzML")):
        doc = example_measurement(imzml, settings)
        with contextlib.suppress(AlreadyExists):
            store.create(doc)
        registered.append(doc.id)
    defaults = ProcessingParameters.defaults().to_dict()
    store.save_parameter_set("default", defaults, author="em2q", comment="the team's default")
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


def run_dev(settings: Settings, *, once: bool, examples_dir: Path | None) -> None:
    examples_dir = examples_dir or EXAMPLES_DIR
    url_file = settings.cache_dir / "dev-elasticsearch.url"
    with contextlib.ExitStack() as stack:
        url = settings.elasticsearch_url
        if not url:
            click.echo("starting Elasticsearch (first start fetches it with mvn) …")
            server = LocalElasticsearch(
                cache_dir=settings.cache_dir, data_dir=settings.cache_dir / "dev-es-data"
            )
            url = stack.enter_context(server)
            url_file.parent.mkdir(parents=True, exist_ok=True)
            url_file.write_text(url)
            stack.callback(url_file.unlink, missing_ok=True)
        click.echo(f"Elasticsearch: {url}")
        store = MetadataStore.connect(url, index_prefix=settings.index_prefix)
        store.ensure_indices()
        registered = load_examples(store, settings, examples_dir)
        click.echo(f"registered {len(registered)} example measurements from {examples_dir}")
        show_catalog(store)
        if once:
            return
        click.echo("running; try `em2q search` in another terminal. Ctrl-C stops.")
        with contextlib.suppress(KeyboardInterrupt):
            signal.pause()
