"""The workflows live in :mod:`em2q_resources.workflows` (no Dagster needed to read them); this
name stays for code that imports them from the Dagster layer."""

from em2q_resources.workflows import (  # noqa: F401
    WORKFLOWS,
    UnknownWorkflow,
    WorkflowDefinition,
    WorkflowNotPublished,
    is_published,
    publish,
    published,
    require_startable,
    startable,
    unpublish,
    workflow,
    workflows,
)
