"""Spatial analysis of one measurement: its regions of interest (list, draw, delete, mean
spectrum), its segmentation (map, segments and their top ions, a segment turned into a ROI)
and the ion images most like a chosen one (colocalisation). JSON for the page's scripts; the
rules live in ``em2q_resources.rois`` and ``em2q_msi.spatial``."""

from __future__ import annotations

from typing import Any

import numpy as np
from fastapi import APIRouter, Body
from fastapi.responses import Response

from em2q.results import ResultNotReady, roi_statistics
from em2q.web.deps import AppSettings, Backends, CurrentUser, measurement_results
from em2q.web.pages import NotFound
from em2q_msi import spatial
from em2q_resources import rois
from em2q_resources.auth import Action, require
from em2q_resources.metadata import SchemaViolation
from em2q_resources.metadata.schema import to_document
from em2q_resources.results_layout import read_bytes

router = APIRouter()


def _roi_json(roi: Any) -> dict[str, Any]:
    doc = to_document(roi)
    doc["geometry"] = rois.geometry_of(roi)
    return doc


@router.get("/api/measurements/{measurement_id}/rois")
def list_rois(measurement_id: str, user: CurrentUser, connections: Backends):
    require(user, Action.READ)
    return [_roi_json(r) for r in rois.list_rois(connections.store, measurement_id)]


@router.post("/api/measurements/{measurement_id}/rois", status_code=201)
def save_roi(
    measurement_id: str,
    user: CurrentUser,
    connections: Backends,
    settings: AppSettings,
    body: dict[str, Any] = Body(...),  # noqa: B008 (FastAPI's way of declaring a JSON body)
):
    """Save a ROI drawn on the page: ``{"name", "geometry" (GeoJSON, image pixels), "colour"?,
    "description"?, "replace"?}``."""
    return save_drawn_roi(rois.save, connections, settings, user, measurement_id, body)


def save_drawn_roi(save, connections, settings, user, measurement_id: str, body: dict) -> dict:
    """Check a drawn ROI's JSON body, save it with ``save`` (``rois.save``, or
    ``optical.save_roi`` for one drawn on the optical image) on the measurement's grid."""
    for field in ("name", "geometry"):
        if field not in body:
            raise SchemaViolation(f"Roi.{field}", "required")
    results = measurement_results(connections, settings, measurement_id, None)
    saved = save(
        connections.store, user, measurement_id, body["name"], body["geometry"],
        colour=body.get("colour"), description=body.get("description"),
        grid=results.grid(), replace=bool(body.get("replace")),
    )  # fmt: skip
    return _roi_json(saved)


@router.delete("/api/measurements/{measurement_id}/rois/{name}", status_code=204)
def delete_roi(measurement_id: str, name: str, user: CurrentUser, connections: Backends):
    rois.delete(connections.store, user, measurement_id, name)
    return Response(status_code=204)


@router.get("/api/measurements/{measurement_id}/rois/{name}/spectrum")
def roi_spectrum(
    measurement_id: str,
    name: str,
    user: CurrentUser,
    connections: Backends,
    settings: AppSettings,
    p: str = "",
):
    """The ROI's mean spectrum from its raw spectra (ranged reads of only those), for the
    page to overlay on the measurement's mean spectrum, and its QC numbers under the default
    parameter set (``p``: another)."""
    require(user, Action.READ)
    roi = rois.get(connections.store, measurement_id, name)
    results = measurement_results(connections, settings, measurement_id, p or None)
    found = roi_statistics(
        results.raw, results.grid(), rois.geometry_of(roi), results.parameters.params
    )
    return {
        "name": name,
        "colour": roi.colour,
        "pixels": found.pixels,
        "mz": found.mz.tolist(),
        "intensity": found.mean.tolist(),
        "parameter_set": results.parameters.id,
        "qc": {k: (None if v != v else v) for k, v in found.qc.items()},  # NaN: not JSON
    }


def _segmentation(connections, settings, measurement_id: str, p: str) -> dict[str, Any]:
    results = measurement_results(connections, settings, measurement_id, p)
    try:
        return results.segmentation()
    except ResultNotReady as exc:
        raise NotFound(str(exc)) from None


