"""Session-wide real services for the test suite.

``elasticsearch_url``: the project's own single-node Elasticsearch (fetched from Maven Central
and started on loopback by ``em2q_resources.elasticsearch_server``), or the cluster named by
``EM2Q_ELASTICSEARCH_URL``. Never a mock.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from em2q_resources.connections import set_up_metadata_store
from em2q_resources.elasticsearch_server import elasticsearch_url as _elasticsearch_url
from em2q_resources.metadata.store import MetadataStore
from em2q_resources.settings import Settings
from tests.fixtures.dagster import *  # noqa: F403
from tests.fixtures.s3 import *  # noqa: F403


@pytest.fixture(scope="session")
def settings() -> Settings:
    return Settings.from_env()


@pytest.fixture(scope="session")
def elasticsearch_url(settings: Settings) -> Iterator[str]:
    with _elasticsearch_url(settings) as url:
        yield url


@pytest.fixture
def metadata_store(elasticsearch_url: str) -> Iterator[MetadataStore]:
    """A store set up as the platform sets one up (fresh indices with a prefix of their own, the
    ``default`` parameter set), dropped afterwards."""
    store = MetadataStore.connect(elasticsearch_url, index_prefix=f"test-{uuid.uuid4().hex[:8]}")
    set_up_metadata_store(store)
    yield store
    store.drop_all()
