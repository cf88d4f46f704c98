"""EM²Q metadata: the Thrift-derived schema and the Elasticsearch store.

The store's names load on first use (PEP 562): importing the Elasticsearch client costs about a
second, which a CLI's ``--help`` or a Dagster run that never opens the store should not pay.
"""

from typing import TYPE_CHECKING

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

if TYPE_CHECKING:
    from em2q_resources.metadata.store import BulkResult, MetadataStore, SearchPage, Stored

_STORE_NAMES = frozenset({"BulkResult", "MetadataStore", "SearchPage", "Stored"})


def __getattr__(name: str):
    if name in _STORE_NAMES:
        from em2q_resources.metadata import store

        return getattr(store, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


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
