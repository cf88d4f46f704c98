"""`em2q search` as the README promises it: range filters (``>=``, ``<=``), ``--sort``,
``--limit``, and exit code 2 for usage errors, on a real Elasticsearch catalog of 60
generated measurements whose values the tests compute the expected answers from."""

from __future__ import annotations

import json
import random
import uuid

import numpy as np
import pytest
from click.testing import CliRunner

from em2q.cli import main
from em2q.filters import FilterSyntaxError, parse_filters
from em2q_resources.metadata import MetadataStore, load_schema
from em2q_resources.metadata.synthetic import measurement

S = load_schema()
COUNT = 60


@pytest.fixture(scope="module")
def catalog(elasticsearch_url, tmp_path_factory):
    """``(env, documents)``: the CLI's environment and the measurements stored for it."""
    prefix = f"cli-search-{uuid.uuid4().hex[:8]}"
    store = MetadataStore.connect(elasticsearch_url, index_prefix=prefix)
    store.ensure_indices()
    rng = random.Random(7)
    docs = [measurement(S, i, rng) for i in range(COUNT)]
    assert store.bulk_put(docs, refresh=True).ok
    root = tmp_path_factory.mktemp("cli-search")
    env = {
        "EM2Q_ELASTICSEARCH_URL": elasticsearch_url,
        "EM2Q_INDEX_PREFIX": prefix,
        "EM2Q_CACHE_DIR": str(root / "cache"),
        "EM2Q_STORAGE": str(root / "storage"),
    }
    yield env, docs
    store.drop_all()


def search(env, *args) -> dict:
    result = CliRunner().invoke(main, ["search", *args, "--json"], env=env)
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


def test_parse_filters_turns_operators_into_bounds():
    assert parse_filters(["settings.resolving_power>=5e4", "settings.resolving_power<=2e5"]) == {
        "settings.resolving_power": {"gte": "5e4", "lte": "2e5"}
    }
    assert parse_filters(["settings.analyzer=TOF,QTOF", "status=READY"]) == {
        "settings.analyzer": ["TOF", "QTOF"],
        "status": "READY",
    }


def test_parse_filters_refuses_an_item_without_an_operator():
    with pytest.raises(FilterSyntaxError, match=r"'settings\.polarity': use field=value"):
        parse_filters(["settings.polarity"])


def test_range_filters_keep_exactly_the_values_within_the_bounds(catalog):
    env, docs = catalog
    low, high = 40_000, 160_000
    found = search(
        env, "-f", f"settings.resolving_power>={low}", "-f", f"settings.resolving_power<={high}",
        "--limit", str(COUNT),
    )  # fmt: skip
    expected = {d.id for d in docs if low <= d.settings.resolving_power <= high}
    assert {h["id"] for h in found["hits"]} == expected
    assert found["total"] == len(expected)
    assert 0 < len(expected) < COUNT  # the bounds cut the catalog on both sides


def test_a_lower_bound_alone_and_an_upper_bound_alone(catalog):
    env, docs = catalog
    day = "2026-01-01"
    after = search(env, "-f", f"acquired_at>={day}", "--limit", str(COUNT))
    before = search(env, "-f", f"acquired_at<={day}", "--limit", str(COUNT))
    assert {h["id"] for h in after["hits"]} == {d.id for d in docs if d.acquired_at >= day}
    assert {h["id"] for h in before["hits"]} == {d.id for d in docs if d.acquired_at <= day}


def test_sort_descending_and_limit_give_the_top_of_the_catalog(catalog):
    env, docs = catalog
    found = search(env, "--sort", "-settings.resolving_power", "--limit", "5")
    top = sorted(docs, key=lambda d: -d.settings.resolving_power)[:5]
    assert [h["id"] for h in found["hits"]] == [d.id for d in top]
    assert found["total"] == COUNT  # --limit shortens the page, not the count


