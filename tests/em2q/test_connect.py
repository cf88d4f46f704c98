"""``connect(settings)``: the store, storage and Dagster API every surface uses."""

from __future__ import annotations

import pytest

from em2q.connect import connect
from em2q_resources.connections import NoElasticsearch, dev_url_file
from em2q_resources.metadata import StoreUnavailable
from em2q_resources.settings import Settings


@pytest.fixture
def own_settings(metadata_store, elasticsearch_url, tmp_path) -> Settings:
    return Settings(
        elasticsearch_url=elasticsearch_url,
        index_prefix=metadata_store.prefix,
        storage=str(tmp_path / "storage"),
        cache_dir=tmp_path / "cache",
        dagster_url="http://127.0.0.1:3999",
        elasticsearch_timeout_s=3.0,
    )


def test_the_store_is_the_settings_cluster_and_index_prefix(own_settings):
    store = connect(own_settings).store
    assert store.prefix == own_settings.index_prefix
    assert store.get_parameter_set("default").id == "default@v1"  # set up by the fixture
    assert store.deadline_s == 3.0  # a surface waits elasticsearch_timeout_s, not longer


def test_without_a_url_the_cluster_of_a_running_dev_is_used(own_settings):
    recorded = dev_url_file(own_settings)
    recorded.parent.mkdir(parents=True)
    recorded.write_text(own_settings.elasticsearch_url + "\n", encoding="utf-8")
    store = connect(own_settings.with_overrides(elasticsearch_url=None)).store
    assert store.get_parameter_set("default").id == "default@v1"


def test_no_cluster_at_all_is_store_unavailable_naming_the_setting(tmp_path):
    connections = connect(Settings(cache_dir=tmp_path / "cache"))  # opens nothing yet
    with pytest.raises(NoElasticsearch, match="EM2Q_ELASTICSEARCH_URL") as raised:
        connections.store  # noqa: B018
    assert isinstance(raised.value, StoreUnavailable)  # exit code 3, HTTP 503 at the surfaces


def test_storage_and_dagster_come_from_the_same_settings(own_settings):
    connections = connect(own_settings)
    assert connections.storage.root == own_settings.storage
    assert connections.dagster.url == own_settings.dagster_url
    assert connections.dagster.store is connections.store


def test_each_backend_is_opened_once(own_settings):
    connections = connect(own_settings)
    assert connections.store is connections.store
    assert connections.storage is connections.storage
    assert connections.dagster is connections.dagster


def test_a_given_store_and_storage_are_used_as_they_are(own_settings, metadata_store):
    from em2q_resources.connections import open_storage

    storage = open_storage(own_settings)
    connections = connect(own_settings, store=metadata_store, storage=storage)
    assert (connections.store, connections.storage) == (metadata_store, storage)
