"""The lab technician's web catalog: upload, search, look at a measurement, start and compare
processing. FastAPI with server-rendered Jinja2 templates; plots are Plotly figures built in
Python and drawn by the plotly.js bundled with the ``plotly`` package (no CDN).

:func:`create_app` only assembles: the connections and the authenticator, the templates, the
CSRF and security-header middleware, one router per resource (:mod:`em2q.web.routes`) and the
error handlers. Every request is authenticated by :class:`em2q_resources.auth.Authenticator`
(local mode: the local user, admin by default) and every action checked with
:func:`~em2q_resources.auth.require`; a refusal is a page (or JSON under ``/api``) that says
what went wrong, with the status of :data:`REFUSALS`.
"""

from __future__ import annotations

import secrets
from pathlib import Path

import plotly
from fastapi import FastAPI, Request
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles

from em2q.client import DeletionRefused, NoCatalog
from em2q.connect import connect
from em2q.dagster_api import DagsterError, DagsterUnavailable
from em2q.web.pages import HERE, NotFound, make_templates, refusal
from em2q.web.routes import ROUTERS
from em2q.web.security import CSRFMiddleware
from em2q.web.uploads import UploadFormError
from em2q_msi.ion_images import IonImageError
from em2q_resources.auth import Authenticator, AuthError, Unauthenticated
from em2q_resources.metadata import (
    CredentialsRefused,
    DocumentNotFound,
    MetadataError,
    MetadataStore,
    SchemaViolation,
    StoreUnavailable,
)
from em2q_resources.settings import Settings
from em2q_resources.storage import StorageFull, StorageResource, StorageUnavailable, UnsafeKey
from em2q_resources.workflows import UnknownWorkflow

PLOTLY_JS = Path(plotly.__file__).resolve().parent / "package_data" / "plotly.min.js"

#: every refusal but the auth errors: (exception classes, HTTP status, page title); Starlette
#: picks the most specific registered class of an exception, so subclasses keep their answer
REFUSALS: list[tuple[tuple[type[Exception], ...], int, str]] = [
    ((UnknownWorkflow,), 404, "No such workflow"),
    ((DagsterUnavailable,), 503, "Dagster does not answer"),
    ((DagsterError,), 502, "Dagster refused"),
    ((NotFound, DocumentNotFound), 404, "Not found"),
    ((UploadFormError,), 400, "Not an upload this page can take"),
    ((SchemaViolation, IonImageError), 400, "Invalid input"),
    ((UnsafeKey,), 400, "Refused: outside the platform's storage"),
    ((DeletionRefused,), 409, "Delete refused"),
    (
        (StoreUnavailable, NoCatalog, StorageUnavailable, CredentialsRefused),
        503,
        "A backend does not answer",
    ),
    ((StorageFull,), 507, "Storage is full"),
    ((MetadataError,), 409, "Refused by the metadata store"),
]


def create_app(
    settings: Settings,
    store: MetadataStore | None = None,
    storage: StorageResource | None = None,
    authenticator: Authenticator | None = None,
) -> FastAPI:
    """The web catalog on ``settings``' backends (``store``/``storage`` override them)."""
    app = FastAPI(title="EM²Q catalog", docs_url="/api/docs", openapi_url="/api/openapi.json")
    app.state.settings = settings
    app.state.connections = connect(settings, store=store, storage=storage)
    app.state.authenticator = authenticator or Authenticator.from_settings(settings)
    app.state.templates = make_templates(settings.dagster_url)
    app.mount("/static", StaticFiles(directory=HERE / "static"), name="static")

    async def cross_site(scope, receive, send, message: str) -> None:
        response = refusal(
            Request(scope, receive), 403, "Refused: not sent by this catalog", message
        )
        await response(scope, receive, send)

    app.add_middleware(
        CSRFMiddleware,
        secret=settings.web_secret or secrets.token_urlsafe(32),
        refuse=cross_site,
        allowed_origins=settings.web_allowed_origins,
    )
    _add_error_handlers(app)

    @app.get("/static-vendor/plotly.min.js", include_in_schema=False)
    def plotly_js() -> FileResponse:
        return FileResponse(PLOTLY_JS, media_type="text/javascript")

    for router in ROUTERS:
        app.include_router(router)
    return app


def _add_error_handlers(app: FastAPI) -> None:
    """Errors raised where they are found become the refusals of :data:`REFUSALS` here."""

    @app.exception_handler(AuthError)
    async def auth_error(request: Request, exc: AuthError):
        if isinstance(exc, Unauthenticated):
            return refusal(request, 401, "Who are you?", str(exc))
        return refusal(request, 403, "Not allowed", str(exc))

    for kinds, status_code, title in REFUSALS:

        async def refuse(request: Request, exc: Exception, status_code=status_code, title=title):
            return refusal(request, status_code, title, str(exc))

        for kind in kinds:
            app.add_exception_handler(kind, refuse)
