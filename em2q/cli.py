"""The ``em2q`` command line: one entry point for technicians, data scientists and admins.

Exit codes scripts can rely on: 0 success, 1 the command ran but found a problem (e.g. not
found, invalid input), 2 usage error, 3 a backend (Elasticsearch, storage) is unreachable.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import click

from argo_bridge.cli import export_argo
from em2q.platform import dev_url_file
from em2q_resources.elasticsearch_server import ElasticsearchSetupError
from em2q_resources.metadata import (
    DocumentNotFound,
    MetadataError,
    MetadataStore,
    SchemaViolation,
    StoreUnavailable,
    load_schema,
)
from em2q_resources.metadata.schema import to_document
from em2q_resources.metadata.store import parameter_values_to_dict
from em2q_resources.settings import Settings

EXIT_PROBLEM, EXIT_USAGE, EXIT_UNAVAILABLE = 1, 2, 3


def cluster_url(settings: Settings) -> str:
    if settings.elasticsearch_url:
        return settings.elasticsearch_url
    recorded = dev_url_file(settings)
    if recorded.exists():
        return recorded.read_text(encoding="utf-8").strip()
    raise click.ClickException(
        "no Elasticsearch to talk to: run `make run` (it starts one) in another terminal, "
        "or set EM2Q_ELASTICSEARCH_URL"
    )


@contextmanager
def surface_errors() -> Iterator[None]:
    """Turn store errors into messages and exit codes at the surface, nowhere else."""
    try:
        yield
    except SchemaViolation as exc:
        click.echo(f"error: invalid input: {exc}", err=True)
        sys.exit(EXIT_PROBLEM)
    except DocumentNotFound as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(EXIT_PROBLEM)
    except (StoreUnavailable, ElasticsearchSetupError) as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(EXIT_UNAVAILABLE)
    except MetadataError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(EXIT_PROBLEM)


class Context:
    def __init__(self) -> None:
        self.settings = Settings.from_env()
        self._store: MetadataStore | None = None

    @property
    def store(self) -> MetadataStore:
        if self._store is None:
            self._store = MetadataStore.connect(
                cluster_url(self.settings),
                username=self.settings.elasticsearch_username,
                password=self.settings.elasticsearch_password,
                api_key=self.settings.elasticsearch_api_key,
                index_prefix=self.settings.index_prefix,
            )
        return self._store


pass_context = click.make_pass_decorator(Context, ensure=True)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """EM²Q: share, process and compare imaging mass spectrometry data.

    Backends come from EM2Q_* environment variables (EM2Q_ELASTICSEARCH_URL, EM2Q_STORAGE …);
    without them the commands talk to the platform started by `em2q dev` / `make run`.
    """


def _table(rows: list[dict], columns: list[str]) -> str:
    widths = {c: max([len(c), *(len(str(r.get(c, ""))) for r in rows)]) for c in columns}
    lines = ["  ".join(c.upper().ljust(widths[c]) for c in columns)]
    lines += ["  ".join(str(r.get(c, "")).ljust(widths[c]) for c in columns) for r in rows]
    return "\n".join(lines)


def _measurement_row(doc: dict) -> dict:
    settings = doc.get("settings", {})
    return {
        "id": doc["id"],
        "title": doc["title"][:48],
        "status": doc["status"],
        "polarity": settings.get("polarity", ""),
        "analyzer": settings.get("analyzer", ""),
        "organism": (doc.get("sample") or {}).get("organism", ""),
        "uploaded": doc.get("uploaded_at", "")[:10],
    }


def _parse_filters(filters: tuple[str, ...]) -> dict:
    """``field=value``, ``field=a,b`` (any of), ``field>=x``, ``field<=y``."""
    parsed: dict = {}
    for item in filters:
        for operator, bound in ((">=", "gte"), ("<=", "lte")):
            if operator in item:
                field, value = item.split(operator, 1)
                parsed.setdefault(field.strip(), {})[bound] = value.strip()
                break
        else:
            if "=" not in item:
                raise click.BadParameter(f"{item!r}: use field=value, field>=x or field<=y")
            field, value = item.split("=", 1)
            values = [v.strip() for v in value.split(",")]
            parsed[field.strip()] = values if len(values) > 1 else values[0]
    return parsed


@main.command()
@click.argument("text", required=False)
@click.option("-f", "--filter", "filters", multiple=True, help="field=value, field>=x, field<=y")
@click.option("--facet", "facets", multiple=True, help="count values of a field, e.g. status")
@click.option("--sort", "sort", multiple=True, help="field or -field (descending)")
@click.option("--limit", default=20, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
@pass_context
def search(ctx: Context, text, filters, facets, sort, limit, as_json) -> None:
    """Search measurements: full TEXT plus filters on any schema field.

    Example: em2q search kidney -f settings.polarity=POSITIVE -f settings.resolving_power>=1e5
    --facet settings.analyzer
    """
    schema = load_schema()
    with surface_errors():
        page = ctx.store.search(
            schema.Measurement,
            text=text,
            filters=_parse_filters(filters),
            facets=list(facets),
            sort=[(s[1:], True) if s.startswith("-") else s for s in sort],
            page_size=limit,
        )
    docs = [to_document(m) for m in page.hits]
    if as_json:
        click.echo(json.dumps({"total": page.total, "hits": docs, "facets": page.facets}))
        return
    click.echo(
        _table(
            [_measurement_row(d) for d in docs], list(_measurement_row(docs[0])) if docs else ["id"]
        )
    )
    click.echo(f"{len(docs)} of {page.total} measurements")
    for field, buckets in page.facets.items():
        click.echo(f"{field}: " + ", ".join(f"{v} ({c})" for v, c in buckets))


@main.command()
@click.argument("measurement_id")
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
@pass_context
def show(ctx: Context, measurement_id: str, as_json: bool) -> None:
    """Show one measurement's metadata."""
    with surface_errors():
        stored = ctx.store.get(load_schema().Measurement, measurement_id)
    doc = to_document(stored.doc)
    click.echo(json.dumps(doc, indent=None if as_json else 2))


