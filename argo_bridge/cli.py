"""``em2q export-argo``: write the asset graph's Argo WorkflowTemplates as YAML files."""

from __future__ import annotations

from pathlib import Path

import click


@click.command("export-argo")
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("argo"),
    show_default=True,
    help="folder for the YAML files (created if missing)",
)
@click.option(
    "--chunks",
    type=click.IntRange(min=1),
    default=None,
    help="K, spectra chunks per measurement (default: EM2Q_SPECTRA_CHUNKS)",
)
@click.option("--image", default=None, help="container image (default: EM2Q_IMAGE)")
def export_argo(out_dir: Path, chunks: int | None, image: str | None) -> None:
    """Export the Dagster asset graph as Argo WorkflowTemplates, one YAML file each.

    Submit one with `argo submit --from workflowtemplate/em2q-measurement -p measurement=ID`.
    """
    import warnings

    import dagster as dg
    import yaml

    from em2q_resources.settings import Settings

    settings = Settings.from_env()
    if chunks is not None:
        settings = settings.with_overrides(spectra_chunks=chunks)
    with warnings.catch_warnings():  # Dagster's "beta" notes are for developers, not here
        warnings.simplefilter("ignore", dg.BetaWarning)
        from argo_bridge.export import export_workflow_templates
        from em2q_assets.definitions import build_definitions

        documents = export_workflow_templates(build_definitions(settings), image=image)
    out_dir.mkdir(parents=True, exist_ok=True)
    for document in documents:
        path = out_dir / f"{document['metadata']['name']}.yaml"
        path.write_text(
            yaml.safe_dump(document, sort_keys=False, allow_unicode=True), encoding="utf-8"
        )
        click.echo(
            f"wrote {path} ({document['kind']}, {len(document['spec']['templates'])} templates)"
        )
