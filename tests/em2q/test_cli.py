"""The `em2q` CLI as a user runs it, against the real test Elasticsearch."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest
from click.testing import CliRunner

from em2q.cli import main
from em2q.dagster_api import DagsterAPI
from em2q_resources.auth import TokensFile
from em2q_resources.metadata import MetadataStore, load_schema


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
    assert run(cli_env, "params", "save", "strict", str(values)).output.strip() == "strict@v1"
    assert run(cli_env, "params", "save", "strict", str(values)).output.strip() == "strict@v1"
    values.write_text(
        "peak_picking: {snr_threshold: 5}\nsmoothing: {method: savgol}\n", encoding="utf-8"
    )
    assert run(cli_env, "params", "save", "strict", str(values)).output.strip() == "strict@v2"
    diff = run(cli_env, "params", "diff", "strict@v1", "strict@v2").output
    assert diff.strip() == "peak_picking.snr_threshold: 3.0 -> 5.0"


def test_params_show_prints_the_newest_version_or_the_one_named(cli_env, tmp_path):
    run(cli_env, "dev", "--once")
    values = tmp_path / "shown.yaml"
    for snr in (4, 6):
        values.write_text(f"peak_picking: {{snr_threshold: {snr}}}\n", encoding="utf-8")
        run(cli_env, "params", "save", "shown", str(values), "--comment", f"snr {snr}")
    newest = json.loads(run(cli_env, "params", "show", "shown", "--json").output)
    assert newest["id"] == "shown@v2" and newest["comment"] == "snr 6"
    assert newest["values"]["peak_picking"]["snr_threshold"] == 6.0
    first = json.loads(run(cli_env, "params", "show", "shown@v1", "--json").output)
    assert first["id"] == "shown@v1" and first["values"]["peak_picking"]["snr_threshold"] == 4.0
    default = json.loads(run(cli_env, "params", "show", "default", "--json").output)
    assert default["id"] == "default@v1"
    text = run(cli_env, "params", "show", "shown").output
    assert json.loads(text) == newest  # the same document, indented for people
    missing = CliRunner().invoke(main, ["params", "show", "nope"], env=cli_env)
    assert missing.exit_code == 1
    assert "nope" in missing.output


def test_setup_creates_the_catalog_and_seeds_default_once_for_admins_only(cli_env):
    before = run(cli_env, "params", "show", "default")
    assert before.exit_code == 1 and "'default' not found" in before.output  # a read seeds nothing
    refused = run(as_role(cli_env, "scientist"), "setup")
    assert refused.exit_code == 4
    first = run(cli_env, "setup")
    assert first.exit_code == 0, first.output
    assert "default@v1" in first.output
    again = run(cli_env, "setup")
    assert again.exit_code == 0 and "default@v1" in again.output
    store = MetadataStore.connect(cli_env["EM2Q_ELASTICSEARCH_URL"],
                                  index_prefix=cli_env["EM2Q_INDEX_PREFIX"])  # fmt: skip
    assert [s.id for s in store.parameter_sets("default")] == ["default@v1"]


def test_unreachable_elasticsearch_exits_3(tmp_path):
    env = {"EM2Q_ELASTICSEARCH_URL": "http://127.0.0.1:9", "EM2Q_CACHE_DIR": str(tmp_path)}
    result = CliRunner().invoke(main, ["show", "x"], env=env)
    assert result.exit_code == 3
    assert "did not answer" in result.output


# ---------------------------------------------------------------------- roles, workflows, runs


def as_role(env, role):
    return {**env, "EM2Q_LOCAL_ROLE": role, "EM2Q_LOCAL_USER": f"a-{role}"}


@pytest.fixture(scope="module")
def loaded_env(elasticsearch_url, tmp_path_factory):
    """A catalog with the examples, shared by the tests that only read it or are refused."""
    root = tmp_path_factory.mktemp("cli-roles")
    prefix = f"cli-{uuid.uuid4().hex[:8]}"
    env = {
        "EM2Q_ELASTICSEARCH_URL": elasticsearch_url,
        "EM2Q_INDEX_PREFIX": prefix,
        "EM2Q_CACHE_DIR": str(root / "cache"),
        "EM2Q_STORAGE": str(root / "storage"),
    }
    assert run(env, "dev", "--once").exit_code == 0
    yield env
    MetadataStore.connect(elasticsearch_url, index_prefix=prefix).drop_all()


@pytest.mark.parametrize(
    ("role", "args", "action", "needed"),
    [
        ("technician", ["params", "save", "strict", "VALUES"], "save parameter set", "scientist"),
        ("technician", ["delete", "example-continuous", "--yes"], "delete", "admin"),
        ("technician", ["workflows", "publish", "qc"], "publish workflow", "admin"),
        ("scientist", ["delete", "example-continuous", "--yes"], "delete", "admin"),
        ("scientist", ["workflows", "publish", "qc"], "publish workflow", "admin"),
        ("scientist", ["workflows", "unpublish", "qc"], "publish workflow", "admin"),
    ],
    ids=["tech-params-save", "tech-delete", "tech-publish", "sci-delete", "sci-publish",
         "sci-unpublish"],
)  # fmt: skip
def test_forbidden_commands_exit_4_naming_role_and_the_role_needed(
    loaded_env, tmp_path, role, args, action, needed
):
    cli_env = loaded_env
    values = tmp_path / "values.yaml"
    values.write_text("peak_picking: {snr_threshold: 3}\n", encoding="utf-8")
    args = [str(values) if a == "VALUES" else a for a in args]
    result = CliRunner().invoke(main, args, env=as_role(cli_env, role))
    assert result.exit_code == 4, result.output
    assert f"refused: a-{role} has the {role} role, which may not {action}" in result.output
    assert f"needs the {needed} role" in result.output
    shown = run(cli_env, "show", "example-continuous", "--json")
    assert shown.exit_code == 0  # nothing was deleted
    assert json.loads(run(cli_env, "params", "list", "--json").output)[0]["id"] == "default@v1"


def test_token_mode_needs_a_known_token(loaded_env, tmp_path):
    cli_env = loaded_env
    tokens = tmp_path / "tokens.yaml"
    _, sci_token = TokensFile(tokens).add("sam", "scientist")
    env = {**cli_env, "EM2Q_AUTH_MODE": "token", "EM2Q_TOKENS_FILE": str(tokens)}
    anonymous = CliRunner().invoke(main, ["search", "--json"], env=env)
    assert anonymous.exit_code == 4
    assert "no API token" in anonymous.output
    values = tmp_path / "values.yaml"
    values.write_text("peak_picking: {snr_threshold: 4}\n", encoding="utf-8")
    saved = CliRunner().invoke(
        main, ["--token", sci_token, "params", "save", "t", str(values), "--json"], env=env
    )
    assert saved.exit_code == 0, saved.output
    assert json.loads(saved.output)["author"] == "sam"
    wrong = CliRunner().invoke(main, ["search"], env={**env, "EM2Q_TOKEN": "guess"})
    assert wrong.exit_code == 4
    assert "not recognised" in wrong.output


def test_admin_publishes_and_deletes(cli_env):
    run(cli_env, "dev", "--once")
    listed = json.loads(run(cli_env, "workflows", "list", "--json").output)
    assert {w["name"]: w["published"] for w in listed} == {
        "standard": False, "reprocess": False, "qc": False,
    }  # fmt: skip
    assert run(cli_env, "workflows", "publish", "qc").output.strip() == "published qc"
    technician = json.loads(
        run(as_role(cli_env, "technician"), "workflows", "list", "--json").output
    )
    assert {w["name"]: w["you_may_start"] for w in technician} == {
        "standard": False, "reprocess": False, "qc": True,
    }  # fmt: skip
    deleted = json.loads(run(cli_env, "delete", "example-processed", "--yes", "--json").output)
    assert deleted["deleted"] == "example-processed" and deleted["files"] == 2
    gone = CliRunner().invoke(main, ["show", "example-processed"], env=cli_env)
    assert gone.exit_code == 1
    assert not (Path(cli_env["EM2Q_STORAGE"]) / "measurements" / "example-processed").exists()


@pytest.fixture(scope="module")
def platform_env(dagster_platform, tmp_path_factory):
    from tests.em2q_assets.conftest import register_copy

    register_copy(
        dagster_platform.store, tmp_path_factory.mktemp("cli"), "Example_Continuous", "cli-run"
    )
    settings = dagster_platform.settings
    return {
        "EM2Q_ELASTICSEARCH_URL": settings.elasticsearch_url,
        "EM2Q_INDEX_PREFIX": settings.index_prefix,
        "EM2Q_STORAGE": settings.storage,
        "EM2Q_CACHE_DIR": str(settings.cache_dir),
        "EM2Q_DAGSTER_URL": settings.dagster_url,
    }


def test_run_launches_a_workflow_and_status_shows_it(platform_env):
    technician = as_role(platform_env, "technician")
    refused = CliRunner().invoke(main, ["run", "cli-run", "-w", "reprocess"], env=technician)
    assert refused.exit_code == 4
    assert "not published yet" in refused.output
    assert "em2q workflows publish reprocess" in refused.output

    launched = run(as_role(platform_env, "scientist"), "run", "cli-run", "-w", "qc", "--json")
    assert launched.exit_code == 0, launched.output
    launch = json.loads(launched.output)
    assert launch["url"] == f"{platform_env['EM2Q_DAGSTER_URL']}/runs/b/{launch['id']}?tab=runs"
    DagsterAPI(platform_env["EM2Q_DAGSTER_URL"]).cancel(launch["id"])  # free the run slots

    status = json.loads(run(technician, "status", "cli-run", "--json").output)
    assert status["status"] == "PROCESSING"  # the launch moved it on (lifecycle: launcher)
    assert status["status_detail"]["run_id"] == launch["id"]
    assert status["status_detail"]["message"] == "qc workflow started by a-scientist (default@v1)"
    assert status["next"] == "wait: the platform is processing it"
    assert status["parameter_set"] == "default@v1"
    assert "not processed yet" in status["qc_missing"]
    text = run(technician, "status", "cli-run").output
    assert text.startswith("cli-run: PROCESSING  qc workflow started by a-scientist")
    assert "QC: qc_report of measurement 'cli-run' is not processed yet" in text


def test_unknown_workflow_and_unreachable_dagster(platform_env):
    unknown = CliRunner().invoke(main, ["run", "cli-run", "-w", "nope"], env=platform_env)
    assert unknown.exit_code == 1
    assert "no workflow 'nope'" in unknown.output
    away = {**platform_env, "EM2Q_DAGSTER_URL": "http://127.0.0.1:9"}
    result = CliRunner().invoke(main, ["run", "cli-run"], env=away)
    assert result.exit_code == 3
    assert "did not answer" in result.output


def test_status_of_a_processed_measurement_shows_verdict_results_and_runs(
    platform_env, dagster_platform, tmp_path
):
    from tests.em2q_assets.conftest import register_copy
    from tests.fixtures.dagster import materialize_measurement

    register_copy(dagster_platform.store, tmp_path, "Example_Processed", "cli-done")
    materialize_measurement(dagster_platform.settings, "cli-done")
    summary = json.loads(run(platform_env, "status", "cli-done", "--json").output)
    assert summary["status"] == "READY"
    assert summary["qc"]["ok"] is True
    assert all(summary["results"].values())
    assert {r["url"] for r in summary["runs"]} == {
        f"{platform_env['EM2Q_DAGSTER_URL']}/runs/{r['run_id']}" for r in summary["runs"]
    }
    text = run(platform_env, "status", "cli-done").output
    assert "QC (default@v1): good enough to analyse" in text
    assert "pass tic_coverage = 1 (needs >= " in text
    assert "results: raw_measurement, mean_spectrum, tic_image, qc_report" in text


def test_run_wait_with_a_parameter_set_processes_the_measurement_with_that_set(
    platform_env, dagster_platform, tmp_path
):
    """`em2q run ID --workflow reprocess --parameter-set NAME --wait`, as in the README: the
    command follows the backfill to its end, exits 0, and the results are the named set's."""
    from tests.em2q_assets.conftest import register_copy
    from tests.fixtures.dagster import materialize_measurement

    register_copy(dagster_platform.store, tmp_path, "Example_Continuous", "cli-wait")
    assert all(r.success for r in materialize_measurement(dagster_platform.settings, "cli-wait"))
    scientist = as_role(platform_env, "scientist")
    values = tmp_path / "lenient.yaml"
    values.write_text("qc: {min_median_snr: 2}\n", encoding="utf-8")
    assert run(scientist, "params", "save", "cli-lenient", str(values)).exit_code == 0
    waited = run(
        scientist, "run", "cli-wait", "--workflow", "reprocess", "--parameter-set", "cli-lenient",
        "--wait", "--timeout", "500", "--json",
    )  # fmt: skip
    assert waited.exit_code == 0, waited.output
    ended = json.loads(waited.output)
    assert ended["ok"] is True and ended["runs"]
    assert {r["status"] for r in ended["runs"]} == {"SUCCESS"}
    status = json.loads(
        run(platform_env, "status", "cli-wait", "-p", "cli-lenient", "--json").output
    )
    assert status["status"] == "READY"
    assert status["parameter_set"] == "cli-lenient@v1"
    assert status["qc"]["ok"] is True  # judged by the lenient set's own bar
    (median_snr,) = [c for c in status["qc"]["checks"] if c["name"] == "median_snr"]
    assert median_snr["threshold"] == 2.0
    store = dagster_platform.store
    store.refresh()
    reports = store.search(
        load_schema().WorkflowRun,
        filters={"measurement_id": "cli-wait", "workflow": "qc_report"},
        page_size=20,
    ).hits
    assert sorted(r.parameter_set_id for r in reports) == ["cli-lenient@v1", "default@v1"]