def test_sort_ascending_within_a_filter(catalog):
    env, docs = catalog
    found = search(
        env, "-f", "settings.analyzer=TOF", "--sort", "settings.resolving_power", "--limit", "3"
    )
    tofs = sorted(
        (d for d in docs if d.settings.analyzer == S.Analyzer.TOF),
        key=lambda d: d.settings.resolving_power,
    )
    assert [h["id"] for h in found["hits"]] == [d.id for d in tofs[:3]]


def test_the_text_listing_counts_what_limit_shows(catalog):
    env, _ = catalog
    result = CliRunner().invoke(main, ["search", "--limit", "4"], env=env)
    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[-1] == f"4 of {COUNT} measurements"


@pytest.mark.parametrize(
    ("args", "problem"),
    [
        (["search", "-f", "settings.polarity"], "use field=value, field>=x or field<=y"),
        (["search", "--limit", "many"], "'many' is not a valid integer"),
        (["search", "--no-such-option"], "No such option: --no-such-option"),
        (["show"], "Missing argument 'MEASUREMENT_ID'"),
        (["no-such-command"], "No such command 'no-such-command'"),
    ],
    ids=["filter-syntax", "limit-type", "unknown-option", "missing-argument", "unknown-command"],
)
def test_usage_errors_exit_2_naming_the_problem(catalog, args, problem):
    env, _ = catalog
    result = CliRunner().invoke(main, args, env=env)
    assert result.exit_code == 2, result.output
    assert problem in result.output


@pytest.fixture(scope="module")
def peaks(catalog):
    """m/z 760.5851 planted in measurements 3 (2 % of the TIC) and 5 (0.5 %), a neighbour 4 ppm
    away in measurement 8."""
    from em2q_resources.metadata.peak_index import PeakFeatures, index_peak_table

    env, _ = catalog
    store = MetadataStore.connect(
        env["EM2Q_ELASTICSEARCH_URL"], index_prefix=env["EM2Q_INDEX_PREFIX"]
    )
    for index, mz, summed in (
        (3, 760.5851, 20.0),
        (5, 760.5860, 5.0),
        (8, 760.5851 * (1 + 4e-6), 30.0),
    ):
        table = PeakFeatures(np.array([mz]), np.array([0.4]), np.array([summed]), 10, 1000.0)
        index_peak_table(store, f"m-{index:07d}", "default@v1", "cd" * 32, table)
    store.refresh("PeakFeature")
    return env


def test_search_by_mz_lists_the_measurements_holding_it_with_their_match(peaks):
    found = search(peaks, "--mz", "760.5851", "--ppm", "3")
    assert [h["id"] for h in found["hits"]] == ["m-0000003", "m-0000005"]
    assert found["matches"]["m-0000005"]["ppm_error"] == pytest.approx(1.18, abs=0.01)
    assert "sample.organ" in found["facets"]


def test_search_by_mz_with_a_tic_threshold_keeps_the_strong_peaks(peaks):
    found = search(peaks, "--mz", "760.5851", "--ppm", "3", "--min-tic-fraction", "0.01")
    assert [h["id"] for h in found["hits"]] == ["m-0000003"]


def test_search_by_a_negative_mz_exits_1_naming_it(peaks):
    result = CliRunner().invoke(main, ["search", "--mz", "-5"], env=peaks)
    assert result.exit_code == 1, result.output
    assert "mz: must be positive" in result.output


def test_the_client_searches_by_mz_with_the_match_as_columns(peaks):
    from em2q.client import Catalog
    from em2q_resources.auth import Role, User
    from em2q_resources.settings import Settings

    store = MetadataStore.connect(
        peaks["EM2Q_ELASTICSEARCH_URL"], index_prefix=peaks["EM2Q_INDEX_PREFIX"]
    )
    settings = Settings.from_env(peaks)
    frame = Catalog(settings, user=User("sam", Role.SCIENTIST), store=store).search(
        mz=760.5851, ppm=3, min_tic_fraction=0.01
    )
    assert list(frame.index) == ["m-0000003"]
    assert frame.loc["m-0000003", "match_tic_fraction"] == pytest.approx(0.02)
