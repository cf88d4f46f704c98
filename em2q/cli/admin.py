"""Running the platform and administering it: dev, web, setup, tokens, the Thrift service."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from argo_bridge.cli import export_argo
from em2q.cli.base import (
    EXIT_PROBLEM,
    EXIT_UNAVAILABLE,
    EXIT_USAGE,
    Context,
    _fail,
    _table,
    json_option,
    main,
    pass_context,
    surface_errors,
)
from em2q_resources.auth import Action, require


@main.group()
def tokens() -> None:
    """API tokens of EM2Q_TOKENS_FILE (admins): only salted hashes are stored, mode 0600.

    The first token may be added by whoever can write the file; after that an admin's token
    (or the local admin) is needed.
    """


def _tokens_file(ctx: Context):
    from em2q_resources.auth import TokensFile

    if ctx.settings.tokens_file is None:
        _fail("set EM2Q_TOKENS_FILE to the tokens file to manage", EXIT_USAGE)
    return TokensFile(ctx.settings.tokens_file)


def _manage_tokens(ctx: Context):
    from em2q_resources.auth import TokensFileError

    tokens_file = _tokens_file(ctx)
    try:
        bootstrap = not tokens_file.load()
    except TokensFileError as exc:
        _fail(str(exc), EXIT_USAGE)
    if not bootstrap:
        with surface_errors():
            ctx.require(Action.MANAGE_TOKENS)
    return tokens_file


@tokens.command("add")
@click.argument("user")
@click.option("--role", type=click.Choice(["technician", "scientist", "admin"]), required=True)
@json_option
@pass_context
def tokens_add(ctx: Context, user: str, role: str, as_json: bool) -> None:
    """Issue a token for USER with ROLE; the token is printed once and never stored."""
    record, token = _manage_tokens(ctx).add(user, role)
    if as_json:
        click.echo(json.dumps({"id": record.id, "user": user, "role": role, "token": token}))
        return
    click.echo(f"token {record.id} for {user} ({role}); shown only now:", err=True)
    click.echo(token)


@tokens.command("list")
@json_option
@pass_context
def tokens_list(ctx: Context, as_json: bool) -> None:
    """Issued tokens: id, user, role, created (never the tokens themselves)."""
    rows = [
        {"id": r.id, "user": r.user, "role": str(r.role), "created": r.created_at}
        for r in _manage_tokens(ctx).load()
    ]
    if as_json:
        click.echo(json.dumps(rows))
    else:
        click.echo(_table(rows, ["id", "user", "role", "created"]))


@tokens.command("revoke")
@click.argument("id_or_user")
@pass_context
def tokens_revoke(ctx: Context, id_or_user: str) -> None:
    """Revoke the token ID_OR_USER (a token id, or every token of that user)."""
    gone = _manage_tokens(ctx).revoke(id_or_user)
    if not gone:
        _fail(f"no token with id or user {id_or_user!r}", EXIT_PROBLEM)
    click.echo(f"revoked {', '.join(f'{r.id} ({r.user})' for r in gone)}")


@main.command()
@click.option(
    "--once", is_flag=True, help="no Dagster: set up, upload the examples, print the catalog, exit"
)
@click.option("--examples", type=click.Path(exists=True, file_okay=False), default=None)
@click.option("--port", default=3000, show_default=True, help="port of the Dagster UI")
@click.option("--web-port", default=8080, show_default=True, help="port of the web catalog")
@click.option(
    "--notebook-port", default=8888, show_default=True,
    help="port of the local Jupyter server (0: none; also none when EM2Q_NOTEBOOK_URL is set)",
)  # fmt: skip
@pass_context
def dev(
    ctx: Context, once: bool, examples: str | None, port: int, web_port: int, notebook_port: int
) -> None:
    """Run the platform locally on its embedded defaults with the example data.

    Starts Elasticsearch, the Dagster webserver and daemon (UI on http://127.0.0.1:PORT), the
    web catalog (http://127.0.0.1:WEB_PORT), a Jupyter server for its "Open in notebook"
    (http://127.0.0.1:NOTEBOOK_PORT, token-protected) and uploads the example measurements,
    which the sensor then processes.
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
                web_port=web_port,
                notebook_port=notebook_port,
            )
    except PlatformError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(EXIT_UNAVAILABLE)


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="address to listen on")
@click.option("--port", default=8080, show_default=True, help="TCP port of the web catalog")
@pass_context
def web(ctx: Context, host: str, port: int) -> None:
    """Serve the web catalog alone: upload, search, results, compare, start workflows.

    Uses EM2Q_ELASTICSEARCH_URL (else the cluster of a running `em2q dev`), EM2Q_STORAGE and
    the Dagster webserver at EM2Q_DAGSTER_URL; users and roles come from EM2Q_AUTH_MODE.
    """
    import uvicorn

    from em2q.web import create_app

    with surface_errors():
        app = create_app(ctx.settings, store=ctx.store)
    click.echo(f"Web catalog: http://{host}:{port} (Ctrl-C stops it)", err=True)
    # the real peer address, not X-Forwarded-For: header mode trusts proxies by address
    uvicorn.run(app, host=host, port=port, log_level="warning", proxy_headers=False)


@main.command("setup")
@pass_context
def setup(ctx: Context) -> None:
    """Set the metadata store up: create or upgrade the indices from the Thrift IDL and save the
    processing core's defaults as parameter set `default` if none is saved (admins; safe to run
    again, e.g. as a deployment's post-install step). `em2q dev` and `em2q metadata-serve` do it
    themselves."""
    from em2q_resources import parameter_sets as ps
    from em2q_resources.connections import set_up_metadata_store

    with surface_errors():
        require(ctx.user, Action.PUBLISH_WORKFLOW)
        set_up_metadata_store(ctx.store)
        saved = ps.resolve(ctx.store, ps.DEFAULT_NAME)
    click.echo(f"indices {ctx.settings.index_prefix}-* ready; parameter set {saved.id} in use")


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
    from em2q.connect import connect
    from em2q.thrift_service import serve
    from em2q_resources.auth import Authenticator
    from em2q_resources.connections import (
        SERVER_REQUEST_TIMEOUT_S,
        dev_url_file,
        open_metadata_store,
        set_up_metadata_store,
    )
    from em2q_resources.elasticsearch_server import elasticsearch_url

    settings = ctx.settings
    recorded = dev_url_file(settings)  # serve the cluster of a running `em2q dev`, if any
    if not settings.elasticsearch_url and recorded.exists():
        settings = settings.with_overrides(
            elasticsearch_url=recorded.read_text(encoding="utf-8").strip()
        )
    with surface_errors(), elasticsearch_url(settings) as url:
        settings = settings.with_overrides(elasticsearch_url=url)
        store = open_metadata_store(settings, request_timeout_s=SERVER_REQUEST_TIMEOUT_S)
        connections = connect(settings, store=store)  # a server's store: longer timeouts
        set_up_metadata_store(connections.store)

        def ready(server) -> None:
            click.echo(
                f"MetadataService listening on {server.host}:{server.port} "
                f"(Elasticsearch {url}, indices {settings.index_prefix}-*); Ctrl-C stops it",
                err=True,
            )

        serve(
            connections.store, host, port, ready=ready,
            authenticator=Authenticator.from_settings(settings), storage=connections.storage,
        )  # fmt: skip


main.add_command(export_argo)
