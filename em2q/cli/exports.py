"""``em2q export``: a measurement's processed results in the formats other tools read."""

from __future__ import annotations

import click

from em2q.cli.base import Context, main, pass_context, surface_errors
from em2q_resources.auth import Action


@main.command("export")
@click.argument("measurement_id")
@click.argument("path", type=click.Path(dir_okay=False))
@click.option("--format", "fmt", type=click.Choice(["imzml", "h5ad"]), default="imzml",
              show_default=True,
              help="imzml: centroided imzML (processed mode, .ibd beside it) for METASPACE or "
              "Cardinal; h5ad: AnnData (scverse)")  # fmt: skip
@click.option("--parameter-set", default=None, help="whose peak table (default: default)")
@pass_context
def export(
    ctx: Context, measurement_id: str, path: str, fmt: str, parameter_set: str | None
) -> None:
    """Write MEASUREMENT_ID's peak table (spectra × features) at PATH."""
    from em2q.study_results import measurement_anndata, measurement_imzml, write_h5ad

    with surface_errors():
        ctx.require(Action.READ)
        if fmt == "imzml":
            report = measurement_imzml(
                ctx.store, ctx.storage(), measurement_id, path, parameter_set
            )
            click.echo(
                f"wrote {report.spectra} spectra, {report.peaks} peaks to {report.imzml_path} "
                f"(+ .ibd; {report.empty_pixels} pixels without peaks left out)"
            )
            return
        adata = measurement_anndata(ctx.store, ctx.storage(), measurement_id, parameter_set)
        write_h5ad(adata, path)
    click.echo(f"wrote {adata.n_obs} spectra × {adata.n_vars} features to {path}")
