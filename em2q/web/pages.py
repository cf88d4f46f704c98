"""Answering a request with a page: the Jinja2 templates, and a refusal as a page or as JSON.

A request wants JSON when it is under ``/api/`` or accepts ``application/json``; everything
else gets a server-rendered page that knows the user (for the header and what they ``can`` do).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse, Response
from fastapi.templating import Jinja2Templates

from em2q.web import catalog
from em2q.web.forms import by_step
from em2q.web.security import csrf_input, csrf_token
from em2q_resources.auth import Action, allowed

HERE = Path(__file__).resolve().parent
#: statuses after which a measurement's page stops following it
FINAL_STATUSES = ("READY", "FAILED")


class NotFound(Exception):
    """A page asked for something that is not there (404 page)."""


def make_templates(dagster_url: str) -> Jinja2Templates:
    """The catalog's templates, with the helpers every page may call."""
    templates = Jinja2Templates(directory=HERE / "templates")
    templates.env.globals.update(
        catalog_url=catalog.catalog_url,
        same_value_url=catalog.same_value_url,
        by_step=by_step,
        dagster_url=dagster_url,
        Action=Action,
        csrf_input=csrf_input,
        csrf_token=csrf_token,
    )
    return templates


def render(request: Request, template: str, status_code: int = 200, **context: Any) -> Response:
    """``template`` rendered for the request's user (the one :func:`current_user` found)."""
    user = getattr(request.state, "user", None)
    return request.app.state.templates.TemplateResponse(
        request,
        template,
        {"user": user, "can": lambda action: allowed(user, action), **context},
        status_code=status_code,
    )


def wants_json(request: Request) -> bool:
    return request.url.path.startswith("/api/") or "application/json" in request.headers.get(
        "accept", ""
    )


def refusal(request: Request, status_code: int, title: str, message: str) -> Response:
    """A refusal: ``{"error": title, "message": …}`` for JSON callers, else the error page."""
    if wants_json(request):
        return JSONResponse({"error": title, "message": message}, status_code=status_code)
    return render(request, "error.html", status_code, title=title, message=message)
