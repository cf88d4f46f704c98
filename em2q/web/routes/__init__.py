"""The catalog's routers, one per resource; ``create_app`` includes each of :data:`ROUTERS`."""

from em2q.web.routes import (
    catalog,
    compare,
    exports,
    measurements,
    notebook,
    optical,
    parameter_diff,
    parameter_sets,
    provenance,
    qc_trends,
    spatial,
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
    qc_trends.router,
    parameter_diff.router,
    spatial.router,
    optical.router,
    notebook.router,
    exports.router,
]

__all__ = ["ROUTERS"]
