"""Errors of the metadata store; surfaces turn them into exit codes, HTTP or Thrift exceptions."""

from __future__ import annotations

from em2q_resources.metadata.schema import SchemaViolation

__all__ = [
    "AlreadyExists",
    "CredentialsRefused",
    "DocumentNotFound",
    "ImmutableDocument",
    "MetadataError",
    "SchemaViolation",
    "StoreUnavailable",
    "VersionConflict",
]


class MetadataError(RuntimeError):
    """Base class of store errors."""


class DocumentNotFound(MetadataError, KeyError):
    def __init__(self, entity: str, doc_id: str) -> None:
        super().__init__(f"{entity} {doc_id!r} not found")
        self.entity = entity
        self.doc_id = doc_id

    def __str__(self) -> str:  # KeyError would quote the message
        return self.args[0]


class VersionConflict(MetadataError):
    """Someone else changed the document since it was read; re-read and apply the change again."""

    def __init__(self, entity: str, doc_id: str, message: str) -> None:
        super().__init__(f"{entity} {doc_id!r}: {message}")
        self.entity = entity
        self.doc_id = doc_id


class AlreadyExists(VersionConflict):
    def __init__(self, entity: str, doc_id: str) -> None:
        super().__init__(entity, doc_id, "already exists")


class ImmutableDocument(MetadataError):
    """Saved parameter sets never change: save new values as a new version instead."""


class StoreUnavailable(MetadataError):
    """Elasticsearch could not be reached after bounded retries."""


class CredentialsRefused(MetadataError):
    """Elasticsearch refused the platform's credentials (401) or their rights (403): a setting
    to fix (``EM2Q_ELASTICSEARCH_USERNAME``/``_PASSWORD`` or ``_API_KEY``), not a retry."""
