"""``em2q study``: define studies, follow their comparison, export their feature matrices."""

from __future__ import annotations

import json

import click

from em2q.cli.base import Context, _table, json_option, main, pass_context, surface_errors
from em2q_resources.auth import Action

#: what a member deleted from the catalog shows instead of its group
MISSING = "(member missing: deleted from the catalog)"


@main.group()
def study() -> None:
    """Studies: measurements compared between groups (reference peaks, alignment, statistics)."""


@study.command("create")
@click.argument("study_id")
@click.option("--member", "members", multiple=True, help="a measurement id (repeat the option)")
@click.option(
    "--design", "design", multiple=True, default=("sample.condition",), show_default=True,
    help="a measurement field whose values are the groups (repeat for combined groups)",
)  # fmt: skip
@click.option("--parameter-set", default="default", show_default=True,
              help="whose `study` values (tolerances, normalisation, test) compare them")  # fmt: skip
@click.option("--title", default=None)
@click.option("--description", default=None)
@click.option("--roi", "roi_items", multiple=True, metavar="MEASUREMENT:ROI=GROUP",
              help="compare ROIs instead of measurements: each ROI's mean is a replicate of "
              "GROUP (repeat; replaces --member and --design)")  # fmt: skip
@json_option
@pass_context
def study_create(
    ctx: Context, study_id: str, members: tuple[str, ...], design: tuple[str, ...],
    parameter_set: str, title: str | None, description: str | None,
    roi_items: tuple[str, ...], as_json: bool,
) -> None:  # fmt: skip
    """Define STUDY_ID: its members, its design and its parameter set."""
    from em2q_resources import studies

    rois = [_roi_item(item) for item in roi_items]
    with surface_errors():
        user = ctx.require(Action.START_WORKFLOW)
        doc = studies.create(
            ctx.store, study_id, title=title or study_id, design=[] if rois else list(design),
            members=list(members), parameter_set=parameter_set, description=description,
            author=user.name, rois=rois or None,
        )  # fmt: skip
    _echo_study(ctx, doc, as_json)


def _roi_item(item: str) -> tuple[str, str, str]:
    where, _, group = item.partition("=")
    measurement, _, roi = where.partition(":")
    if not (measurement and roi and group):
        raise click.BadParameter(f"{item!r}: write MEASUREMENT:ROI=GROUP", param_hint="--roi")
    return measurement, roi, group


@study.command("add")
@click.argument("study_id")
@click.argument("members", nargs=-1, required=True)
@json_option
@pass_context
def study_add(ctx: Context, study_id: str, members: tuple[str, ...], as_json: bool) -> None:
    """Add MEMBERS (measurement ids) to STUDY_ID; the next run aligns only them."""
    from em2q_resources import studies

    with surface_errors():
        ctx.require(Action.START_WORKFLOW)
        doc = studies.add_members(ctx.store, study_id, list(members))
    _echo_study(ctx, doc, as_json)


@study.command("show")
@click.argument("study_id")
@json_option
@pass_context
def study_show(ctx: Context, study_id: str, as_json: bool) -> None:
    """Show STUDY_ID: members and their groups, and which results are computed."""
    from em2q_resources import studies

    with surface_errors():
        ctx.require(Action.READ)
        doc = studies.get(ctx.store, study_id)
    _echo_study(ctx, doc, as_json)


def _status(ctx: Context, study_id: str) -> dict:
    from em2q.study_results import STUDY_ASSETS, StaleStudyResult, current_manifests
    from em2q_resources.results_layout import exists, study_manifest_key

    storage = ctx.storage()
    computed = {a: exists(storage, study_manifest_key(a, study_id)) for a in STUDY_ASSETS}
    state = "not computed"
    if all(computed.values()):
        try:
            current_manifests(ctx.store, storage, study_id)
            state = "current"
        except StaleStudyResult as exc:
            state = f"stale: {exc}"
    return {"computed": computed, "results": state}


def _echo_study(ctx: Context, doc, as_json: bool) -> None:
    from em2q_resources import studies
    from em2q_resources.metadata.schema import to_document

    with surface_errors():
        groups = studies.member_groups(ctx.store, doc)
        missing = studies.missing_members(ctx.store, doc)
        status = _status(ctx, doc.id)
    out = {**to_document(doc), "groups": groups, "missing_members": missing, **status}
    if as_json:
        click.echo(json.dumps(out))
        return
    click.echo(f"study {doc.id}: {doc.title}")
    click.echo(f"design: {', '.join(doc.design or [])}   parameter set: {doc.parameter_set}")
    click.echo(f"results: {status['results']}")
    rows = [
        {"member": m, "group": groups.get(m, MISSING)}
        for m in doc.member_ids or []
        if m in groups or m in missing
    ]
    click.echo(_table(rows, ["member", "group"]))
    if doc.rois:
        click.echo("replicates: each ROI's mean")
        roi_rows = [
            {"measurement": r.measurement_id, "roi": r.roi, "group": r.group} for r in doc.rois
        ]
        click.echo(_table(roi_rows, ["measurement", "roi", "group"]))


