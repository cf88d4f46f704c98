"""The `em2q` CLI as a user runs it, against the real test Elasticsearch."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest
from click.testing import CliRunner

from em2q.cli import main
from em2q_resources.metadata import MetadataStore


@pytest.fixture
def cli_env(elasticsearch_url, tmp_path):
    prefix = f"cli-{uuid.uuid4().hex[:8]}"
    env = {
        "EM2Q_ELASTICSEARCH_URL": elasticsearch_url,
        "EM2Q_INDEX_PREFIX": prefix,
        "EM2Q_CACHE_DIR": str(tmp_path / "cache"),
        "EM2Q_STORAGE": str(tmp_path / "storage"),
    }
    yield env
    MetadataStore.connect(elasticsearch_url, index_prefix=prefix).drop_all()


def run(env, *args):
    return CliRunner().invoke(main, list(args), env=env, catch_exceptions=False)


def test_dev_registers_the_example_measurements_with_facts_read_from_the_files(cli_env):
    result = run(cli_env, "dev", "--once")
    assert result.exit_code == 0, result.output
    assert "catalog: 2 measurements" in result.output
    shown = json.loads(run(cli_env, "show", "example-processed", "--json").output)
    assert shown["status"] == "UPLOADED"
    assert shown["facts"]["mode"] == "PROCESSED"
    assert shown["facts"]["spectra_count"] == 9
    assert (shown["facts"]["pixels_x"], shown["facts"]["pixels_y"]) == (3, 3)
    assert (
        100.0 < shown["facts"]["mz_range"]["min_mz"] < shown["facts"]["mz_range"]["max_mz"] < 800.0
    )
    assert [f["role"] for f in shown["files"]] == ["IMZML", "IBD"]
    stored = Path(cli_env["EM2Q_STORAGE"]) / "measurements" / "example-processed"
    assert shown["files"][0]["uri"] == (stored / "Example_Processed.imzML").as_uri()
    again = run(cli_env, "dev", "--once")  # idempotent: same catalog, same default parameter set
    assert "catalog: 2 measurements" in again.output
    listed = json.loads(run(cli_env, "params", "list", "--json").output)
    assert [p["id"] for p in listed] == ["default@v1"]


def test_search_filters_and_facets_as_json(cli_env):
    run(cli_env, "dev", "--once")
    out = run(
        cli_env, "search", "example", "-f", "facts.mode=CONTINUOUS", "--facet", "status", "--json"
    ).output
    found = json.loads(out)
    assert [h["id"] for h in found["hits"]] == ["example-continuous"]
    assert found["facets"]["status"] == [["UPLOADED", 1]]


def test_bad_filter_exits_1_naming_the_field(cli_env):
    run(cli_env, "dev", "--once")
    result = CliRunner().invoke(main, ["search", "-f", "settings.polarity=SIDEWAYS"], env=cli_env)
    assert result.exit_code == 1
    assert "settings.polarity" in result.output and "unknown Polarity value" in result.output


def test_unknown_measurement_exits_1(cli_env):
    run(cli_env, "dev", "--once")
    result = CliRunner().invoke(main, ["show", "nope"], env=cli_env)
    assert result.exit_code == 1
    assert "Measurement 'nope' not found" in result.output


def test_params_save_is_versioned_and_diffable(cli_env, tmp_path):
    run(cli_env, "dev", "--once")
    values = tmp_path / "strict.yaml"
    values.write_text(
        "peak_picking: {snr_threshold: 3}\nsmoothing: {method: savgol}\n", encoding="utf-8"
    )
    assert (
        run(cli_env, "params", "save", "strict", str(values), "--author", "ada").output.strip()
        == "strict@v1"
    )
    assert (
        run(cli_env, "params", "save", "strict", str(values), "--author", "bob").output.strip()
        == "strict@v1"
    )
    values.write_text(
        "peak_picking: {snr_threshold: 5}\nsmoothing: {method: savgol}\n", encoding="utf-8"
    )
    assert (
        run(cli_env, "params", "save", "strict", str(values), "--author", "ada").output.strip()
        == "strict@v2"
    )
    diff = run(cli_env, "params", "diff", "strict@v1", "strict@v2").output
    assert diff.strip() == "peak_picking.snr_threshold: 3.0 -> 5.0"


def test_unreachable_elasticsearch_exits_3(tmp_path):
    env = {"EM2Q_ELASTICSEARCH_URL": "http://127.0.0.1:9", "EM2Q_CACHE_DIR": str(tmp_path)}
    result = CliRunner().invoke(main, ["show", "x"], env=env)
    assert result.exit_code == 3
    assert "did not answer" in result.output
