"""The Dagster resources over the metadata store: the store itself and the run's parameter set
(assets, IO managers and sensors receive them by name)."""

from __future__ import annotations

from collections import OrderedDict
from typing import TYPE_CHECKING

import dagster as dg
from pydantic import Field, PrivateAttr

from em2q_resources.connections import (
    SERVER_REQUEST_TIMEOUT_S,
    elasticsearch_url,
    open_metadata_store,
)
from em2q_resources.parameter_sets import (
    DEFAULT_NAME,
    PARAMETER_SET_TAG,
    ResolvedParameters,
    resolve,
)
from em2q_resources.settings import Settings

if TYPE_CHECKING:
    from em2q_resources.metadata.store import MetadataStore


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


class ParameterSetResource(dg.ConfigurableResource):
    """The parameter set of a run: the configured name, else the run's ``em2q/parameter_set``
    tag, else the team's ``default`` (pick another in the launchpad's resource config)."""

    metadata: MetadataStoreResource
    name: str | None = Field(
        default=None,
        description="parameter set name (newest version) or name@vN; "
        f"empty: the run tag {PARAMETER_SET_TAG!r}, else {DEFAULT_NAME!r}",
    )
    _run_tag: str | None = PrivateAttr(default=None)
    _run_id: str | None = PrivateAttr(default=None)
    _resolved: ResolvedParameters | None = PrivateAttr(default=None)

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        run = context.run
        self._run_tag = run.tags.get(PARAMETER_SET_TAG) if run is not None else None
        self._run_id = run.run_id if run is not None else None

    @property
    def chosen(self) -> str:
        return self.name or self._run_tag or DEFAULT_NAME

    def resolve(self) -> ResolvedParameters:
        """Resolved once per run and process, so every step of the run and the IO manager (which
        holds its own copy of this resource) use the same version, even if a new version of
        the name is saved meanwhile."""
        if self._resolved is None:
            key = (self._run_id, self.chosen)
            resolved = _RESOLVED_BY_RUN.get(key) if self._run_id else None
            if resolved is None:
                resolved = resolve(self.metadata.get_store(), self.chosen)
                if self._run_id:
                    _RESOLVED_BY_RUN[key] = resolved
                    while len(_RESOLVED_BY_RUN) > 64:
                        _RESOLVED_BY_RUN.popitem(last=False)
            self._resolved = resolved
        return self._resolved


#: (run id, chosen name) -> the set a run resolved, for the copies of the resource in one process
_RESOLVED_BY_RUN: OrderedDict[tuple[str | None, str], ResolvedParameters] = OrderedDict()
