"""Workflows: launch one on a measurement, follow it, publish workflows for technicians."""

from __future__ import annotations

import json
import sys
from typing import TYPE_CHECKING

import click

from em2q.cli.base import (
    EXIT_PROBLEM,
    Context,
    _fail,
    _table,
    json_option,
    main,
    pass_context,
    surface_errors,
)
from em2q_resources import workflows as wf
from em2q_resources.auth import Action, User

if TYPE_CHECKING:
    from em2q.dagster_api import DagsterAPI, WorkflowStatus


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
    from em2q_resources.metadata.schema import to_document

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
