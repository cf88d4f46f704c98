"""The optical image of a measurement: upload, the landmark registration page, the ion image
(TIC, an m/z, the segment map) drawn over it. The rules live in ``em2q_resources.optical``."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Body, File, Request, UploadFile
from fastapi.responses import HTMLResponse, Response

from em2q.results import ResultNotReady
from em2q.web.deps import AppSettings, Backends, CurrentUser, measurement_results
from em2q.web.pages import NotFound, render
from em2q_resources import optical
from em2q_resources.auth import Action, require
from em2q_resources.metadata import DocumentNotFound, SchemaViolation
from em2q_resources.metadata.schema import to_document
from em2q_resources.results_layout import read_bytes

router = APIRouter()

#: the largest optical image taken through the page, in bytes
MAX_UPLOAD_BYTES = 512 * 1024 * 1024
_PNG = {"Cache-Control": "no-cache"}


def _doc_json(doc: Any) -> dict[str, Any]:
    out = to_document(doc)
    out.pop("url", None)
    out.pop("display_url", None)
    out["transform"] = optical.transform_of(doc)
    return out


@router.post("/api/measurements/{measurement_id}/optical", status_code=201)
async def upload_optical(
    measurement_id: str,
    user: CurrentUser,
    connections: Backends,
    image: UploadFile = File(...),  # noqa: B008 (FastAPI's way of declaring a file part)
):
    """Store the uploaded PNG/JPEG/TIFF as the measurement's optical image (replacing one
    there was, and its registration)."""
    require(user, Action.UPLOAD)
    data = await image.read(MAX_UPLOAD_BYTES + 1)
    if len(data) > MAX_UPLOAD_BYTES:
        raise SchemaViolation(
            "OpticalImage.image", f"larger than {MAX_UPLOAD_BYTES // 2**20} MiB: downsample it"
        )
    doc = optical.save_image(
        connections.store, connections.storage, user, measurement_id, data,
        image.filename or "optical",
    )  # fmt: skip
    return _doc_json(doc)


@router.get("/api/measurements/{measurement_id}/optical")
def optical_document(measurement_id: str, user: CurrentUser, connections: Backends):
    require(user, Action.READ)
    return _doc_json(optical.get(connections.store, measurement_id))


@router.post("/api/measurements/{measurement_id}/optical/registration")
def register_optical(
    measurement_id: str,
    user: CurrentUser,
    connections: Backends,
    body: dict[str, Any] = Body(...),  # noqa: B008
):
    """Fit the optical → MSI affine transform to ``{"landmarks": [[x, y, msi_x, msi_y], …]}``
    (optical and MSI image pixel coordinates) and store it; answers the matrix and residuals."""
    if "landmarks" not in body:
        raise SchemaViolation("OpticalImage.transform", "landmarks: required")
    doc = optical.register(connections.store, user, measurement_id, body["landmarks"])
    return optical.transform_of(doc)


@router.post("/api/measurements/{measurement_id}/optical/rois", status_code=201)
def save_optical_roi(
    measurement_id: str,
    user: CurrentUser,
    connections: Backends,
    settings: AppSettings,
    body: dict[str, Any] = Body(...),  # noqa: B008
):
    """Save a ROI drawn on the optical image: ``{"name", "geometry" (GeoJSON, optical image
    pixels), "colour"?, "description"?, "replace"?}``; stored in MSI pixels through the
    registration (400 while the image is not registered)."""
    from em2q.web.routes.spatial import save_drawn_roi

    return save_drawn_roi(optical.save_roi, connections, settings, user, measurement_id, body)


@router.get("/measurements/{measurement_id}/optical.png")
def optical_png(measurement_id: str, user: CurrentUser, connections: Backends) -> Response:
    """The optical image as shown on the page (downsampled when large)."""
    require(user, Action.READ)
    doc = optical.get(connections.store, measurement_id)
    return Response(
        read_bytes(connections.storage, doc.display_url), media_type="image/png", headers=_PNG
    )


def _layer(connections, settings, measurement_id: str, layer: str, mz: float | None, p: str):
    results = measurement_results(connections, settings, measurement_id, p or None)
    try:
        return optical.layer_for(results, layer, mz)
    except ResultNotReady as exc:
        raise NotFound(str(exc)) from None


@router.get("/measurements/{measurement_id}/optical/layer.png")
def layer_png(
    measurement_id: str, user: CurrentUser, connections: Backends, settings: AppSettings,
    layer: str = "tic", mz: float | None = None, p: str = "",
) -> Response:  # fmt: skip
    """The layer alone on the optical image's pixels, transparent outside the MSI image (the
    page stacks it over the image; its opacity slider sets the layer's CSS opacity)."""
    require(user, Action.READ)
    doc = optical.get(connections.store, measurement_id)
    rgba = _layer(connections, settings, measurement_id, layer, mz, p)
    png = optical.warped_layer_png(connections.storage, doc, rgba)
    return Response(png, media_type="image/png", headers=_PNG)


@router.get("/measurements/{measurement_id}/optical/overlay.png")
def overlay_png(
    measurement_id: str, user: CurrentUser, connections: Backends, settings: AppSettings,
    layer: str = "tic", mz: float | None = None, p: str = "", opacity: float = 0.5,
) -> Response:  # fmt: skip
    """The optical image with the layer over it at ``opacity`` (0…1), one PNG of the
    optical image's display size."""
    require(user, Action.READ)
    doc = optical.get(connections.store, measurement_id)
    rgba = _layer(connections, settings, measurement_id, layer, mz, p)
    png = optical.overlay_png(connections.storage, doc, rgba, opacity)
    return Response(png, media_type="image/png", headers=_PNG)


@router.get("/measurements/{measurement_id}/optical", response_class=HTMLResponse)
def optical_page(
    request: Request, measurement_id: str, user: CurrentUser, connections: Backends,
    settings: AppSettings, p: str = "",
):  # fmt: skip
    """Upload the optical image, click landmark pairs on it and on the TIC image, fit, and see
    an ion image over it with an opacity slider."""
    require(user, Action.READ)
    results = measurement_results(connections, settings, measurement_id, p or None)
    grid = results.grid()
    try:
        doc = optical.get(connections.store, measurement_id)
    except DocumentNotFound:
        doc = None
    return render(
        request,
        "optical.html",
        measurement_id=measurement_id,
        parameter_set=results.parameters.id,
        nx=grid.nx,
        ny=grid.ny,
        image=_doc_json(doc) if doc is not None else None,
    )
