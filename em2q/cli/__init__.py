"""The ``em2q`` command line: one entry point for technicians, data scientists and admins.

One module per command group (measurements, params, runs and workflows, admin, study); ``base`` holds
the root group, the context and the exit codes (``em2q --help`` lists them). Importing this
package loads no backend client: each command imports what it needs when it runs.
"""

from em2q.cli import (  # noqa: F401  (commands)
    admin,
    exports,
    measurements,
    optical,
    params,
    provenance,
    runs,
    study,
)
from em2q.cli.base import main

__all__ = ["main"]
