"""The ``em2q`` command line: one entry point for technicians, data scientists and admins.

Exit codes scripts can rely on:

\b
  0  success
  1  the command ran but found a problem: not found, invalid input, a result not processed
     yet, a workflow that finished with failures
  2  usage error (unknown option, bad filter syntax, bad EM2Q_AUTH_MODE configuration)
  3  a backend did not answer: Elasticsearch, storage or the Dagster webserver
  4  refused: not signed in, or your role may not do this (the message says which role may)
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import click

from argo_bridge.cli import export_argo
from em2q.client import DeletionRefused, delete_measurement, deletion_plan
from em2q.connect import connect
from em2q.dagster_api import DagsterAPI, DagsterError, DagsterUnavailable, WorkflowStatus
from em2q.filters import FilterSyntaxError, parse_filters
from em2q.results import MeasurementResults, ResultNotReady
from em2q_resources import lifecycle
from em2q_resources import parameter_sets as ps
from em2q_resources import workflows as wf
from em2q_resources.auth import Action, Authenticator, AuthError, User, require
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
from em2q_resources.policy import parameter_set_author
from em2q_resources.settings import Settings
from em2q_resources.storage import UnsafeKey

EXIT_PROBLEM, EXIT_USAGE, EXIT_UNAVAILABLE, EXIT_REFUSED = 1, 2, 3, 4


def _fail(message: str, code: int) -> None:
    click.echo(f"error: {message}", err=True)
    sys.exit(code)


@contextmanager
def surface_errors() -> Iterator[None]:
    """Turn errors into messages and exit codes at the surface, nowhere else."""
    try:
        yield
    except AuthError as exc:
        _fail(f"refused: {exc}", EXIT_REFUSED)
    except (SchemaViolation, UnsafeKey) as exc:
        _fail(f"invalid input: {exc}", EXIT_PROBLEM)
    except DeletionRefused as exc:
        _fail(f"refused: {exc}", EXIT_PROBLEM)
    except (DocumentNotFound, ResultNotReady, wf.UnknownWorkflow) as exc:
        _fail(str(exc), EXIT_PROBLEM)
    except ps.InvalidParameterSet as exc:
        _fail(f"invalid parameters: {exc}", EXIT_PROBLEM)
    except (StoreUnavailable, ElasticsearchSetupError, DagsterUnavailable) as exc:
        _fail(str(exc), EXIT_UNAVAILABLE)
    except (MetadataError, DagsterError) as exc:
        _fail(str(exc), EXIT_PROBLEM)


class Context:
    def __init__(self) -> None:
        self.settings = Settings.from_env()
        self.connections = connect(self.settings)
        self.token: str | None = None
        self._user: User | None = None

    @property
    def store(self) -> MetadataStore:
        return self.connections.store

    @property
    def user(self) -> User:
        """Who runs the command: the API token's user (token mode), else the local user."""
        if self._user is None:
            try:
                authenticator = Authenticator.from_settings(self.settings)
            except ValueError as exc:
                _fail(str(exc), EXIT_USAGE)
            headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
            self._user = authenticator.authenticate(headers)
        return self._user

    def require(self, action: Action) -> User:
        return require(self.user, action)

    def storage(self):
        return self.connections.storage

    def dagster(self) -> DagsterAPI:
        return self.connections.dagster


pass_context = click.make_pass_decorator(Context, ensure=True)
json_option = click.option("--json", "as_json", is_flag=True, help="machine-readable output")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--token",
    default=None,
    help="API token (EM2Q_AUTH_MODE=token); also read from EM2Q_TOKEN",
)
@click.pass_context
def main(click_context: click.Context, token: str | None) -> None:
    context = click_context.ensure_object(Context)
    context.token = token or context.settings.api_token


main.help = (
    "EM²Q: share, process and compare imaging mass spectrometry data.\n\n"
    "Backends come from EM2Q_* environment variables (EM2Q_ELASTICSEARCH_URL, EM2Q_STORAGE, "
    "EM2Q_DAGSTER_URL …); without them the commands talk to the platform started by `em2q dev` "
    "/ `make run`.\n\n"
    "Roles (EM2Q_AUTH_MODE=local: you, as EM2Q_LOCAL_ROLE, default admin; =token: the user of "
    "--token): technicians read, upload and run published workflows; scientists also save "
    "parameter sets; admins also publish workflows and delete.\n\n" + __doc__.split("\n\n", 1)[1]
)


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
    try:
        return parse_filters(filters)
    except FilterSyntaxError as exc:
        raise click.BadParameter(str(exc)) from None