@study.command("run")
@click.argument("study_id")
@pass_context
def study_run(ctx: Context, study_id: str) -> None:
    """Materialize STUDY_ID's assets in Dagster (reference, alignment, comparison)."""
    from em2q_resources import studies

    with surface_errors():
        user = ctx.require(Action.START_WORKFLOW)
        studies.get(ctx.store, study_id)
        dagster = ctx.dagster()
        run_id = dagster.request_study(study_id, user)
    click.echo(f"run {run_id}: {dagster.ui_url_for_run(run_id)}")


@study.command("compare")
@click.argument("study_id")
@click.option("--contrast", default=None, help="one contrast ('B vs A'); default all")
@click.option("--max-q", type=float, default=None, help="only features with q ≤ this")
@click.option("--top", type=int, default=20, show_default=True, help="rows shown (by q-value)")
@click.option("--csv", "csv_path", type=click.Path(dir_okay=False), default=None,
              help="write the whole comparison table as CSV here")  # fmt: skip
@json_option
@pass_context
def study_compare(
    ctx: Context, study_id: str, contrast: str | None, max_q: float | None, top: int,
    csv_path: str | None, as_json: bool,
) -> None:  # fmt: skip
    """The comparison of STUDY_ID: per feature and contrast, fold change and q-value."""
    from em2q.study_results import comparison_table, current_manifests

    with surface_errors():
        ctx.require(Action.READ)
        found = current_manifests(ctx.store, ctx.storage(), study_id)
        table = comparison_table(ctx.storage(), found["study_comparison"])
    if contrast is not None:
        if contrast not in set(table["contrast"]):
            known = ", ".join(sorted(set(table["contrast"])))
            raise click.BadParameter(f"no contrast {contrast!r}; the study has {known}")
        table = table[table["contrast"] == contrast]
    if max_q is not None:
        table = table[table["q_value"] <= max_q]
    if csv_path:
        table.to_csv(csv_path, index=False)
        click.echo(f"wrote {len(table)} rows to {csv_path}")
        return
    shown = table.sort_values(["q_value", "p_value"], na_position="last").head(top)
    columns = ["contrast", "mz", "log2_fold_change", "p_value", "q_value", "significant"]
    if as_json:
        click.echo(shown[columns].to_json(orient="records"))
        return
    rows = [
        {**r, "mz": f"{r['mz']:.5f}", "log2_fold_change": f"{r['log2_fold_change']:.3g}",
         "p_value": f"{r['p_value']:.3g}", "q_value": f"{r['q_value']:.3g}"}
        for r in shown[columns].to_dict("records")
    ]  # fmt: skip
    click.echo(_table(rows, columns))


@study.command("export")
@click.argument("study_id")
@click.argument("path", type=click.Path())
@click.option("--format", "fmt", type=click.Choice(["h5ad", "imzml"]), default="h5ad",
              show_default=True,
              help="h5ad: one AnnData file at PATH (scverse); imzml: PATH is a folder, one "
              "centroided imzML per member (METASPACE, Cardinal)")  # fmt: skip
@click.option("--member", "members", multiple=True, help="only this member (repeat)")
@pass_context
def study_export(
    ctx: Context, study_id: str, path: str, fmt: str, members: tuple[str, ...]
) -> None:
    """Write STUDY_ID's pixels × features matrix at PATH: AnnData .h5ad, or centroided imzML."""
    from em2q.study_results import study_anndata, study_imzml, write_h5ad

    chosen = list(members) or None
    with surface_errors():
        ctx.require(Action.READ)
        if fmt == "imzml":
            written = study_imzml(ctx.store, ctx.storage(), study_id, path, chosen)
            for member, report in written.items():
                click.echo(
                    f"wrote {member}: {report.spectra} spectra, {report.peaks} peaks to "
                    f"{report.imzml_path}"
                )
            return
        adata = study_anndata(ctx.store, ctx.storage(), study_id, chosen)
        write_h5ad(adata, path)
    click.echo(f"wrote {adata.n_obs} pixels × {adata.n_vars} features to {path}")
