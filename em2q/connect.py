"""``connect(settings)``: the backends every surface talks to, built one way.

The CLI, the notebook client, the web catalog and the Thrift service each call
:func:`connect` and use ``.store`` (the metadata store), ``.storage`` (measurements and
results) and ``.dagster`` (the webserver's GraphQL API). Nothing is opened until it is first
used, so a command that needs only the storage never waits for Elasticsearch (nor imports
Dagster to search the catalog); what is opened is kept, so one surface holds one store.
"""

from __future__ import annotations

from functools import cached_property
from typing import TYPE_CHECKING

from em2q_resources.connections import open_metadata_store, open_storage
from em2q_resources.settings import Settings

if TYPE_CHECKING:
    from em2q.dagster_api import DagsterAPI
    from em2q_resources.metadata.store import MetadataStore
    from em2q_resources.storage import StorageResource


class Connections:
    """The store, storage and Dagster API of one :class:`Settings`, opened on first use."""

    def __init__(
        self,
        settings: Settings,
        *,
        store: MetadataStore | None = None,
        storage: StorageResource | None = None,
    ) -> None:
        self.settings = settings
        if store is not None:
            self.store = store
        if storage is not None:
            self.storage = storage

    @cached_property
    def store(self) -> MetadataStore:
        """``EM2Q_ELASTICSEARCH_URL``'s cluster, else a running ``em2q dev``'s."""
        return open_metadata_store(self.settings)

    @cached_property
    def storage(self) -> StorageResource:
        return open_storage(self.settings)

    @cached_property
    def dagster(self) -> DagsterAPI:
        """Launches and follows workflows through ``EM2Q_DAGSTER_URL``."""
        from em2q.dagster_api import DagsterAPI

        return DagsterAPI(self.settings.dagster_url, store=self.store)

    def __repr__(self) -> str:
        return (
            f"Connections(prefix={self.settings.index_prefix!r}, storage={self.settings.storage!r})"
        )


def connect(
    settings: Settings | None = None,
    *,
    store: MetadataStore | None = None,
    storage: StorageResource | None = None,
) -> Connections:
    """The backends of ``settings`` (default: the ``EM2Q_*`` environment); a ``store`` or
    ``storage`` given (a test's, a caller's own) is used instead of opening one."""
    return Connections(settings or Settings.from_env(), store=store, storage=storage)
