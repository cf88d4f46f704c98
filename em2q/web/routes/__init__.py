"""The catalog's routers, one per resource; ``create_app`` includes each of :data:`ROUTERS`."""

from em2q.web.routes import (
    catalog,
    compare,
    measurements,
    parameter_sets,
    spatial,
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
    spatial.router,
]

__all__ = ["ROUTERS"]
