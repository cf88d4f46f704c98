"""Regions of interest: the one home of their rules (every surface calls these functions).

A ``Roi`` document (thrift/em2q.thrift) names a GeoJSON polygon in image pixel coordinates
(``em2q_msi.spatial``) on one measurement; its id is ``<measurement_id>/<name>``.

* :func:`save` checks the name, colour and geometry (``SchemaViolation`` naming the field), that
  the measurement exists and, given its grid, that the ROI covers at least one pixel, and
  records the pixel count. Saving needs the role that saves parameter sets (scientists,
  admins); the author is always the signed-in user.
* Changing (``save(..., replace=True)``) or deleting a ROI: its author or an admin.
* :func:`copy` puts a measurement's ROIs on other measurements of the same grid.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from typing import Any

from em2q_msi.geometry import PixelGrid
from em2q_msi.spatial import SpatialError, polygons, roi_mask
from em2q_resources.auth import Action, User, require
from em2q_resources.metadata.errors import AlreadyExists, DocumentNotFound
from em2q_resources.metadata.schema import (
    SchemaViolation,
    check_identifier,
    load_schema,
    utc_now,
)
from em2q_resources.metadata.store import MetadataStore
from em2q_resources.policy import NotYours, is_platform

__all__ = ["COLOURS", "copy", "delete", "geometry_of", "get", "list_rois", "roi_id", "save"]

#: colours given to ROIs saved without one, in turn (matplotlib's tab10)
COLOURS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2")
_COLOUR = re.compile(r"^#[0-9a-fA-F]{6}$")
#: a drawn polygon has at most this many vertices (a pasted shapefile is not a ROI)
MAX_VERTICES = 10_000


def roi_id(measurement_id: str, name: str) -> str:
    return f"{measurement_id}/{name}"


def parse_geometry(geometry: Mapping[str, Any] | str) -> dict[str, Any]:
    """The GeoJSON geometry as a dict, checked (``SchemaViolation`` on ``Roi.geometry``)."""
    if isinstance(geometry, str):
        try:
            geometry = json.loads(geometry)
        except json.JSONDecodeError as exc:
            raise SchemaViolation("Roi.geometry", f"not JSON: {exc}") from None
    try:
        rings = polygons(geometry)  # type: ignore[arg-type]
    except SpatialError as exc:
        raise SchemaViolation("Roi.geometry", str(exc)) from None
    vertices = sum(len(r) for rs in rings for r in rs)
    if vertices > MAX_VERTICES:
        raise SchemaViolation(
            "Roi.geometry", f"{vertices} vertices; a ROI has at most {MAX_VERTICES}"
        )
    return dict(geometry)  # type: ignore[arg-type]


def geometry_of(roi: Any) -> dict[str, Any]:
    """A stored ROI's geometry as a GeoJSON dict."""
    return json.loads(roi.geometry)


def pixel_count(geometry: Mapping[str, Any], grid: PixelGrid) -> int:
    """Pixels of the grid's image inside the geometry (every plane of a 3-D grid)."""
    return int(roi_mask(geometry, (grid.ny, grid.nx)).sum()) * grid.nz


def _may_change(user: User, roi: Any) -> None:
    if roi.author != user.name and not is_platform(user):
        raise NotYours(
            f"{user.name} may change or delete only ROIs they drew; {roi.name!r} of "
            f"{roi.measurement_id} was drawn by {roi.author} (ask them or an admin)"
        )


