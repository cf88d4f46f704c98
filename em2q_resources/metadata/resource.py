"""The metadata store as a Dagster resource (assets and sensors receive it by name)."""

from __future__ import annotations

import dagster as dg
from pydantic import Field

from em2q_resources.connections import (
    SERVER_REQUEST_TIMEOUT_S,
    elasticsearch_url,
    open_metadata_store,
)
from em2q_resources.metadata.store import MetadataStore
from em2q_resources.settings import Settings


class MetadataStoreResource(dg.ConfigurableResource):
    """Elasticsearch-backed metadata; defaults come from :class:`~em2q_resources.settings.Settings`."""

    url: str = Field(description="Elasticsearch URL, e.g. http://127.0.0.1:9200")
    index_prefix: str = Field(default="em2q", description="prefix of every index and alias")
    username: str | None = None
    password: str | None = None
    api_key: str | None = None

    @classmethod
    def from_settings(cls, settings: Settings, url: str | None = None) -> MetadataStoreResource:
        """``url``, else the settings' cluster (or a running ``em2q dev``'s)."""
        return cls(
            url=url or elasticsearch_url(settings),
            index_prefix=settings.index_prefix,
            username=settings.elasticsearch_username,
            password=settings.elasticsearch_password,
            api_key=settings.elasticsearch_api_key,
        )

    def get_store(self) -> MetadataStore:
        settings = Settings(
            elasticsearch_url=self.url,
            elasticsearch_username=self.username,
            elasticsearch_password=self.password,
            elasticsearch_api_key=self.api_key,
            index_prefix=self.index_prefix,
        )
        return open_metadata_store(settings, request_timeout_s=SERVER_REQUEST_TIMEOUT_S)
