"""Choosing the parameter set a run uses: by name (newest version) or ``name@vN``.

The team's default set is called ``default``; when none has been saved yet, the processing
core's defaults are saved under that name on first use, so a run always has a recorded set.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import dagster as dg
from pydantic import Field

from em2q_msi.parameters import ProcessingParameters
from em2q_resources.metadata import DocumentNotFound, MetadataStore
from em2q_resources.metadata.resource import MetadataStoreResource
from em2q_resources.metadata.store import parameter_values_to_dict

DEFAULT_NAME = "default"


@dataclass(frozen=True)
class ResolvedParameters:
    """A saved parameter set, ready for the processing core."""

    id: str
    content_hash: str
    values: dict[str, dict[str, Any]]
    params: ProcessingParameters

    @property
    def short_hash(self) -> str:
        """The path segment results of this set are stored under."""
        return self.content_hash[:16]


def resolve_parameter_set(
    store: MetadataStore, name_or_id: str = DEFAULT_NAME
) -> ResolvedParameters:
    try:
        saved = store.get_parameter_set(name_or_id)
    except DocumentNotFound:
        if name_or_id != DEFAULT_NAME:
            raise
        saved = store.save_parameter_set(
            DEFAULT_NAME,
            ProcessingParameters.defaults().to_dict(),
            author="em2q",
            comment="the processing core's defaults",
        )
    values = parameter_values_to_dict(saved.values)
    return ResolvedParameters(
        id=saved.id,
        content_hash=saved.content_hash,
        values=values,
        params=ProcessingParameters.from_dict(values),
    )


class ParameterSetResource(dg.ConfigurableResource):
    """The parameter set of a run; pick another in the launchpad's resource config."""

    metadata: MetadataStoreResource
    name: str = Field(
        default=DEFAULT_NAME, description="parameter set name (newest version) or name@vN"
    )

    def resolve(self) -> ResolvedParameters:
        return resolve_parameter_set(self.metadata.get_store(), self.name)
