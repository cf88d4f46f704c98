"""What the routers share through ``Depends``: who sends the request, and the connections to
the backends (the only place in :mod:`em2q.web` that builds them).

A route declares what it needs by type: ``user: CurrentUser``, ``connections: Backends``,
``settings: AppSettings``.
"""

from __future__ import annotations

from functools import cached_property
from typing import Annotated

from fastapi import Depends, Request

from em2q.client import connect_store
from em2q.dagster_api import DagsterAPI
from em2q.results import MeasurementResults
from em2q_resources.auth import User
from em2q_resources.metadata import MetadataStore, load_schema
from em2q_resources.parameters import DEFAULT_NAME
from em2q_resources.settings import Settings
from em2q_resources.storage import StorageResource


class Connections:
    """The metadata store, the storage and the Dagster webserver's API of one app.

    The store connects on first use, and again after a failed try: the catalog starts while
    Elasticsearch is down, answers 503 meanwhile, and recovers when it is back. ``store`` and
    ``storage`` given here (tests, ``em2q dev``) are used as they are.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        store: MetadataStore | None = None,
        storage: StorageResource | None = None,
    ) -> None:
        self.settings = settings
        self.storage = storage or StorageResource.from_settings(settings)
        if store is not None:
            self.store = store  # the instance's value stands before the cached property

    @cached_property
    def store(self) -> MetadataStore:
        """Connected on first use; a try that raised is made again on the next use."""
        return connect_store(self.settings)

    @cached_property
    def dagster(self) -> DagsterAPI:
        """The client of ``EM2Q_DAGSTER_URL`` (it launches workflows through the store)."""
        return DagsterAPI(self.settings.dagster_url, store=self.store)


def get_connections(request: Request) -> Connections:
    """The app's connections (``create_app`` builds them once from its settings)."""
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
