"""Choosing the parameter set a run uses: by name (newest version) or ``name@vN``.

The team's default set is called ``default``; when none has been saved yet, the processing
core's defaults are saved under that name on first use, so a run always has a recorded set.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import dagster as dg
from pydantic import Field, PrivateAttr

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


#: run tag naming the parameter set (set by workflows launched from the CLI, web or notebook;
#: Dagster copies a backfill's tags onto each of its runs)
PARAMETER_SET_TAG = "em2q/parameter_set"


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
    _resolved: ResolvedParameters | None = PrivateAttr(default=None)

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        run = context.run
        self._run_tag = run.tags.get(PARAMETER_SET_TAG) if run is not None else None

    @property
    def chosen(self) -> str:
        return self.name or self._run_tag or DEFAULT_NAME

    def resolve(self) -> ResolvedParameters:
        """Resolved once per run, so every step of the run uses the same version."""
        if self._resolved is None:
            self._resolved = resolve_parameter_set(self.metadata.get_store(), self.chosen)
        return self._resolved
