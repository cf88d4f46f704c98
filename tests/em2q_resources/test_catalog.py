"""The asset catalogue: every table that names assets is derived from it, and a new
declaration shows up in all of them (the Dagster definitions, the step CLI, the k8s op tags,
the Argo export, the workflows, the results tables)."""

from __future__ import annotations

import dataclasses
import functools
import json
import subprocess
import sys
import warnings

import dagster as dg
import pytest

from argo_bridge.export import export_workflow_templates
from em2q_assets import step as step_cli
from em2q_assets.adapters import Partition
from em2q_assets.io_managers import PARAMETER_DEPENDENT
from em2q_assets.k8s import STEP_KIND_TAG, step_kind
from em2q_assets.provenance import StepContext, StepResult
from em2q_msi.errors import StepFailed
from em2q_resources import catalog as catalog_module
from em2q_resources.catalog import (
    CATALOG,
    PARAMETER_DEPENDENT_ASSETS,
    RESULT_ASSETS,
    STEP_KINDS,
    AssetSpec,
    Automation,
    Catalog,
    InvalidCatalog,
    Partitioning,
    UnknownAsset,
    asset,
)
from em2q_resources.launcher import STEP_RESOURCES
from em2q_resources.parameter_sets import resolve as resolve_parameter_set
from em2q_resources.results_layout import manifest_key, read_json, write_json
from em2q_resources.settings import PROJECT_ROOT, Settings
from em2q_resources.storage import StorageResource
from em2q_resources.workflows import WORKFLOWS, workflows

with warnings.catch_warnings():
    warnings.simplefilter("ignore", dg.BetaWarning)
    from em2q_assets.definitions import build_definitions

CHUNKS = 3


def ion_ratio_images(
    step: StepContext, partition: Partition, inputs: dict, parameters
) -> StepResult:
    """The throwaway asset's step: the ratio of its first two ion images' m/z, written out."""
    mz = inputs["ion_images"]["mz"]
    key = f"results/{partition.measurement_id}/ion_ratio_images/{parameters.content_hash[:16]}"
    uri = write_json(step.storage, f"{key}/all/ratio.json", {"ratio": mz[0] / mz[1]})
    return StepResult(
        {"measurement_id": partition.measurement_id, "parameter_hash": parameters.content_hash,
         "outputs": {"ratio": uri}}
    )  # fmt: skip


#: a new asset, declared as docs/admin-guide.md shows: one declaration + its step function
ION_RATIOS = AssetSpec(
    "ion_ratio_images",
    step_module=__name__,
    kind="summary",
    group="results",
    inputs=("ion_images",),
    parameter_dependent=True,
    automation=Automation.AFTER_CHECKS,
    result=True,
    description="Pixel-wise ratios of pairs of ion images.",
)
WITH_RATIOS = CATALOG.with_asset(ION_RATIOS)


@functools.cache
def definitions(catalog: Catalog = CATALOG) -> dg.Definitions:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", dg.BetaWarning)
        return build_definitions(
            Settings(elasticsearch_url="http://127.0.0.1:9", spectra_chunks=CHUNKS), catalog
        )


def asset_defs(defs: dg.Definitions) -> dict[str, dg.AssetsDefinition]:
    return {a.key.path[-1]: a for a in defs.resolve_asset_graph().assets_defs}


def exported_containers(defs: dg.Definitions) -> dict[str, set[str]]:
    """``{template name: assets it runs}`` of the Argo export (read from the step commands)."""
    found = {}
    for document in export_workflow_templates(defs):
        found[document["metadata"]["name"]] = {
            t["container"]["command"][3] for t in document["spec"]["templates"] if "container" in t
        }
    return found


# -- every table is the catalogue's -----------------------------------------------------------
def test_the_definitions_have_exactly_the_catalogues_assets_with_their_upstream():
    built = asset_defs(definitions())
    studies = [spec.name for spec in CATALOG.study_assets]
    assert set(built) == {*CATALOG.names, *studies}
    graph = definitions().resolve_asset_graph()
    for spec in [*CATALOG, *CATALOG.study_assets]:
        parents = {p.path[-1] for p in graph.get(dg.AssetKey(spec.name)).parent_keys}
        assert parents == set(spec.upstream), spec.name