def save(
    store: MetadataStore,
    user: User | None,
    measurement_id: str,
    name: str,
    geometry: Mapping[str, Any] | str,
    *,
    colour: str | None = None,
    description: str | None = None,
    grid: PixelGrid | None = None,
    replace: bool = False,
) -> Any:
    """Save a ROI of ``measurement_id`` (see the module docstring); returns the ``Roi``.

    ``grid``: the measurement's pixel grid (default: from its facts, when it has them); a
    geometry covering none of its pixels is refused. ``replace``: change the ROI of that name
    (its author or an admin) rather than refusing with ``AlreadyExists``."""
    user = require(user, Action.SAVE_PARAMETER_SET)
    schema = load_schema()
    check_identifier(measurement_id, "Roi.measurement_id")
    check_identifier(name, "Roi.name")
    if colour is not None and not _COLOUR.match(colour):
        raise SchemaViolation("Roi.colour", f"expected a colour like '#1f77b4', got {colour!r}")
    shape = parse_geometry(geometry)
    measurement = store.get(schema.Measurement, measurement_id).doc  # DocumentNotFound
    if grid is None:
        from em2q_msi.facts import grid_from_facts

        grid = grid_from_facts(measurement.facts)
    count = None
    if grid is not None:
        count = pixel_count(shape, grid)
        if count == 0:
            raise SchemaViolation(
                "Roi.geometry",
                f"covers no pixel of {measurement_id}'s {grid.nx}×{grid.ny} image "
                "(coordinates are image pixels: x 0…width, y 0…height, y down)",
            )
    doc_id = roi_id(measurement_id, name)
    now = utc_now()
    roi = schema.Roi(
        id=doc_id,
        measurement_id=measurement_id,
        name=name,
        colour=colour,
        geometry=json.dumps(shape, separators=(",", ":")),
        author=user.name,
        created_at=now,
        pixel_count=count,
        description=description,
    )
    try:
        existing = store.get(schema.Roi, doc_id)
    except DocumentNotFound:
        existing = None
    if existing is None:
        if roi.colour is None:
            roi.colour = COLOURS[len(list_rois(store, measurement_id)) % len(COLOURS)]
        store.create(roi, refresh=True)
        return roi
    if not replace:
        raise AlreadyExists("Roi", doc_id)
    _may_change(user, existing.doc)
    roi.author, roi.created_at, roi.updated_at = existing.doc.author, existing.doc.created_at, now
    roi.colour = roi.colour or existing.doc.colour
    roi.description = description if description is not None else existing.doc.description
    store.update(roi, existing, refresh=True)
    return roi


def list_rois(store: MetadataStore, measurement_id: str) -> list[Any]:
    """The measurement's ROIs, by name."""
    page = store.search(
        load_schema().Roi, filters={"measurement_id": [measurement_id]}, sort=["name"],
        page_size=10_000,
    )  # fmt: skip
    return list(page.hits)


def get(store: MetadataStore, measurement_id: str, name: str) -> Any:
    """One ROI; ``DocumentNotFound`` naming it otherwise."""
    return store.get(load_schema().Roi, roi_id(measurement_id, name)).doc


def delete(store: MetadataStore, user: User | None, measurement_id: str, name: str) -> None:
    """Delete a ROI (its author or an admin)."""
    user = require(user, Action.SAVE_PARAMETER_SET)
    stored = store.get(load_schema().Roi, roi_id(measurement_id, name))
    _may_change(user, stored.doc)
    store.delete(load_schema().Roi, stored.doc.id, stored)
    store.refresh("Roi")


def copy(
    store: MetadataStore,
    user: User | None,
    source_id: str,
    target_ids: Iterable[str],
    names: Iterable[str] | None = None,
) -> list[Any]:
    """Copy ``source_id``'s ROIs (``names``, default all) onto each of ``target_ids``, which
    must have the same pixel grid (same origin and size); the copies are the user's. A name
    a target already has is refused (``AlreadyExists``) before anything is written."""
    from em2q_msi.facts import grid_from_facts

    user = require(user, Action.SAVE_PARAMETER_SET)
    schema = load_schema()
    source = store.get(schema.Measurement, source_id).doc
    grid = grid_from_facts(source.facts)
    rois = list_rois(store, source_id)
    if names is not None:
        wanted = list(names)
        missing = sorted(set(wanted) - {r.name for r in rois})
        if missing:
            raise DocumentNotFound("Roi", roi_id(source_id, missing[0]))
        rois = [r for r in rois if r.name in wanted]
    targets = list(target_ids)
    for target_id in targets:
        target = store.get(schema.Measurement, target_id).doc
        other = grid_from_facts(target.facts)
        if (
            grid is None
            or other is None
            or (grid.origin, grid.shape)
            != (
                other.origin,
                other.shape,
            )
        ):
            raise SchemaViolation(
                "Roi.measurement_id",
                f"{target_id}'s pixel grid ({_describe(other)}) is not {source_id}'s "
                f"({_describe(grid)}); ROIs are copied only between measurements of one grid",
            )
        for roi in rois:
            if store.exists(schema.Roi, roi_id(target_id, roi.name)):
                raise AlreadyExists("Roi", roi_id(target_id, roi.name))
    return [
        save(
            store,
            user,
            target_id,
            roi.name,
            roi.geometry,
            colour=roi.colour,
            description=roi.description,
            grid=grid,
        )  # fmt: skip
        for target_id in targets
        for roi in rois
    ]


def _describe(grid: PixelGrid | None) -> str:
    if grid is None:
        return "not known yet: ingest it first"
    return f"{grid.nx}×{grid.ny} from x={grid.origin[0]}, y={grid.origin[1]}"
