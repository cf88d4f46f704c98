""" "Open in notebook": a ready-to-run ``.ipynb`` that opens this measurement (and ROI) on this
platform (``em2q.notebooks``; no credentials in it), as a download or written into the user's
notebook folder and opened in its notebook server (``Settings.notebook_url``)."""

from __future__ import annotations

from urllib.parse import quote, urlencode

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, RedirectResponse, Response

from em2q.notebooks import (
    NotebookFolderError,
    measurement_notebook,
    notebook_bytes,
    notebook_filename,
    notebook_folder,
    notebook_server_url,
    write_notebook,
)
from em2q.web.deps import AppSettings, Backends, CurrentUser
from em2q.web.pages import refusal, render, wants_json
from em2q_resources import rois
from em2q_resources.auth import Action, require
from em2q_resources.metadata import load_schema
from em2q_resources.settings import Settings

router = APIRouter()


def _notebook(
    settings: Settings, connections, measurement_id: str, roi: str, p: str
) -> tuple[bytes, str]:
    """The notebook's bytes and file name (DocumentNotFound, 404, for an unknown measurement
    or ROI)."""
    connections.store.get(load_schema().Measurement, measurement_id)
    if roi:
        rois.get(connections.store, measurement_id, roi)
    body = notebook_bytes(
        measurement_notebook(settings, measurement_id, roi=roi or None, parameter_set=p or None)
    )
    return body, notebook_filename(measurement_id, roi or None)


@router.get("/measurements/{measurement_id}/notebook.ipynb")
def notebook(
    measurement_id: str, user: CurrentUser, connections: Backends, settings: AppSettings,
    roi: str = "", p: str = "",
) -> Response:  # fmt: skip
    """The notebook as a download (404 for an unknown measurement or ROI)."""
    require(user, Action.READ)
    body, name = _notebook(settings, connections, measurement_id, roi, p)
    return Response(
        body,
        media_type="application/x-ipynb+json",
        headers={"Content-Disposition": f'attachment; filename="{name}"'},
    )


@router.post("/measurements/{measurement_id}/notebook")
def open_in_notebook(
    request: Request, measurement_id: str, user: CurrentUser, connections: Backends,
    settings: AppSettings, roi: str = "", p: str = "",
) -> Response:  # fmt: skip
    """Write the notebook into the user's notebook folder (a new name if the file there was
    changed) and open it in the notebook server: JSON ``{"file", "url"}`` for scripts, a page
    that goes there for browsers; without a server, a redirect to the download."""
    require(user, Action.READ)
    body, name = _notebook(settings, connections, measurement_id, roi, p)
    if not settings.notebook_url:
        query = urlencode({k: v for k, v in (("roi", roi), ("p", p)) if v})
        download = f"/measurements/{quote(measurement_id, safe='')}/notebook.ipynb"
        download += f"?{query}" if query else ""
        return RedirectResponse(download, status_code=303)
    try:
        path = write_notebook(notebook_folder(settings, user.name), name, body)
    except NotebookFolderError as exc:
        return refusal(request, 503, "The notebook folder cannot be written", str(exc))
    client = request.client.host if request.client else None
    url = notebook_server_url(settings, path.name, client_host=client)
    headers = {"Cache-Control": "no-store"}  # the URL may carry the local server's token
    if wants_json(request):
        return JSONResponse({"file": path.name, "url": url}, headers=headers)
    page = render(
        request, "notebook_open.html", file=path.name, url=url, measurement_id=measurement_id
    )
    page.headers.update(headers)
    return page
