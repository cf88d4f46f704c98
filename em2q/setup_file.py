"""Experimental-setup descriptions (``setup.yaml``) as validated schema documents."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from em2q_resources import lifecycle
from em2q_resources.metadata.schema import from_document, load_schema

# Fields the platform fills in itself; a setup file may not set them.
PLATFORM_FIELDS = {
    "id", "status", "status_reason", "status_detail", "uploaded_at", "updated_at", "files", "facts",
    "uploaded_by",
}  # fmt: skip


class SetupFileError(ValueError):
    """The setup file cannot be read or does not match the schema (``field`` names where)."""

    def __init__(self, path: str, field: str, message: str) -> None:
        super().__init__(f"{path}: {field}: {message}")
        self.field = field


def read_setup(path: str | Path) -> dict[str, Any]:
    """Load a setup YAML file as the partial Measurement document it describes."""
    try:
        document = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise SetupFileError(str(path), "(file)", f"not valid YAML: {exc}") from None
    except OSError as exc:
        raise SetupFileError(str(path), "(file)", f"cannot be read: {exc.strerror}") from None
    if not isinstance(document, dict):
        raise SetupFileError(str(path), "(file)", "expected a mapping of Measurement fields")
    reserved = sorted(PLATFORM_FIELDS & set(document))
    if reserved:
        raise SetupFileError(str(path), reserved[0], "is set by the platform, remove it")
    return document


def measurement_from_setup(setup: dict[str, Any], **platform_fields: Any):
    """A validated ``Measurement`` from a setup document plus the platform-owned fields.

    Raises :class:`SchemaViolation` naming the field (e.g. ``Measurement.settings.polarity``).
    """
    document = {**lifecycle.initial_fields(), **setup, **platform_fields}
    return from_document(load_schema().Measurement, document)
