"""Provenance pages: what a change made stale (``/provenance/stale``) and a result's
reproducibility certificate (``/measurements/{id}/certificate/{asset}``); JSON for
``Accept: application/json`` or under ``/api/``. The logic is ``em2q.provenance``."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse

from em2q import provenance
from em2q.web.deps import Backends, CurrentUser
from em2q.web.pages import NotFound, render, wants_json
from em2q_resources.auth import Action, require
from em2q_resources.catalog import UnknownAsset

router = APIRouter()


@router.get("/provenance/stale", response_class=HTMLResponse)
@router.get("/api/provenance/stale")
def stale_page(
    request: Request,
    user: CurrentUser,
    connections: Backends,
    p: str = "",
    since: str = "",
    m: Annotated[list[str], Query()] = [],  # noqa: B006 (FastAPI copies the default)
):
    """``m`` (repeatable) keeps only those measurements, as ``em2q stale -m``."""
    require(user, Action.READ)
    report = provenance.stale(connections.store, p or None, since or None, m or None)
    if wants_json(request):
        return JSONResponse(report.to_dict())
    return render(
        request, "stale.html", report=report, rows=provenance.as_rows(report), since=since
    )


@router.get("/measurements/{measurement_id}/certificate/{asset}", response_class=HTMLResponse)
@router.get("/api/measurements/{measurement_id}/certificate/{asset}")
def certificate_page(
    request: Request,
    measurement_id: str,
    asset: str,
    user: CurrentUser,
    connections: Backends,
    p: str = "",
):
    require(user, Action.READ)
    try:
        certified = provenance.certificate(
            connections.store, connections.storage, measurement_id, asset, p or None
        )
    except (provenance.NoSuchResult, UnknownAsset) as exc:
        raise NotFound(str(exc)) from exc
    if wants_json(request):
        return JSONResponse(certified.to_dict())
    return render(request, "certificate.html", certificate=certified)