@main.command()
@click.argument("imzml", type=click.Path(dir_okay=False))
@click.option("--ibd", type=click.Path(dir_okay=False), help="the .ibd (default: beside IMZML)")
@click.option(
    "--setup",
    "setup_file",
    required=True,
    type=click.Path(dir_okay=False),
    help="experimental setup YAML (see examples/setup.yaml)",
)
@click.option("--operator", default=None, help="who uploads (overrides the setup's operator)")
@click.option("--json", "as_json", is_flag=True, help="print the Measurement document as JSON")
@pass_context
def upload(ctx: Context, imzml: str, ibd: str | None, setup_file: str, operator: str | None,
           as_json: bool) -> None:  # fmt: skip
    """Validate IMZML (+ its .ibd) and the setup, copy them into storage, register them.

    Prints the new measurement id. Exit 1 lists every problem of the files or the setup, or
    names the measurement these files were already uploaded as; exit 3: Elasticsearch or
    storage (EM2Q_STORAGE, EM2Q_S3_ENDPOINT_URL) did not answer.
    """
    from em2q.upload import UploadError, upload_measurement
    from em2q_resources.storage import StorageResource, StorageUnavailable

    storage = StorageResource.from_settings(ctx.settings)
    try:
        with surface_errors():
            measurement = upload_measurement(
                imzml, ibd_path=ibd, setup=setup_file, store=ctx.store, storage=storage,
                operator=operator, progress=True,
                cache_dir=ctx.settings.cache_dir / "imzml-index",
            )  # fmt: skip
    except UploadError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(EXIT_PROBLEM)
    except StorageUnavailable as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(EXIT_UNAVAILABLE)
    except OSError as exc:  # e.g. no permission to write into the storage folder
        click.echo(f"error: storage {storage.root}: {exc}", err=True)
        sys.exit(EXIT_PROBLEM)
    click.echo(json.dumps(to_document(measurement)) if as_json else measurement.id)


@main.group()
def params() -> None:
    """Named, versioned, immutable processing parameter sets."""


@params.command("list")
@click.option("--json", "as_json", is_flag=True)
@pass_context
def params_list(ctx: Context, as_json: bool) -> None:
    """List saved parameter sets (newest version of each name first)."""
    schema = load_schema()
    with surface_errors():
        ctx.store.refresh()
        page = ctx.store.search(
            schema.ParameterSet, sort=["name", ("version", True)], page_size=1000
        )
    rows = [
        {"id": p.id, "name": p.name, "version": p.version, "author": p.author,
         "created": p.created_at[:19], "comment": (p.comment or "")[:40]}
        for p in page.hits
    ]  # fmt: skip
    if as_json:
        click.echo(json.dumps(rows))
    else:
        click.echo(_table(rows, ["id", "name", "version", "author", "created", "comment"]))


