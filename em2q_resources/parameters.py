"""Retired: parameter sets live in :mod:`em2q_resources.parameter_sets` (kept only until the web
catalog imports from there)."""

from em2q_resources.parameter_sets import DEFAULT_NAME, PARAMETER_SET_TAG

__all__ = ["DEFAULT_NAME", "PARAMETER_SET_TAG"]
