"""The catalog's routers, one per resource; ``create_app`` includes each of :data:`ROUTERS`."""

from em2q.web.routes import (
    catalog,
    compare,
    measurements,
    parameter_sets,
    provenance,
    studies,
    upload,
    workflows,
)

ROUTERS = [
    catalog.router,
    upload.router,
    measurements.router,
    workflows.router,
    parameter_sets.router,
    compare.router,
    provenance.router,
    studies.router,
]

__all__ = ["ROUTERS"]
