"""The asset graph exported as Argo WorkflowTemplates: valid, and a mirror of the definitions."""

from __future__ import annotations

import copy
import json
import warnings

import dagster as dg
import jsonschema
import pytest
import yaml
from click.testing import CliRunner

from argo_bridge.export import export_workflow_templates, task_dependencies
from em2q_assets.io_managers import PARAMETER_DEPENDENT, PER_STUDY
from em2q_assets.k8s import STEP_RETRY_LIMIT, step_kind
from em2q_assets.partitions import chunk_keys
from em2q_resources.launcher import step_resources
from em2q_resources.settings import Settings
from tests.argo_bridge.argo_schema import SCHEMA_PATH, argo_errors

with warnings.catch_warnings():
    warnings.simplefilter("ignore", dg.BetaWarning)
    from em2q_assets.definitions import build_definitions

CHUNKS = 3


def definitions(**settings) -> dg.Definitions:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", dg.BetaWarning)
        return build_definitions(
            Settings(
                elasticsearch_url="http://127.0.0.1:9", **{"spectra_chunks": CHUNKS, **settings}
            )
        )


@pytest.fixture(scope="module")
def defs() -> dg.Definitions:
    return definitions()


@pytest.fixture(scope="module")
def exported(defs) -> dict[str, dict]:
    return {d["metadata"]["name"]: d for d in export_workflow_templates(defs)}


def templates_by_name(document: dict) -> dict[str, dict]:
    return {t["name"]: t for t in document["spec"]["templates"]}


def containers_by_asset(document: dict) -> dict[str, dict]:
    """``{asset: container template}`` read from the commands (``… em2q_assets.step ASSET``)."""
    found = {}
    for template in document["spec"]["templates"]:
        if "container" in template:
            command = template["container"]["command"]
            assert command[:3] == ["python", "-m", "em2q_assets.step"], command
            assert command[3] not in found, f"two templates run {command[3]}"
            found[command[3]] = template
    return found


def where_runs(document: dict) -> dict[str, tuple[str, str]]:
    """``{asset: (DAG template, task)}`` placing each asset's step in the exported DAGs."""
    templates = templates_by_name(document)
    containers = {t["name"]: asset for asset, t in containers_by_asset(document).items()}
    placed = {}
    for template in templates.values():
        for task in template.get("dag", {}).get("tasks", []):
            if task["template"] in containers:
                placed[containers[task["template"]]] = (template["name"], task["name"])
    return placed


def main_task_of(document: dict, asset: str) -> str:
    """The entrypoint DAG's task that runs ``asset`` (itself, or the fan-out containing it)."""
    dag_name, task = where_runs(document)[asset]
    entry = document["spec"]["entrypoint"]
    if dag_name == entry:
        return task
    for main_task in templates_by_name(document)[entry]["dag"]["tasks"]:
        if main_task["template"] == dag_name:
            return main_task["name"]
    raise AssertionError(f"{asset}: its DAG {dag_name} is not called from {entry}")


def test_every_exported_document_is_valid_argo_with_no_unknown_key(exported):
    assert set(exported) == {"em2q-measurement", "em2q-reprocess"}
    for name, document in exported.items():
        assert document["apiVersion"] == "argoproj.io/v1alpha1"
        assert document["kind"] == "WorkflowTemplate"
        assert argo_errors(document) == [], name


def test_the_strict_validator_catches_what_the_published_schema_lets_through(exported):
    document = copy.deepcopy(exported["em2q-measurement"])
    assert isinstance(document["spec"]["templates"][0]["retryStrategy"]["limit"], int)
    document["spec"]["templates"][0]["retryStategy"] = {"limit": 1}  # misspelled
    document["spec"]["templates"][0]["container"]["resources"]["limits"]["memory"] = 4
    errors = argo_errors(document)
    assert any("retryStategy" in e for e in errors)
    assert any("limits/memory" in e for e in errors)
    published = json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))
    loose = jsonschema.Draft202012Validator(
        {
            "definitions": published["definitions"],
            "$ref": "#/definitions/io.argoproj.workflow.v1alpha1.WorkflowTemplate",
        }
    )
    del document["spec"]["templates"][0]["container"]["resources"]["limits"]["memory"]
    errors = list(loose.iter_errors(document))
    # the quirks: the misspelled key passes, integers in IntOrString fields do not
    assert errors and all(isinstance(e.instance, int) for e in errors)
    assert {e.absolute_path[-1] for e in errors} == {"limit", "factor"}
    assert not any("retryStategy" in e.absolute_path for e in errors)


def measurement_asset_keys(graph) -> list[dg.AssetKey]:
    """The assets a measurement's workflow runs (study assets are partitioned by study)."""
    return [k for k in graph.get_all_asset_keys() if not graph.get(k).metadata.get(PER_STUDY)]