def test_each_assets_partitioning_is_the_declared_one():
    for name, assets_def in asset_defs(definitions()).items():
        chunked = isinstance(assets_def.partitions_def, dg.MultiPartitionsDefinition)
        assert chunked == (asset(name).partitioning is Partitioning.SPECTRA_CHUNK), name
        per_study = assets_def.partitions_def.name == "study" if not chunked else False
        assert per_study == (asset(name).partitioning is Partitioning.STUDY), name


def test_each_assets_checks_are_the_declared_blocking_checks():
    for name, assets_def in asset_defs(definitions()).items():
        declared = {(c.name, c.description) for c in asset(name).checks}
        assert {(c.name, c.description) for c in assets_def.check_specs} == declared, name
        blocking = {c.name: c.blocking for c in asset(name).checks}
        assert all(c.blocking == blocking[c.name] for c in assets_def.check_specs)
    assert {c.name for c in asset("qc_report").checks} == {
        "tic_coverage", "median_snr", "empty_pixel_fraction", "lock_mass_error_ppm"
    }  # fmt: skip


def test_each_ops_step_kind_tag_is_the_declared_kind_and_has_pod_resources():
    for name, assets_def in asset_defs(definitions()).items():
        assert assets_def.op.tags[STEP_KIND_TAG] == STEP_KINDS[name] == asset(name).kind
        assert STEP_KINDS[name] in STEP_RESOURCES


def test_parameter_dependence_in_the_definitions_is_the_declared_one():
    for name, assets_def in asset_defs(definitions()).items():
        flagged = bool(assets_def.metadata_by_key[assets_def.key].get(PARAMETER_DEPENDENT))
        assert flagged == (name in PARAMETER_DEPENDENT_ASSETS), name
    assert {
        "preprocessed_chunks", "qc_report", "qc_trends", "peak_table", "ion_images",
        "segmentation",
    } == PARAMETER_DEPENDENT_ASSETS  # fmt: skip


def test_the_step_cli_has_each_assets_step_function_named_after_it():
    steps = step_cli.steps()
    assert list(steps) == list(CATALOG.names)
    assert all(function.__name__ == name for name, function in steps.items())


def test_the_results_reader_lists_the_declared_results_upstream_first():
    from em2q import results

    assert results.RESULT_ASSETS == RESULT_ASSETS == CATALOG.results
    assert results.PARAMETER_DEPENDENT_ASSETS == PARAMETER_DEPENDENT_ASSETS
    assert RESULT_ASSETS == (
        "raw_measurement", "mean_spectrum", "tic_image", "qc_report", "peak_table", "ion_images",
        "segmentation",
    )  # fmt: skip


def test_the_workflows_select_the_catalogues_assets_as_before():
    assert WORKFLOWS["standard"].assets == CATALOG.names
    assert WORKFLOWS["reprocess"].assets == (
        "preprocessed_chunks", "qc_report", "qc_trends", "peak_table", "ion_images",
        "segmentation",
    )  # fmt: skip
    assert WORKFLOWS["qc"].assets == (
        "raw_measurement", "spectra_chunks", "preprocessed_chunks", "mean_spectrum", "qc_report"
    )  # fmt: skip


def test_the_argo_templates_run_every_asset_and_reprocess_the_parameter_dependent_ones():
    containers = exported_containers(definitions())
    assert containers == {
        "em2q-measurement": set(CATALOG.names),
        "em2q-reprocess": set(PARAMETER_DEPENDENT_ASSETS),
    }


def test_the_catalogue_and_the_workflows_load_without_dagster():
    code = (
        "import sys; import em2q_resources.catalog, em2q_resources.workflows; "
        "print(any(m == 'dagster' or m.startswith('dagster.') for m in sys.modules))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=PROJECT_ROOT, check=True
    )
    assert done.stdout.strip() == "False"


# -- a new declaration appears everywhere -----------------------------------------------------
def test_a_new_declaration_becomes_a_dagster_asset_with_its_inputs_kind_and_automation():
    built = asset_defs(definitions(WITH_RATIOS))
    studies = {spec.name for spec in CATALOG.study_assets}
    assert set(built) == set(CATALOG.names) | studies | {"ion_ratio_images"}
    new = built["ion_ratio_images"]
    assert {k.path[-1] for k in new.keys_by_input_name.values()} == {"ion_images"}
    assert new.op.tags[STEP_KIND_TAG] == "summary"
    assert new.metadata_by_key[new.key][PARAMETER_DEPENDENT] is True
    peak_table = built["peak_table"]  # declared AFTER_CHECKS too
    assert str(new.automation_conditions_by_key[new.key]) == str(
        peak_table.automation_conditions_by_key[peak_table.key]
    )
    assert "ion_ratio_images" not in asset_defs(definitions())  # the platform's own is untouched


