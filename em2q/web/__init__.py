"""The web catalog for lab technicians (``em2q web``, and next to the Dagster UI in ``em2q dev``)."""

from em2q.web.app import create_app

__all__ = ["create_app"]
