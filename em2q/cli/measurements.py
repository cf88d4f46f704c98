"""Measurements: search the catalog, show, upload, follow the status, delete."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

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
from em2q.filters import FilterSyntaxError, parse_filters
from em2q_resources.auth import Action


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
@click.option(
    "--mz", type=float, default=None, help="only measurements whose peak table holds this m/z"
)
@click.option("--ppm", type=float, default=3.0, show_default=True, help="m/z tolerance (with --mz)")
@click.option(
    "--min-tic-fraction",
    type=float,
    default=0.0,
    show_default=True,
    help="the peak's share of the TIC at least this (0.01: 1 %; with --mz)",
)
@json_option
@pass_context
def search(ctx: Context, text, filters, facets, sort, limit, mz, ppm, min_tic_fraction,
           as_json) -> None:  # fmt: skip
    """Search measurements: full TEXT plus filters on any schema field, or by m/z.

    Example: em2q search kidney -f settings.polarity=POSITIVE -f settings.resolving_power>=1e5
    --facet settings.analyzer

    By m/z: em2q search --mz 760.5851 --ppm 3 --min-tic-fraction 0.01 (facets on instrument,
    organ, condition … unless --facet names others).
    """
    from em2q_resources.metadata.schema import load_schema, to_document

    schema = load_schema()
    sort_by = [(s[1:], True) if s.startswith("-") else s for s in sort]
    matches: dict = {}
    with surface_errors():
        ctx.require(Action.READ)
        if mz is None:
            page = ctx.store.search(
                schema.Measurement,
                text=text,
                filters=_parse_filters(filters),
                facets=list(facets),
                sort=sort_by,
                page_size=limit,
            )
        else:
            from em2q_resources.metadata.peak_index import search_mz

            found = search_mz(
                ctx.store, mz, ppm, min_tic_fraction, text=text, filters=_parse_filters(filters),
                facets=list(facets) or None, sort=sort_by, page_size=limit,
            )  # fmt: skip
            page, matches = found.page, found.matches
    docs = [to_document(m) for m in page.hits]
    if as_json:
        answer = {"total": page.total, "hits": docs, "facets": page.facets}
        if mz is not None:
            answer["matches"] = {k: vars(v) for k, v in matches.items()}
        click.echo(json.dumps(answer))
        return
    rows = [_measurement_row(d) for d in docs]
    for row in rows:
        if row["id"] in matches:
            match = matches[row["id"]]
            row["m/z"] = f"{match.mz:.4f} ({match.ppm_error:+.1f} ppm)"
            row["% TIC"] = f"{100 * match.tic_fraction:.2f}"
    click.echo(_table(rows, list(rows[0]) if rows else ["id"]))
    click.echo(f"{len(docs)} of {page.total} measurements")
    for field, buckets in page.facets.items():
        click.echo(f"{field}: " + ", ".join(f"{v} ({c})" for v, c in buckets))


@main.command()
@click.argument("measurement_id")
@json_option
@pass_context
def show(ctx: Context, measurement_id: str, as_json: bool) -> None:
    """Show one measurement's metadata (as JSON; --json: on one line)."""
    from em2q_resources.metadata.schema import load_schema, to_document

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
@click.option(
    "--optical", "optical_image", default=None, type=click.Path(exists=True, dir_okay=False),
    help="an optical/histology image (PNG, JPEG, TIFF) stored with the measurement",
)  # fmt: skip
@click.option("--json", "as_json", is_flag=True, help="print the Measurement document as JSON")
@pass_context
def upload(ctx: Context, imzml: str, ibd: str | None, setup_file: str, operator: str | None,
           optical_image: str | None, as_json: bool) -> None:  # fmt: skip
    """Validate IMZML (+ its .ibd) and the setup, copy them into storage, register them.

    Prints the new measurement id. Exit 1 lists every problem of the files or the setup, or
    names the measurement these files were already uploaded as; exit 3: Elasticsearch or
    storage (EM2Q_STORAGE, EM2Q_S3_ENDPOINT_URL) did not answer. Any role may upload.
    """
    from em2q.upload import UploadError, upload_measurement
    from em2q_resources.metadata.schema import to_document

    with surface_errors():
        ctx.require(Action.UPLOAD)
    optical_bytes = None
    if optical_image is not None:  # checked before the measurement is uploaded
        from em2q_msi.optical import OpticalImageError, decode

        optical_bytes = Path(optical_image).read_bytes()
        try:
            decode(optical_bytes)
        except OpticalImageError as exc:
            _fail(f"invalid input: --optical {optical_image}: {exc}", EXIT_PROBLEM)
    try:
        with surface_errors():
            measurement = upload_measurement(
                imzml, ibd_path=ibd, setup=setup_file,
                store=lambda: ctx.store, storage=ctx.storage, dagster=ctx.dagster,  # opened once
                # the files are valid; the upload then requests its own ingest run
                operator=operator, progress=True, uploaded_by=ctx.user.name,
                cache_dir=ctx.settings.cache_dir / "imzml-index",
            )  # fmt: skip
    except UploadError as exc:
        _fail(str(exc), EXIT_PROBLEM)
    except OSError as exc:  # e.g. no permission to write into the storage folder
        _fail(f"storage {ctx.storage().root}: {exc}", EXIT_PROBLEM)
    if optical_bytes is not None:
        from em2q_resources import optical

        with surface_errors():
            optical.save_image(
                ctx.store, ctx.storage(), ctx.user, measurement.id, optical_bytes,
                Path(optical_image).name,
            )  # fmt: skip
    click.echo(json.dumps(to_document(measurement)) if as_json else measurement.id)


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
    from em2q.results import MeasurementResults, ResultNotReady
    from em2q_resources import lifecycle
    from em2q_resources.metadata.schema import load_schema, to_document

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
    from em2q_resources.metadata.schema import load_schema

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
    from em2q.client import delete_measurement, deletion_plan

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