@router.get("/api/measurements/{measurement_id}/segmentation")
def segmentation(
    measurement_id: str, user: CurrentUser, connections: Backends, settings: AppSettings,
    p: str = "",
):  # fmt: skip
    """k, each segment's colour, pixels, top m/z (effect size) and the map as rows of labels."""
    require(user, Action.READ)
    result = _segmentation(connections, settings, measurement_id, p)
    image = result["segment_map"]
    return {
        "k": result["k"],
        "note": result.get("note"),
        "k_scores": result.get("k_scores", result.get("bic", {})),
        "k_criterion": result.get("k_criterion", "bic" if result.get("bic") else None),
        "segments": result["segments"],
        "map": (image if image.ndim == 2 else image[0]).astype(int).tolist(),
    }


@router.get("/measurements/{measurement_id}/segmentation.png")
def segmentation_png(
    measurement_id: str, user: CurrentUser, connections: Backends, settings: AppSettings,
    p: str = "",
) -> Response:  # fmt: skip
    require(user, Action.READ)
    result = _segmentation(connections, settings, measurement_id, p)
    png = read_bytes(connections.storage, result["png"])
    return Response(png, media_type="image/png", headers={"Cache-Control": "no-cache"})


@router.post("/api/measurements/{measurement_id}/segments/{segment}/roi", status_code=201)
def segment_to_roi(
    measurement_id: str,
    segment: int,
    user: CurrentUser,
    connections: Backends,
    settings: AppSettings,
    body: dict[str, Any] = Body(...),  # noqa: B008
    p: str = "",
):
    """Save segment ``segment`` as a ROI named ``body["name"]`` (its pixels exactly)."""
    result = _segmentation(connections, settings, measurement_id, p)
    if not 0 <= segment < result["k"]:
        raise NotFound(f"segment {segment}: the segmentation has segments 0…{result['k'] - 1}")
    image = result["segment_map"]
    mask = (image if image.ndim == 2 else image[0]) == segment
    colour = result["segments"][segment]["colour"]
    saved = rois.save(
        connections.store, user, measurement_id, body.get("name", f"segment-{segment}"),
        spatial.mask_to_geometry(mask), colour=body.get("colour", colour),
        description=f"segment {segment} of the segmentation", grid=None,
    )  # fmt: skip
    return _roi_json(saved)


@router.get("/api/measurements/{measurement_id}/colocalisation")
def colocalisation(
    measurement_id: str,
    mz: float,
    user: CurrentUser,
    connections: Backends,
    settings: AppSettings,
    p: str = "",
    top: int = 10,
    method: str = "pearson",
    hotspot_percentile: float = 99.0,
    normalisation: str = "tic",
    ppm: float = 20.0,
):
    """The peak-table features whose ion images are most like that of ``mz``, ranked."""
    require(user, Action.READ)
    results = measurement_results(connections, settings, measurement_id, p)
    try:
        feature_mz, matrix = results.peak_table()
    except ResultNotReady as exc:
        raise NotFound(str(exc)) from None
    try:
        target, ranked = spatial.colocalised_features(
            feature_mz, matrix, mz, tolerance_ppm=ppm, method=method,
            hotspot_percentile=hotspot_percentile, normalisation=normalisation,
        )  # fmt: skip
    except spatial.SpatialError as exc:
        raise SchemaViolation("mz", str(exc)) from None
    n = max(0, min(int(top), ranked.order.size))
    return {
        "target_mz": float(feature_mz[target]),
        "method": method,
        "ranked": [
            {"mz": float(feature_mz[i]), "similarity": float(np.round(score, 6))}
            for i, score in zip(ranked.order[:n], ranked.scores[:n], strict=True)
        ],
    }


@router.get("/studies/{study_id}/segmentation/{member}.png")
def study_segment_map_png(
    study_id: str, member: str, user: CurrentUser, connections: Backends
) -> Response:
    """A member's segment map of the study's segmentation (colours shared by all members)."""
    from em2q.study_results import StaleStudyResult, study_segmentation

    require(user, Action.READ)
    try:
        found = study_segmentation(connections.store, connections.storage, study_id)
    except (ResultNotReady, StaleStudyResult) as exc:
        raise NotFound(str(exc)) from None
    if member not in found["members"]:
        raise NotFound(f"{member!r} is not a member of study {study_id!r}'s segmentation")
    png = read_bytes(connections.storage, found["members"][member]["png"])
    return Response(png, media_type="image/png", headers={"Cache-Control": "no-cache"})
