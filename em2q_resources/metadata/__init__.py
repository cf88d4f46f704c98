"""EM²Q metadata: the Thrift-derived schema and the Elasticsearch store."""

from em2q_resources.metadata.errors import (
    AlreadyExists,
    CredentialsRefused,
    DocumentNotFound,
    ImmutableDocument,
    MetadataError,
    StoreUnavailable,
    VersionConflict,
)
from em2q_resources.metadata.schema import SchemaViolation, load_schema
from em2q_resources.metadata.store import BulkResult, MetadataStore, SearchPage, Stored

__all__ = [
    "AlreadyExists",
    "BulkResult",
    "CredentialsRefused",
    "DocumentNotFound",
    "ImmutableDocument",
    "MetadataError",
    "MetadataStore",
    "SchemaViolation",
    "SearchPage",
    "StoreUnavailable",
    "Stored",
    "VersionConflict",
    "load_schema",
]
