"""Workflows: named selections of the asset graph that people start on one measurement.

The code defines what a workflow materializes (:data:`WORKFLOWS`, derived from the asset
catalogue, :mod:`em2q_resources.catalog`); an admin *publishes* it
(a ``Workflow`` document in Elasticsearch) before technicians may start it. Scientists and
admins may start any code-defined workflow (they try new ones out before publishing them).

A workflow is launched as one asset backfill over its assets for one measurement (see
``em2q.dagster_api``): measurement-level assets get the partition ``M``, spectra-level assets
every chunk ``M|i``; the parameter set travels as the run tag ``em2q/parameter_set``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from em2q_resources.auth import Action, AuthError, Role, User, require
from em2q_resources.catalog import CATALOG, Catalog
from em2q_resources.metadata import DocumentNotFound, load_schema
from em2q_resources.metadata.schema import utc_now

if TYPE_CHECKING:
    from em2q_resources.metadata.store import MetadataStore

#: the asset whose verdict ends the ``qc`` workflow
QC_ASSET = "qc_report"


@dataclass(frozen=True)
class WorkflowDefinition:
    name: str
    description: str
    #: asset keys, upstream first
    assets: tuple[str, ...]


def workflows(catalog: Catalog = CATALOG) -> dict[str, WorkflowDefinition]:
    """The code-defined workflows of ``catalog``; their assets come from its declarations."""
    reprocess = catalog.downstream_of(catalog.parameter_dependent)
    return {
        w.name: w
        for w in (
            WorkflowDefinition(
                "standard",
                "The whole chain for a measurement: ingest, chunks, preprocessing, mean "
                "spectrum, TIC image, QC report, peak table and ion images.",
                catalog.names,
            ),
            WorkflowDefinition(
                "reprocess",
                "Preprocessing and everything downstream of it, for another parameter set (the "
                "raw chunks, mean spectrum and TIC image do not depend on parameters and are "
                "reused).",
                reprocess,
            ),
            WorkflowDefinition(
                "qc",
                "Up to the QC verdict: ingest, chunks, preprocessing, mean spectrum and QC report.",
                catalog.with_upstream(QC_ASSET),
            ),
        )
    }


#: the workflows people start on one measurement, by name
WORKFLOWS: dict[str, WorkflowDefinition] = workflows()


class UnknownWorkflow(KeyError):
    def __init__(self, name: str) -> None:
        super().__init__(f"no workflow {name!r}; the code defines {', '.join(sorted(WORKFLOWS))}")

    def __str__(self) -> str:
        return self.args[0]


class WorkflowNotPublished(AuthError):
    """A technician asked for a workflow no admin has published yet."""


def workflow(name: str) -> WorkflowDefinition:
    try:
        return WORKFLOWS[name]
    except KeyError:
        raise UnknownWorkflow(name) from None


def publish(store: MetadataStore, name: str, user: User, *, description: str | None = None) -> Any:
    """Publish a code-defined workflow (admins only); publishing again updates the record."""
    require(user, Action.PUBLISH_WORKFLOW)
    definition = workflow(name)
    document = load_schema().Workflow(
        id=name,
        name=name,
        description=description or definition.description,
        assets=list(definition.assets),
        published_by=user.name,
        published_at=utc_now(),
    )
    return store.update(document, None, refresh=True).doc


def unpublish(store: MetadataStore, name: str, user: User) -> None:
    """Withdraw a workflow from technicians (admins only)."""
    require(user, Action.PUBLISH_WORKFLOW)
    store.delete(load_schema().Workflow, name)


def published(store: MetadataStore) -> dict[str, Any]:
    """``{name: Workflow document}`` of every published workflow."""
    schema = load_schema()
    page = store.search(schema.Workflow, sort=["name"], page_size=1000)
    return {w.name: w for w in page.hits}


def is_published(store: MetadataStore, name: str) -> bool:
    try:
        store.get(load_schema().Workflow, name)
    except DocumentNotFound:
        return False
    return True


def startable(store: MetadataStore, user: User) -> list[WorkflowDefinition]:
    """The workflows ``user`` may start: technicians the published ones, others every one."""
    require(user, Action.START_WORKFLOW)
    if Role(user.role) != Role.TECHNICIAN:
        return list(WORKFLOWS.values())
    names = published(store)
    return [w for w in WORKFLOWS.values() if w.name in names]


def require_startable(store: MetadataStore, name: str, user: User) -> WorkflowDefinition:
    """The workflow, when ``user`` may start it; raises otherwise, saying why."""
    require(user, Action.START_WORKFLOW)
    definition = workflow(name)
    if Role(user.role) == Role.TECHNICIAN and not is_published(store, name):
        raise WorkflowNotPublished(
            f"{user.name} has the technician role, which may start published workflows only, "
            f"and {name!r} is not published yet; an admin publishes it with "
            f"`em2q workflows publish {name}`"
        )
    return definition