def test_one_container_per_asset_runs_the_step_entry_point(defs, exported):
    document = exported["em2q-measurement"]
    graph = defs.resolve_asset_graph()
    assets = {key.path[-1]: graph.get(key) for key in measurement_asset_keys(graph)}
    containers = containers_by_asset(document)
    assert set(containers) == set(assets)
    for asset, template in containers.items():
        command = template["container"]["command"]
        spectra_level = isinstance(assets[asset].partitions_def, dg.MultiPartitionsDefinition)
        assert ("--chunk" in command) == spectra_level, asset
        assert command[4:6] == ["--measurement", "{{inputs.parameters.measurement}}"]
        assert command[-6:] == [
            "--parameter-set",
            "{{workflow.parameters.parameter_set}}",
            "--run-id",
            "{{workflow.name}}",
            "--engine",
            "ARGO",
        ]
        assert template["container"]["resources"] == step_resources(step_kind(asset))
        assert template["retryStrategy"]["limit"] == STEP_RETRY_LIMIT
        assert template["metadata"]["labels"]["em2q/step-kind"] == step_kind(asset)
    parameters = document["spec"]["arguments"]["parameters"]
    assert parameters == [
        {"name": "measurement", "description": "measurement id (its partition key)"},
        {
            "name": "parameter_set",
            "value": "default",
            "description": "parameter set name (newest version) or name@vN",
        },
    ]


def test_the_dag_mirrors_every_asset_dependency(defs, exported):
    document = exported["em2q-measurement"]
    graph = defs.resolve_asset_graph()
    placed = where_runs(document)
    dependencies = {
        name: task_dependencies(template)
        for name, template in templates_by_name(document).items()
        if "dag" in template
    }
    checked = 0
    for key in measurement_asset_keys(graph):
        asset = key.path[-1]
        for parent_key in graph.get(key).parent_keys:
            parent = parent_key.path[-1]
            dag_name, task = placed[asset]
            if placed[parent][0] == dag_name:  # same DAG: a direct task dependency
                assert placed[parent][1] in dependencies[dag_name][task], (parent, asset)
            else:  # across the fan-out: the entrypoint's tasks depend on each other
                entry = document["spec"]["entrypoint"]
                waiting, awaited = main_task_of(document, asset), main_task_of(document, parent)
                assert awaited in dependencies[entry][waiting], (parent, asset)
            checked += 1
    assert checked >= 12  # the graph's 13 edges today; guards against an empty walk


def test_spectra_level_assets_fan_out_over_the_chunk_keys_and_merge_before_the_rest(exported):
    document = exported["em2q-measurement"]
    entry = templates_by_name(document)[document["spec"]["entrypoint"]]
    fan_outs = [t for t in entry["dag"]["tasks"] if "withItems" in t]
    assert len(fan_outs) == 1
    fan_out = fan_outs[0]
    assert fan_out["withItems"] == chunk_keys(CHUNKS)
    assert {"name": "chunk", "value": "{{item}}"} in fan_out["arguments"]["parameters"]
    per_chunk = templates_by_name(document)[fan_out["template"]]
    assert [t["name"] for t in per_chunk["dag"]["tasks"]] == [
        "spectra-chunks",
        "preprocessed-chunks",
    ]
    waits_for_chunks = {
        name for name, deps in task_dependencies(entry).items() if fan_out["name"] in deps
    }
    assert waits_for_chunks == {
        "mean-spectrum",
        "tic-image",
        "qc-report",
        "peak-table",
        "ion-images",
        "segmentation",
    }


@pytest.mark.parametrize("chunks", [1, 5, 12])
def test_changing_k_changes_the_fan_out(chunks):
    document = export_workflow_templates(definitions(spectra_chunks=chunks))[0]
    entry = templates_by_name(document)[document["spec"]["entrypoint"]]
    (fan_out,) = [t for t in entry["dag"]["tasks"] if "withItems" in t]
    assert fan_out["withItems"] == chunk_keys(chunks)
    assert len(fan_out["withItems"]) == chunks
    assert argo_errors(document) == []


def test_image_and_environment_come_from_the_settings():
    defs = definitions(
        image="registry.example/em2q:1.2",
        namespace="imaging",
        env_config_maps=("em2q-config",),
        env_secrets=("em2q-es", "em2q-s3"),
    )
    document = export_workflow_templates(defs)[0]
    assert document["metadata"]["namespace"] == "imaging"
    for template in containers_by_asset(document).values():
        assert template["container"]["image"] == "registry.example/em2q:1.2"
        assert template["container"]["envFrom"] == [
            {"configMapRef": {"name": "em2q-config"}},
            {"secretRef": {"name": "em2q-es"}},
            {"secretRef": {"name": "em2q-s3"}},
        ]
    overridden = export_workflow_templates(defs, image="other:2")[0]
    assert {t["container"]["image"] for t in containers_by_asset(overridden).values()} == {
        "other:2"
    }


def test_reprocess_template_runs_only_the_parameter_dependent_assets(defs, exported):
    graph = defs.resolve_asset_graph()
    dependent = {
        key.path[-1]
        for key in graph.get_all_asset_keys()
        if graph.get(key).metadata.get(PARAMETER_DEPENDENT)
    }
    assert set(containers_by_asset(exported["em2q-reprocess"])) == dependent
    assert "spectra_chunks" not in dependent and "preprocessed_chunks" in dependent


def test_export_argo_command_writes_one_valid_yaml_per_template(tmp_path):
    from em2q.cli import main

    result = CliRunner().invoke(
        main, ["export-argo", "--out", str(tmp_path), "--chunks", "2", "--image", "em2q:test"]
    )
    assert result.exit_code == 0, result.output
    written = sorted(tmp_path.glob("*.yaml"))
    assert [p.name for p in written] == ["em2q-measurement.yaml", "em2q-reprocess.yaml"]
    for path in written:
        assert f"wrote {path}" in result.output
        document = yaml.safe_load(path.read_text(encoding="utf-8"))
        assert argo_errors(document) == []
        containers = containers_by_asset(document)
        assert {t["container"]["image"] for t in containers.values()} == {"em2q:test"}