@params.command("show")
@click.argument("name_or_id")
@pass_context
def params_show(ctx: Context, name_or_id: str) -> None:
    """Show a parameter set (NAME gives its newest version, NAME@vN a given one)."""
    with surface_errors():
        saved = ctx.store.get_parameter_set(name_or_id)
    doc = to_document(saved)
    doc["values"] = parameter_values_to_dict(saved.values)
    click.echo(json.dumps(doc, indent=2))


@params.command("save")
@click.argument("name")
@click.argument("values_file", type=click.Path(exists=True, dir_okay=False))
@click.option("--author", required=True)
@click.option("--comment", default=None)
@pass_context
def params_save(
    ctx: Context, name: str, values_file: str, author: str, comment: str | None
) -> None:
    """Save VALUES_FILE ({step: {name: value}}, JSON or YAML) as parameter set NAME.

    The same values as a saved version return that version; new values a new version.
    """
    import yaml

    values = yaml.safe_load(Path(values_file).read_text(encoding="utf-8"))
    with surface_errors():
        saved = ctx.store.save_parameter_set(name, values, author=author, comment=comment)
    click.echo(saved.id)


@params.command("diff")
@click.argument("first")
@click.argument("second")
@pass_context
def params_diff(ctx: Context, first: str, second: str) -> None:
    """Show the values that differ between two parameter sets."""
    with surface_errors():
        a = parameter_values_to_dict(ctx.store.get_parameter_set(first).values)
        b = parameter_values_to_dict(ctx.store.get_parameter_set(second).values)
    for step in sorted(set(a) | set(b)):
        for name in sorted(set(a.get(step, {})) | set(b.get(step, {}))):
            left, right = a.get(step, {}).get(name), b.get(step, {}).get(name)
            if left != right:
                click.echo(f"{step}.{name}: {left!r} -> {right!r}")


@main.command()
@click.option(
    "--once", is_flag=True, help="no Dagster: set up, upload the examples, print the catalog, exit"
)
@click.option("--examples", type=click.Path(exists=True, file_okay=False), default=None)
@click.option("--port", default=3000, show_default=True, help="port of the Dagster UI")
@pass_context
def dev(ctx: Context, once: bool, examples: str | None, port: int) -> None:
    """Run the platform locally on its embedded defaults with the example data.

    Starts Elasticsearch, the Dagster webserver and daemon (UI on http://127.0.0.1:PORT) and
    uploads the example measurements, which the sensor then processes.
    """
    from em2q.dev import run_dev
    from em2q.platform import PlatformError

    try:
        with surface_errors():
            run_dev(
                ctx.settings,
                once=once,
                examples_dir=Path(examples) if examples else None,
                port=port,
            )
    except PlatformError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(EXIT_UNAVAILABLE)


@main.command("metadata-serve")
@click.option("--host", default="127.0.0.1", show_default=True, help="address to listen on")
@click.option("--port", default=9090, show_default=True, help="TCP port (0: any free port)")
@pass_context
def metadata_serve(ctx: Context, host: str, port: int) -> None:
    """Serve the Thrift MetadataService (thrift/em2q.thrift) for clients in other languages.

    Binary protocol, buffered transport, one thread per connection. With EM2Q_AUTH_MODE=token
    a connection calls login(token) first (tokens from EM2Q_TOKENS_FILE) and acts as that user;
    with the default local mode it acts as the local user. The cluster is
    EM2Q_ELASTICSEARCH_URL, else the one a running `em2q dev` uses, else a local Elasticsearch
    started for as long as this command runs.
    """
    from em2q_resources.auth import Authenticator
    from em2q_resources.elasticsearch_server import elasticsearch_url
    from em2q_resources.metadata.service import serve

    settings = ctx.settings
    recorded = dev_url_file(settings)  # serve the cluster of a running `em2q dev`, if any
    if not settings.elasticsearch_url and recorded.exists():
        settings = settings.with_overrides(
            elasticsearch_url=recorded.read_text(encoding="utf-8").strip()
        )
    with surface_errors(), elasticsearch_url(settings) as url:
        store = MetadataStore.connect(
            url,
            username=settings.elasticsearch_username,
            password=settings.elasticsearch_password,
            api_key=settings.elasticsearch_api_key,
            index_prefix=settings.index_prefix,
        )
        store.ensure_indices()

        def ready(server) -> None:
            click.echo(
                f"MetadataService listening on {server.host}:{server.port} "
                f"(Elasticsearch {url}, indices {settings.index_prefix}-*); Ctrl-C stops it",
                err=True,
            )

        serve(store, host, port, ready=ready, authenticator=Authenticator.from_settings(settings))


main.add_command(export_argo)

if __name__ == "__main__":
    main()
