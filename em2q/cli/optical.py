"""``em2q optical``: a measurement's optical (microscopy, H&E) image and its registration."""

from __future__ import annotations

import json
from pathlib import Path

import click

from em2q.cli.base import Context, json_option, main, pass_context, surface_errors
from em2q_resources.auth import Action


@main.group()
def optical() -> None:
    """The optical image under a measurement's ion images: upload, register with landmarks."""


@optical.command("add")
@click.argument("measurement_id")
@click.argument("image", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@json_option
@pass_context
def optical_add(ctx: Context, measurement_id: str, image: Path, as_json: bool) -> None:
    """Store IMAGE (PNG, JPEG or TIFF) as MEASUREMENT_ID's optical image (replacing one)."""
    from em2q_resources import optical as images
    from em2q_resources.metadata.schema import to_document

    with surface_errors():
        user = ctx.require(Action.UPLOAD)
        doc = images.save_image(
            ctx.store, ctx.connections.storage, user, measurement_id, image.read_bytes(),
            image.name,
        )  # fmt: skip
    if as_json:
        click.echo(json.dumps(to_document(doc)))
        return
    click.echo(
        f"optical image of {measurement_id}: {doc.filename} ({doc.format}, "
        f"{doc.width_px}×{doc.height_px} px); register it with `em2q optical register`"
    )


def _landmark(_ctx, _param, values: tuple[str, ...]) -> list[list[float]]:
    pairs = []
    for value in values:
        try:
            numbers = [float(v) for v in value.split(",")]
        except ValueError:
            raise click.BadParameter(f"{value!r}: expected x,y,msi_x,msi_y numbers") from None
        if len(numbers) != 4:
            raise click.BadParameter(f"{value!r}: expected 4 numbers x,y,msi_x,msi_y")
        pairs.append(numbers)
    return pairs


@optical.command("register")
@click.argument("measurement_id")
@click.option(
    "--landmark", "landmarks", multiple=True, required=True, callback=_landmark,
    help="x,y,msi_x,msi_y: a point of the optical image and the same point of the MSI image "
    "(pixel coordinates; repeat, 3 or more not in a row)",
)  # fmt: skip
@json_option
@pass_context
def optical_register(
    ctx: Context, measurement_id: str, landmarks: list[list[float]], as_json: bool
) -> None:
    """Fit the optical → MSI affine transform of MEASUREMENT_ID to the landmarks; store it."""
    from em2q_resources import optical as images

    with surface_errors():
        user = ctx.require(Action.SAVE_PARAMETER_SET)
        doc = images.register(ctx.store, user, measurement_id, landmarks)
    transform = images.transform_of(doc)
    if as_json:
        click.echo(json.dumps(transform))
        return
    click.echo(f"registered {measurement_id}: RMS residual {transform['rms_px']:.3f} MSI px")
    for i, residual in enumerate(transform["residuals_px"]):
        click.echo(f"  landmark {i + 1}: {residual:.3f} px")