def test_a_new_declaration_appears_in_the_step_cli_k8s_kinds_workflows_and_results():
    assert step_cli.steps(WITH_RATIOS)["ion_ratio_images"] is ion_ratio_images
    assert step_kind("ion_ratio_images", WITH_RATIOS) == "summary"
    assert WITH_RATIOS.step_kinds["ion_ratio_images"] == "summary"
    assert workflows(WITH_RATIOS)["standard"].assets[-1] == "ion_ratio_images"
    assert workflows(WITH_RATIOS)["reprocess"].assets[-1] == "ion_ratio_images"
    assert "ion_ratio_images" not in workflows(WITH_RATIOS)["qc"].assets
    assert WITH_RATIOS.results[-1] == "ion_ratio_images"
    assert "ion_ratio_images" in WITH_RATIOS.parameter_dependent


def test_a_new_declaration_appears_in_both_argo_templates():
    containers = exported_containers(definitions(WITH_RATIOS))
    assert "ion_ratio_images" in containers["em2q-measurement"]
    assert "ion_ratio_images" in containers["em2q-reprocess"]


def settings_of(store, tmp_path) -> Settings:
    return Settings(
        elasticsearch_url=store.url,
        index_prefix=store.prefix,
        storage=str(tmp_path / "storage"),
        spectra_chunks=CHUNKS,
    )


def test_the_step_cli_runs_a_new_declaration_on_its_upstream_manifest(metadata_store, tmp_path):
    settings = settings_of(metadata_store, tmp_path)
    storage = StorageResource.from_settings(settings)
    digest = resolve_parameter_set(metadata_store).content_hash
    write_json(storage, manifest_key("ion_images", "m1", None, digest), {"mz": [300.0, 150.0]})

    result = step_cli.run("ion_ratio_images", "m1", settings=settings, catalog=WITH_RATIOS)

    assert read_json(storage, result.manifest["outputs"]["ratio"]) == {"ratio": 2.0}
    stored = read_json(storage, storage.url(manifest_key("ion_ratio_images", "m1", None, digest)))
    assert stored == json.loads(json.dumps(result.manifest))


def test_the_step_cli_names_the_missing_upstream_of_a_new_declaration(metadata_store, tmp_path):
    settings = settings_of(metadata_store, tmp_path)
    with pytest.raises(StepFailed, match=r"needs what is not materialized yet: ion_images \("):
        step_cli.run("ion_ratio_images", "m1", settings=settings, catalog=WITH_RATIOS)


def test_the_step_cli_does_not_know_an_asset_the_catalogue_lacks(tmp_path):
    settings = Settings(elasticsearch_url="http://127.0.0.1:9", storage=str(tmp_path))
    with pytest.raises(step_cli.UsageError, match="unknown asset 'ion_ratio_images'"):
        step_cli.run("ion_ratio_images", "m1", settings=settings)


# -- contradictions are refused when the catalogue is built -----------------------------------
def test_an_asset_declared_twice_is_refused():
    with pytest.raises(InvalidCatalog, match="'mean_spectrum' is declared twice"):
        CATALOG.with_asset(asset("mean_spectrum"))


def test_an_upstream_declared_later_or_not_at_all_is_refused():
    with pytest.raises(InvalidCatalog, match="depends on no_such_asset, which must be declared"):
        CATALOG.with_asset(dataclasses.replace(ION_RATIOS, inputs=("no_such_asset",)))


def test_an_asset_downstream_of_a_parameter_dependent_one_must_be_parameter_dependent():
    with pytest.raises(InvalidCatalog, match="declare parameter_dependent=True"):
        CATALOG.with_asset(dataclasses.replace(ION_RATIOS, parameter_dependent=False))


def test_a_declaration_without_its_step_function_is_refused_when_the_definitions_are_built():
    nameless = dataclasses.replace(ION_RATIOS, name="ion_ratio_maps")
    with pytest.raises(InvalidCatalog, match="has no step function ion_ratio_maps"):
        definitions(CATALOG.with_asset(nameless))


def test_an_unknown_asset_name_says_which_exist():
    with pytest.raises(UnknownAsset, match="no asset 'peaks'; the catalogue declares raw_meas"):
        catalog_module.asset("peaks")
