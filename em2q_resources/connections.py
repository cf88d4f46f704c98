"""The one place a metadata store and a storage are built from :class:`Settings`.

The Dagster resources (:mod:`em2q_resources.metadata.resource`, the definitions) and the
surfaces (:func:`em2q.connect.connect`: CLI, notebook client, web catalog, Thrift service) all
open their backends here, so credentials, timeouts and the "which cluster" rule are the same
everywhere. :func:`set_up_metadata_store` is the platform's set-up: indices, then the
``default`` parameter set, once.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from em2q_resources.metadata.errors import StoreUnavailable
from em2q_resources.settings import Settings

if TYPE_CHECKING:
    from em2q_resources.metadata.store import MetadataStore
    from em2q_resources.storage import StorageResource

#: request timeout of a store that sets indices up, writes in bulk or serves other programs
#: (the Dagster steps, `em2q dev`, the Thrift service); a person's surface uses
#: ``Settings.elasticsearch_timeout_s``
SERVER_REQUEST_TIMEOUT_S = 30.0


class NoElasticsearch(StoreUnavailable):
    """Neither ``EM2Q_ELASTICSEARCH_URL`` nor a running ``em2q dev`` names a cluster."""


def dev_url_file(settings: Settings) -> Path:
    """Where a running ``em2q dev`` records its Elasticsearch URL for other commands."""
    return settings.cache_dir / "dev-elasticsearch.url"


def elasticsearch_url(settings: Settings) -> str:
    """``EM2Q_ELASTICSEARCH_URL``, else the cluster a running ``em2q dev`` recorded."""
    if settings.elasticsearch_url:
        return settings.elasticsearch_url
    recorded = dev_url_file(settings)
    if recorded.exists():
        url = recorded.read_text(encoding="utf-8").strip()
        if url:
            return url
    raise NoElasticsearch(
        "no Elasticsearch to talk to: run `make run` (it starts one) in another terminal, "
        "or set EM2Q_ELASTICSEARCH_URL"
    )


def open_metadata_store(
    settings: Settings,
    *,
    url: str | None = None,
    request_timeout_s: float | None = None,
    deadline_s: float | None = None,
) -> MetadataStore:
    """The metadata store of ``settings`` (or of ``url``): its credentials and index prefix.

    Timeouts default to ``settings.elasticsearch_timeout_s`` (a surface answers a person);
    Dagster steps pass their own, longer ones.
    """
    from em2q_resources.metadata.store import MetadataStore

    timeout_s = settings.elasticsearch_timeout_s
    return MetadataStore.connect(
        url or elasticsearch_url(settings),
        username=settings.elasticsearch_username,
        password=settings.elasticsearch_password,
        api_key=settings.elasticsearch_api_key,
        index_prefix=settings.index_prefix,
        request_timeout_s=timeout_s if request_timeout_s is None else request_timeout_s,
        deadline_s=timeout_s if request_timeout_s is None else deadline_s,
    )


def open_storage(settings: Settings) -> StorageResource:
    """Where measurements and results live (a folder or an fsspec URL such as ``s3://…``)."""
    from em2q_resources.storage import StorageResource  # Dagster: only when storage is used

    return StorageResource.from_settings(settings)


def set_up_metadata_store(store: MetadataStore) -> None:
    """Create or migrate the indices, then save the ``default`` parameter set if none is
    saved yet (the only place it is seeded). Idempotent: every start may call it."""
    from em2q_resources import parameter_sets  # imports the metadata resource, which imports us

    store.ensure_indices()
    parameter_sets.seed_default(store)
