"""Provenance: verify stored results, list what a change made stale, rerun only that, and
print a result's reproducibility certificate (issue 17; the logic is ``em2q.provenance``)."""

from __future__ import annotations

import json
import sys

import click

from em2q.cli.base import (
    EXIT_PROBLEM,
    EXIT_USAGE,
    Context,
    _fail,
    _table,
    json_option,
    main,
    pass_context,
    surface_errors,
)
from em2q_resources.auth import Action


@main.command()
@click.argument("measurement_id", required=False)
@click.option("--asset", default=None, help="only the files of this asset")
@click.option("--all", "everything", is_flag=True, help="every measurement of the catalog")
@json_option
@pass_context
def verify(ctx: Context, measurement_id: str | None, asset: str | None, everything: bool,
           as_json: bool) -> None:  # fmt: skip
    """Re-hash the stored results of MEASUREMENT_ID (or --all) against the SHA-256 each run
    recorded when it wrote them; lists every file that changed or went missing (exit 1).

    Example: em2q verify example-continuous --asset peak_table
    """
    if (measurement_id is None) == (not everything):
        _fail("give a MEASUREMENT_ID or --all (not both)", EXIT_USAGE)
    with surface_errors():
        ctx.require(Action.READ)
        from tqdm import tqdm

        from em2q import provenance

        outputs = provenance.outputs_to_verify(ctx.store, measurement_id, asset)
        total = sum(o.size or 0 for _, o in outputs if o.sha256)
        with tqdm(total=total, unit="B", unit_scale=True, desc="verify", file=sys.stderr,
                  disable=as_json or None) as bar:  # fmt: skip
            found = provenance.verify(
                ctx.store, ctx.storage(), progress=bar.update, outputs=outputs
            )
    if as_json:
        click.echo(json.dumps(found.to_dict(), indent=1))
    else:
        for p in found.problems:
            click.echo(f"{p.problem.upper()}: {p.measurement_id} {p.asset} {p.partition} "
                       f"{p.name}: {p.uri}")  # fmt: skip
        click.echo(
            f"{found.checked} files checked ({found.bytes_read} bytes), "
            f"{len(found.problems)} changed or missing"
            + (
                f", {found.unrecorded} written before checksums were recorded"
                if found.unrecorded
                else ""
            )  # fmt: skip
        )
    if not found.ok:
        sys.exit(EXIT_PROBLEM)


@main.command()
@click.option(
    "-p", "--parameter-set", default=None, help="compare with this set (default: default)"
)
@click.option("--since-code-version", default=None, help="only results made with this code version")
@click.option("-m", "--measurement", "measurements", multiple=True, help="only these measurements")
@json_option
@pass_context
def stale(ctx: Context, parameter_set: str | None, since_code_version: str | None,
          measurements: tuple[str, ...], as_json: bool) -> None:  # fmt: skip
    """List the measurement × chunk partitions whose code, parameter set or inputs differ
    from what their results were made with, and the work a rerun would take (the recorded
    run times). `em2q reprocess --stale` reruns exactly these.

    Example: em2q stale --parameter-set strict
    """
    with surface_errors():
        ctx.require(Action.READ)
        from em2q import provenance

        report = provenance.stale(
            ctx.store, parameter_set, since_code_version, measurements or None
        )
    if as_json:
        click.echo(json.dumps(report.to_dict(), indent=1))
        return
    rows = provenance.as_rows(report)
    if rows:
        click.echo(_table(rows, ["measurement", "asset", "partition", "estimated_s", "why"]))
    click.echo(
        f"{report.count} stale partitions (parameter set {report.parameter_set_id}), "
        f"about {report.estimated_s:.1f} s of work"
    )


@main.command()
@click.option("--stale", "only_stale", is_flag=True, required=True,
              help="rerun the stale partitions (`em2q stale`) and nothing else")  # fmt: skip
@click.option("-p", "--parameter-set", default=None, help="name or NAME@vN (default: default)")
@click.option("-m", "--measurement", "measurements", multiple=True, help="only these measurements")
@click.option("--dry-run", is_flag=True, help="print what would be requested, request nothing")
@json_option
@pass_context
def reprocess(ctx: Context, only_stale: bool, parameter_set: str | None,
              measurements: tuple[str, ...], dry_run: bool, as_json: bool) -> None:  # fmt: skip
    """Request runs (one Dagster backfill per measurement, through the webserver) for exactly
    the stale partitions; results of unchanged data are not touched.

    Example: em2q reprocess --stale --parameter-set default
    """
    with surface_errors():
        user = ctx.require(Action.START_WORKFLOW)
        from em2q import provenance

        report = provenance.stale(ctx.store, parameter_set, None, measurements or None)
        plan = provenance.reprocess_plan(report)
        launched = {}
        if not dry_run:
            api = ctx.dagster()
            for measurement_id, partitions in plan.items():
                launched[measurement_id] = api.launch_partitions(
                    measurement_id, partitions, report.parameter_set_id, user, "reprocess stale"
                )
    if as_json:
        click.echo(json.dumps({"plan": plan, "launched": launched}, indent=1))
        return
    for measurement_id, partitions in plan.items():
        what = ", ".join(f"{a} ×{len(keys)}" for a, keys in partitions.items())
        where = launched.get(measurement_id, "dry run")
        click.echo(f"{measurement_id}: {what}  [{where}]")
    click.echo(f"{report.count} partitions requested, about {report.estimated_s:.1f} s of work")


@main.command()
@click.argument("result")
@click.option("-p", "--parameter-set", default=None, help="name or NAME@vN (default: default)")
@click.option("--rerun", is_flag=True, help="recompute from the raw files in a scratch place "
              "and compare bytes")  # fmt: skip
@json_option
@pass_context
def certificate(ctx: Context, result: str, parameter_set: str | None, rerun: bool,
                as_json: bool) -> None:  # fmt: skip
    """The reproducibility certificate of RESULT (MEASUREMENT/ASSET, e.g.
    example-continuous/peak_table): the uploaded files' checksums, then every step that made
    it (code version, parameter hash, engine, run id, output checksums), each file re-hashed.
    Exit 1 when a file is not what was recorded (or, with --rerun, not what a rerun makes).
    """
    measurement_id, _, asset = result.partition("/")
    if not asset:
        _fail(f"RESULT is MEASUREMENT/ASSET (e.g. {result}/peak_table)", EXIT_USAGE)
    with surface_errors():
        ctx.require(Action.START_WORKFLOW if rerun else Action.READ)
        from em2q import provenance

        try:
            certified = provenance.certificate(
                ctx.store, ctx.storage(), measurement_id, asset, parameter_set
            )
            if rerun:
                provenance.rerun(certified, ctx.store, ctx.storage(), ctx.settings)
        except (provenance.NoSuchResult, KeyError) as exc:
            _fail(str(exc).strip('"'), EXIT_PROBLEM)
    if as_json:
        click.echo(json.dumps(certified.to_dict(), indent=1))
    else:
        click.echo(provenance.format_certificate(certified))
    if not certified.ok:
        sys.exit(EXIT_PROBLEM)
