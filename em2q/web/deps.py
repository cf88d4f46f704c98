"""What the routers share through ``Depends``: who sends the request, and the connections to
the backends (the only place in :mod:`em2q.web` that builds them).

A route declares what it needs by type: ``user: CurrentUser``, ``connections: Backends``,
``settings: AppSettings``.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from em2q.connect import Connections
from em2q.results import MeasurementResults
from em2q_resources.auth import User
from em2q_resources.metadata import MetadataStore, load_schema
from em2q_resources.parameter_sets import DEFAULT_NAME
from em2q_resources.settings import Settings


def get_connections(request: Request) -> Connections:
    """The app's connections: ``em2q.connect.connect`` of its settings, made once by
    ``create_app``. The store connects on first use and again after a failed try, so the
    catalog starts while Elasticsearch is down, answers 503 meanwhile and recovers."""
    return request.app.state.connections


def get_settings(request: Request) -> Settings:
    return request.app.state.settings


def current_user(request: Request) -> User:
    """Who sends the request (the app's Authenticator); remembered for the page header."""
    peer = request.client.host if request.client else None
    user = request.app.state.authenticator.authenticate(request.headers, client=peer)
    request.state.user = user
    return user


CurrentUser = Annotated[User, Depends(current_user)]
Backends = Annotated[Connections, Depends(get_connections)]
AppSettings = Annotated[Settings, Depends(get_settings)]


def measurement_results(
    connections: Connections, settings: Settings, measurement_id: str, parameter_set: str | None
) -> MeasurementResults:
    """One measurement's results under a parameter set (``default`` when none is named)."""
    return MeasurementResults(
        measurement_id,
        parameter_set or DEFAULT_NAME,
        store=connections.store,
        storage=connections.storage,
        cache_dir=settings.cache_dir / "imzml-index",
    )


def saved_parameter_sets(store: MetadataStore) -> list:
    """Every saved parameter set (up to 500), by name and newest version first."""
    store.refresh()
    page = store.search(load_schema().ParameterSet, sort=["name", ("version", True)], page_size=500)
    return page.hits