@main.command()
@click.argument("text", required=False)
@click.option("-f", "--filter", "filters", multiple=True, help="field=value, field>=x, field<=y")
@click.option("--facet", "facets", multiple=True, help="count values of a field, e.g. status")
@click.option("--sort", "sort", multiple=True, help="field or -field (descending)")
@click.option("--limit", default=20, show_default=True)
@json_option
@pass_context
def search(ctx: Context, text, filters, facets, sort, limit, as_json) -> None:
    """Search measurements: full TEXT plus filters on any schema field.

    Example: em2q search kidney -f settings.polarity=POSITIVE -f settings.resolving_power>=1e5
    --facet settings.analyzer
    """
    schema = load_schema()
    with surface_errors():
        ctx.require(Action.READ)
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
@json_option
@pass_context
def show(ctx: Context, measurement_id: str, as_json: bool) -> None:
    """Show one measurement's metadata (as JSON; --json: on one line)."""
    with surface_errors():
        ctx.require(Action.READ)
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
    storage (EM2Q_STORAGE, EM2Q_S3_ENDPOINT_URL) did not answer. Any role may upload.
    """
    from em2q.upload import UploadError, upload_measurement
    from em2q_resources.storage import StorageUnavailable

    storage = ctx.storage()
    with surface_errors():
        ctx.require(Action.UPLOAD)
    try:
        with surface_errors():
            measurement = upload_measurement(
                imzml, ibd_path=ibd, setup=setup_file, store=ctx.store, storage=storage,
                operator=operator, progress=True, uploaded_by=ctx.user.name,
                cache_dir=ctx.settings.cache_dir / "imzml-index", dagster=ctx.dagster(),
            )  # fmt: skip
    except UploadError as exc:
        _fail(str(exc), EXIT_PROBLEM)
    except StorageUnavailable as exc:
        _fail(str(exc), EXIT_UNAVAILABLE)
    except OSError as exc:  # e.g. no permission to write into the storage folder
        _fail(f"storage {storage.root}: {exc}", EXIT_PROBLEM)
    click.echo(json.dumps(to_document(measurement)) if as_json else measurement.id)


@main.group()
def params() -> None:
    """Named, versioned, immutable processing parameter sets (saving: scientists and admins)."""


@params.command("list")
@json_option
@pass_context
def params_list(ctx: Context, as_json: bool) -> None:
    """List saved parameter sets (newest version of each name first)."""
    schema = load_schema()
    with surface_errors():
        ctx.require(Action.READ)
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
@json_option
@pass_context
def params_show(ctx: Context, name_or_id: str, as_json: bool) -> None:
    """Show a parameter set (NAME gives its newest version, NAME@vN a given one)."""
    with surface_errors():
        ctx.require(Action.READ)
        saved = ctx.store.get_parameter_set(name_or_id)
    click.echo(json.dumps(ps.describe(saved), indent=None if as_json else 2))


@params.command("save")
@click.argument("name")
@click.argument("values_file", type=click.Path(exists=True, dir_okay=False))
@click.option(
    "--author", default=None, help="must be you, if given: the author is who is signed in"
)
@click.option("--comment", default=None, help="why: what these values change")
@json_option
@pass_context
def params_save(
    ctx: Context, name: str, values_file: str, author: str | None, comment: str | None,
    as_json: bool,
) -> None:  # fmt: skip
    """Save VALUES_FILE ({step: {name: value}}, JSON or YAML) as parameter set NAME.

    Prints the id (NAME@vN). The same values as a saved version return that version; new
    values a new version; saved versions never change. Scientists and admins only.
    """
    from em2q.setup_file import SetupFileError, load_yaml_file

    try:
        values = load_yaml_file(values_file)
    except SetupFileError as exc:
        _fail(str(exc), EXIT_PROBLEM)
    with surface_errors():
        user = ctx.require(Action.SAVE_PARAMETER_SET)
        author = parameter_set_author(user, author)
        try:
            ps.validate(values)
        except ps.InvalidParameterSet as exc:
            _fail(f"invalid parameters in {values_file}: {exc}", EXIT_PROBLEM)
        saved = ps.save(ctx.store, name, values, author=author, comment=comment)
    if as_json:
        click.echo(json.dumps(ps.describe(saved)))
    else:
        click.echo(saved.id)


@params.command("diff")
@click.argument("first")
@click.argument("second")
@json_option
@pass_context
def params_diff(ctx: Context, first: str, second: str, as_json: bool) -> None:
    """Show the values that differ between two parameter sets (as the steps run them: a name
    one set leaves out counts with its default)."""
    with surface_errors():
        ctx.require(Action.READ)
        a = ps.normalise(ps.values_from_documents(ctx.store.get_parameter_set(first).values))
        b = ps.normalise(ps.values_from_documents(ctx.store.get_parameter_set(second).values))
    changes = []
    for step in sorted(set(a) | set(b)):
        for name in sorted(set(a.get(step, {})) | set(b.get(step, {}))):
            left, right = a.get(step, {}).get(name), b.get(step, {}).get(name)
            if left != right:
                changes.append({"parameter": f"{step}.{name}", first: left, second: right})
                if not as_json:
                    click.echo(f"{step}.{name}: {left!r} -> {right!r}")
    if as_json:
        click.echo(json.dumps(changes))


# ---------------------------------------------------------------------- workflows and runs


def _progress_counts(status: WorkflowStatus) -> tuple[int, int]:
    """(finished, targeted) asset partitions of a backfill."""
    targeted = sum(c["targeted"] for c in status.assets.values())
    finished = sum(c["materialized"] + c["failed"] for c in status.assets.values())
    return finished, targeted


@main.command()
@click.argument("measurement_id")
@click.option(
    "-w", "--workflow", default="standard", show_default=True,
    help=f"one of {', '.join(wf.WORKFLOWS)} (`em2q workflows list`)",
)  # fmt: skip
@click.option(
    "-p", "--parameter-set", default=None, help="name (newest version) or NAME@vN; default: default"
)
@click.option("--wait", is_flag=True, help="follow the runs with a progress bar until they end")
@click.option("--timeout", default=3600, show_default=True, help="seconds --wait waits at most")
@json_option
@pass_context
def run(ctx: Context, measurement_id: str, workflow: str, parameter_set: str | None, wait: bool,
        timeout: int, as_json: bool) -> None:  # fmt: skip
    """Launch a WORKFLOW on MEASUREMENT_ID with a parameter set, through the Dagster webserver
    (EM2Q_DAGSTER_URL, default http://127.0.0.1:3000 as `em2q dev` runs it).

    Prints the launch id (a Dagster backfill) and its page in the Dagster UI. With --wait,
    shows progress until every run ended: exit 0 when all succeeded, 1 when some failed.
    Technicians may start published workflows; scientists and admins any workflow.

    Example: em2q run example-continuous --workflow reprocess --parameter-set strict --wait
    """
    with surface_errors():
        user = ctx.require(Action.START_WORKFLOW)
        api = ctx.dagster()
        launch_id = api.launch_workflow(workflow, measurement_id, parameter_set, user)
        url = api.ui_url_for_run(launch_id)
        if not wait:
            if as_json:
                click.echo(json.dumps({"id": launch_id, "url": url, "workflow": workflow}))
            else:
                click.echo(f"{launch_id}  {workflow} on {measurement_id}: {url}")
            return
        if not as_json:
            click.echo(f"{launch_id}  {workflow} on {measurement_id}: {url}", err=True)
        _follow(api, launch_id, timeout, as_json)


def _follow(api: DagsterAPI, launch_id: str, timeout_s: int, as_json: bool) -> None:
    """Wait for a launch to end, report it, exit 0 when every run succeeded, else 1."""
    try:
        status = _wait_with_progress(api, launch_id, timeout_s, show=not as_json)
    except TimeoutError as exc:
        _fail(f"{exc}; it goes on in Dagster: {api.ui_url_for_run(launch_id)}", EXIT_PROBLEM)
    if as_json:
        click.echo(json.dumps(status.to_dict()))
    else:
        failed = [r.run_id for r in status.runs if r.status != "SUCCESS"]
        click.echo(f"{launch_id}: {status.status} ({len(status.runs)} runs, {len(failed)} failed)")
        for run_id in failed:
            click.echo(f"  failed: {api.ui_url_for_run(run_id)}")
    sys.exit(0 if status.ok else EXIT_PROBLEM)


@main.command("wait")
@click.argument("launch_id")
@click.option("--timeout", default=3600, show_default=True, help="seconds to wait at most")
@json_option
@pass_context
def wait_command(ctx: Context, launch_id: str, timeout: int, as_json: bool) -> None:
    """Follow LAUNCH_ID (from `em2q run`, the web catalog or a notebook) with a progress bar
    until its runs end: exit 0 when all succeeded, 1 when some failed or it was cancelled."""
    with surface_errors():
        ctx.require(Action.READ)
        _follow(ctx.dagster(), launch_id, timeout, as_json)


def _wait_with_progress(api: DagsterAPI, launch_id: str, timeout_s: int, show: bool):
    """Wait for the launch to end; with ``show``, a progress bar of asset partitions on stderr."""
    if not show:
        return api.wait(launch_id, timeout_s=timeout_s)
    total = max(1, _progress_counts(api.run_status(launch_id))[1])
    with click.progressbar(length=total, label="asset partitions", file=sys.stderr) as bar:
        done = 0

        def advance(status: WorkflowStatus) -> None:
            nonlocal done
            finished = _progress_counts(status)[0]
            bar.update(finished - done)
            done = finished

        return api.wait(launch_id, timeout_s=timeout_s, on_progress=advance)


@main.command()
@click.argument("measurement_id")
@click.option(
    "-p", "--parameter-set", default=None, help="QC verdict of this set (default: default)"
)
@click.option("--runs", "run_count", default=5, show_default=True, help="how many recent runs")
@json_option
@pass_context
def status(ctx: Context, measurement_id: str, parameter_set: str | None, run_count: int,
           as_json: bool) -> None:  # fmt: skip
    """A measurement's status, QC verdict, available results and last runs (with links into
    the Dagster UI for lineage and logs)."""
    schema = load_schema()
    with surface_errors():
        ctx.require(Action.READ)
        doc = ctx.store.get(schema.Measurement, measurement_id).doc
        reason = lifecycle.reason_of(doc)
        results = MeasurementResults(
            measurement_id, parameter_set, store=ctx.store, storage=ctx.storage()
        )
        try:
            report: dict[str, Any] | None = results.qc_report()
            not_ready = None
        except ResultNotReady as exc:
            report, not_ready = None, str(exc)
        available = results.available()
        runs = _recent_runs(results.runs(), run_count, ctx.settings.dagster_url)
    summary = {
        "id": measurement_id,
        "status": schema.MeasurementStatus._VALUES_TO_NAMES[doc.status],
        "status_reason": doc.status_reason,
        "status_detail": to_document(doc.status_detail) if doc.status_detail else None,
        "next": reason.advice(measurement_id) if reason else None,
        "parameter_set": results.parameters.id,
        "qc": None if report is None else {"ok": report["ok"], "checks": report.get("checks", [])},
        "qc_missing": not_ready,
        "results": available,
        "runs": runs,
    }
    if as_json:
        click.echo(json.dumps(summary))
        return
    click.echo(f"{measurement_id}: {summary['status']}  {doc.status_reason or ''}".rstrip())
    if reason is not None:
        if reason.error_type and reason.error_message:
            click.echo(f"root error: {reason.error_type}: {reason.error_message}")
        if reason.run_url:
            click.echo(f"run: {reason.run_url}")
        click.echo(f"next: {summary['next']}")
    if report is None and summary["status"] == "FAILED":
        click.echo("QC: none (the processing failed, see above)")
    elif report is None:
        click.echo(f"QC: {not_ready}")
    else:
        verdict = "good enough to analyse" if report["ok"] else "NOT good enough"
        click.echo(f"QC ({results.parameters.id}): {verdict}")
        for check in report.get("checks", []):
            mark = {True: "pass", False: "FAIL", None: "n/a"}[check.get("passed")]
            value = check.get("value")
            shown = "n/a" if value is None else f"{value:.4g}"
            click.echo(
                f"  {mark:<4} {check['name']} = {shown} "
                f"(needs {check.get('comparison')} {check.get('threshold')})"
            )
    click.echo("results: " + (", ".join(a for a, ok in available.items() if ok) or "none yet"))
    if runs:
        click.echo(_table(runs, ["run_id", "status", "started", "assets", "url"]))


def _recent_runs(records: list, count: int, dagster_url: str) -> list[dict]:
    """WorkflowRun records grouped by Dagster run, newest first."""
    schema = load_schema()
    by_run: dict[str, dict] = {}
    for record in records:
        entry = by_run.setdefault(
            record.run_id,
            {"run_id": record.run_id, "status": "SUCCEEDED", "started": record.started_at or "",
             "assets": [], "parameter_set": record.parameter_set_id,
             "url": f"{dagster_url}/runs/{record.run_id}"},
        )  # fmt: skip
        if record.workflow not in entry["assets"]:
            entry["assets"].append(record.workflow)
        if record.status != schema.RunStatus.SUCCEEDED:
            entry["status"] = schema.RunStatus._VALUES_TO_NAMES[record.status]
        entry["started"] = min(entry["started"], record.started_at or entry["started"])
    runs = sorted(by_run.values(), key=lambda r: r["started"], reverse=True)[:count]
    for entry in runs:
        entry["started"] = entry["started"][:19]
        entry["assets"] = ",".join(entry["assets"])
    return runs


@main.group()
def workflows() -> None:
    """The predefined workflows: list them, publish one for technicians (admins)."""


@workflows.command("list")
@json_option
@pass_context
def workflows_list(ctx: Context, as_json: bool) -> None:
    """Every code-defined workflow, whether it is published and whether you may start it."""
    with surface_errors():
        user = ctx.require(Action.READ)
        published = wf.published(ctx.store)
        yours = {w.name for w in wf.startable(ctx.store, user)} if _may_start(user) else set()
    rows = []
    for definition in wf.WORKFLOWS.values():
        doc = published.get(definition.name)
        rows.append({
            "name": definition.name,
            "published": doc is not None,
            "published_by": doc.published_by if doc else "",
            "published_at": (doc.published_at or "")[:19] if doc else "",
            "you_may_start": definition.name in yours,
            "assets": list(definition.assets),
            "description": definition.description,
        })  # fmt: skip
    if as_json:
        click.echo(json.dumps(rows))
        return
    shown = [{**r, "assets": len(r["assets"]), "description": r["description"][:60]} for r in rows]
    click.echo(
        _table(
            shown, ["name", "published", "published_by", "you_may_start", "assets", "description"]
        )
    )


def _may_start(user: User) -> bool:
    from em2q_resources.auth import allowed

    return allowed(user, Action.START_WORKFLOW)


@workflows.command("publish")
@click.argument("name")
@click.option("--description", default=None, help="what technicians read (default: the code's)")
@json_option
@pass_context
def workflows_publish(ctx: Context, name: str, description: str | None, as_json: bool) -> None:
    """Publish the code-defined workflow NAME so technicians may start it (admins only)."""
    with surface_errors():
        doc = wf.publish(ctx.store, name, ctx.user, description=description)
    click.echo(json.dumps(to_document(doc)) if as_json else f"published {name}")


@workflows.command("unpublish")
@click.argument("name")
@pass_context
def workflows_unpublish(ctx: Context, name: str) -> None:
    """Withdraw workflow NAME from technicians (admins only)."""
    with surface_errors():
        wf.unpublish(ctx.store, name, ctx.user)
    click.echo(f"unpublished {name}")


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
@click.argument("measurement_id")
@click.option("--yes", is_flag=True, help="do not ask for confirmation")
@click.option("--dry-run", is_flag=True, help="list what would be removed, remove nothing")
@json_option
@pass_context
def delete(ctx: Context, measurement_id: str, yes: bool, dry_run: bool, as_json: bool) -> None:
    """Delete MEASUREMENT_ID everywhere: its files and results in storage (only under
    measurements/ID/ and results/ID/), its run records and its catalog entry (admins only;
    cannot be undone). Refused when any of those files belongs to another measurement."""
    with surface_errors():
        user = ctx.require(Action.DELETE)
        plan = deletion_plan(ctx.store, ctx.storage(), measurement_id, user)
        if dry_run:
            if as_json:
                click.echo(json.dumps({"dry_run": True, **plan.to_dict()}))
            else:
                click.echo(f"would delete {measurement_id}:")
                for line in plan.files + plan.to_dict()["records"]:
                    click.echo(f"  {line}")
                click.echo(f"({len(plan.files)} files, {len(plan.records)} records; dry run)")
            return
        if not yes:
            click.confirm(f"delete {measurement_id} with its files and results?", abort=True)
        removed = delete_measurement(ctx.store, ctx.storage(), measurement_id, user)
    if as_json:
        click.echo(json.dumps({"deleted": measurement_id, **removed}))
    else:
        click.echo(
            f"deleted {measurement_id} ({removed['files']} files, {removed['records']} records)"
        )


@main.command()
@click.option(
    "--once", is_flag=True, help="no Dagster: set up, upload the examples, print the catalog, exit"
)
@click.option("--examples", type=click.Path(exists=True, file_okay=False), default=None)
@click.option("--port", default=3000, show_default=True, help="port of the Dagster UI")
@click.option("--web-port", default=8080, show_default=True, help="port of the web catalog")
@pass_context
def dev(ctx: Context, once: bool, examples: str | None, port: int, web_port: int) -> None:
    """Run the platform locally on its embedded defaults with the example data.

    Starts Elasticsearch, the Dagster webserver and daemon (UI on http://127.0.0.1:PORT), the
    web catalog (http://127.0.0.1:WEB_PORT) and uploads the example measurements, which the
    sensor then processes.
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

if __name__ == "__main__":
    main()
