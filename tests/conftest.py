"""Session-wide real services for the test suite.

``elasticsearch_url``: the project's own single-node Elasticsearch (fetched from Maven Central
and started on loopback by ``em2q_resources.elasticsearch_server``), or the cluster named by
``EM2Q_ELASTICSEARCH_URL``. Never a mock.
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterator

import pytest

import em2q_resources.settings
from em2q_resources.connections import set_up_metadata_store
from em2q_resources.elasticsearch_server import elasticsearch_url as _elasticsearch_url
from em2q_resources.metadata.store import MetadataStore
from em2q_resources.settings import Settings
from tests.fixtures.dagster import *  # noqa: F403
from tests.fixtures.s3 import *  # noqa: F403


def pytest_configure(config: pytest.Config) -> None:
    """No test reaches a Dagster it did not start: the default webserver address (where a
    person's `make run` listens) becomes a loopback port bound, never listening, for the whole
    session, so a request a test forgot to aim is refused instead of launching runs on that
    person's platform. Subprocesses get the same address through ``EM2Q_DAGSTER_URL``."""
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    config._em2q_closed_dagster_port = closed  # held open (not listening) until the end
    url = f"http://127.0.0.1:{closed.getsockname()[1]}"
    em2q_resources.settings.DEFAULT_DAGSTER_URL = url
    os.environ.setdefault("EM2Q_DAGSTER_URL", url)


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
