""" "Open in notebook": a ready-to-run ``.ipynb`` that opens this measurement (and ROI) on this
platform (``em2q.notebooks``; no credentials in it)."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import Response

from em2q.notebooks import measurement_notebook, notebook_bytes, notebook_filename
from em2q.web.deps import AppSettings, Backends, CurrentUser
from em2q_resources import rois
from em2q_resources.auth import Action, require
from em2q_resources.metadata import load_schema

router = APIRouter()


@router.get("/measurements/{measurement_id}/notebook.ipynb")
def notebook(
    measurement_id: str, user: CurrentUser, connections: Backends, settings: AppSettings,
    roi: str = "", p: str = "",
) -> Response:  # fmt: skip
    """The notebook as a download (404 for an unknown measurement or ROI)."""
    require(user, Action.READ)
    connections.store.get(load_schema().Measurement, measurement_id)  # DocumentNotFound: 404
    if roi:
        rois.get(connections.store, measurement_id, roi)
    body = notebook_bytes(
        measurement_notebook(settings, measurement_id, roi=roi or None, parameter_set=p or None)
    )
    name = notebook_filename(measurement_id, roi or None)
    return Response(
        body,
        media_type="application/x-ipynb+json",
        headers={"Content-Disposition": f'attachment; filename="{name}"'},
    )
