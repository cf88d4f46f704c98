"""An exported WorkflowTemplate, its containers run here in template order, leaves the same
``WorkflowRun`` documents and the same result files as a Dagster run of the same measurement:
the catalog cannot tell an Argo run from a Dagster one."""

import os
import uuid
import warnings

import dagster as dg
import numpy as np
import pytest
from pyimzml.ImzMLParser import ImzMLParser

from argo_bridge.export import export_workflow_templates
from em2q_assets.partitions import chunk_keys
from em2q_resources.catalog import CATALOG
from em2q_resources.connections import set_up_metadata_store
from em2q_resources.lifecycle import Stage
from em2q_resources.metadata import load_schema
from em2q_resources.metadata.store import MetadataStore
from em2q_resources.settings import Settings
from em2q_resources.storage import StorageResource
from tests.argo_bridge.local_argo import LocalWorkflow
from tests.em2q_assets.conftest import EXAMPLES, register_copy, remember_storage

pytest.importorskip(
    "em2q_assets.step", reason="needs the step entry point python -m em2q_assets.step"
)

S = load_schema()
CHUNKS = 2
MEASUREMENT = "m-argo"
SPECTRA_LEVEL = ["spectra_chunks", "preprocessed_chunks"]


def definitions(settings: Settings) -> dg.Definitions:
    from em2q_assets.definitions import build_definitions

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", dg.BetaWarning)
        return build_definitions(settings)


def settings_for(url: str, prefix: str, folder) -> Settings:
    return remember_storage(
        Settings(
            elasticsearch_url=url,
            index_prefix=prefix,
            storage=str(folder / "storage"),
            cache_dir=folder / "cache",
            spectra_chunks=CHUNKS,
        )
    )


def step_environment(settings: Settings) -> dict[str, str]:
    """What the em2q-settings ConfigMap gives a container, on top of a clean environment."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("EM2Q_", "DAGSTER_"))}
    return {
        **clean,
        "EM2Q_ELASTICSEARCH_URL": settings.elasticsearch_url,
        "EM2Q_INDEX_PREFIX": settings.index_prefix,
        "EM2Q_STORAGE": settings.storage,
        "EM2Q_CACHE_DIR": str(settings.cache_dir),
        "EM2Q_SPECTRA_CHUNKS": str(settings.spectra_chunks),
    }


def materialize_in_dagster(defs: dg.Definitions) -> None:
    instance = dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions("measurement", [MEASUREMENT])
    assets, resources = list(defs.assets), defs.resources
    measurement_level = list(CATALOG.stage_assets[Stage.MEASUREMENT])  # not the study assets
    dg.materialize(
        assets, selection=["raw_measurement"], partition_key=MEASUREMENT, instance=instance,
        resources=resources,
    )  # fmt: skip
    for chunk in chunk_keys(CHUNKS):
        key = dg.MultiPartitionKey({"measurement": MEASUREMENT, "spectra_chunk": chunk})
        dg.materialize(
            assets, selection=SPECTRA_LEVEL, partition_key=key, instance=instance,
            resources=resources,
        )  # fmt: skip
    dg.materialize(
        assets, selection=measurement_level, partition_key=MEASUREMENT, instance=instance,
        resources=resources, raise_on_error=False,
    )  # fmt: skip


def runs_of(store: MetadataStore) -> dict[tuple[str, str], object]:
    store.refresh()
    hits = store.search(S.WorkflowRun, filters={"measurement_id": MEASUREMENT}, page_size=200).hits
    return {(run.workflow, run.partition): run for run in hits}


def result_files(root) -> dict[str, bytes]:
    base = root / "results"
    return {
        str(path.relative_to(base)): path.read_bytes()
        for path in sorted(base.rglob("*"))
        if path.is_file()
    }


@pytest.fixture
def second_store(elasticsearch_url):
    store = MetadataStore.connect(elasticsearch_url, index_prefix=f"test-{uuid.uuid4().hex[:8]}")
    set_up_metadata_store(store)
    yield store
    store.drop_all()


def test_exported_steps_run_in_template_order_match_a_dagster_run(
    metadata_store, second_store, elasticsearch_url, tmp_path
):
    dagster_settings = settings_for(elasticsearch_url, metadata_store.prefix, tmp_path / "dagster")
    argo_settings = settings_for(elasticsearch_url, second_store.prefix, tmp_path / "argo")
    register_copy(metadata_store, tmp_path / "upload-d", "Example_Processed", MEASUREMENT)
    register_copy(second_store, tmp_path / "upload-a", "Example_Processed", MEASUREMENT)

    materialize_in_dagster(definitions(dagster_settings))
    document = export_workflow_templates(definitions(argo_settings))[0]
    commands = LocalWorkflow(
        document,
        arguments={"measurement": MEASUREMENT},
        name="em2q-measurement-x7k2p",
        env=step_environment(argo_settings),
    ).run()

    # template order: ingest, each chunk's two steps, then the measurement-level steps
    started = [(c[3], c[c.index("--chunk") + 1] if "--chunk" in c else None) for c in commands]
    assert started[0] == ("raw_measurement", None)
    assert sorted(started[1 : 1 + 2 * CHUNKS]) == sorted(
        (asset, chunk) for asset in SPECTRA_LEVEL for chunk in chunk_keys(CHUNKS)
    )
    for chunk in chunk_keys(CHUNKS):
        assert started.index(("spectra_chunks", chunk)) < started.index(
            ("preprocessed_chunks", chunk)
        )
    assert started.index(("qc_report", None)) < started.index(("peak_table", None))

    dagster_runs, argo_runs = runs_of(metadata_store), runs_of(second_store)
    assert set(argo_runs) == set(dagster_runs)
    assert len(argo_runs) == 1 + 2 * CHUNKS + len(CATALOG.stage_assets[Stage.MEASUREMENT])
    dagster_root = StorageResource(root=dagster_settings.storage).url()
    argo_root = StorageResource(root=argo_settings.storage).url()
    for key, argo in argo_runs.items():
        dagster = dagster_runs[key]
        assert argo.engine == S.RunEngine.ARGO and dagster.engine == S.RunEngine.DAGSTER
        assert argo.run_id == "em2q-measurement-x7k2p"
        assert argo.status == dagster.status == S.RunStatus.SUCCEEDED, key
        assert (argo.parameter_set_id, argo.parameter_set_hash, argo.code_version) == (
            dagster.parameter_set_id,
            dagster.parameter_set_hash,
            dagster.code_version,
        )
        assert [(o.name, o.uri.replace(argo_root, ""), o.sha256) for o in argo.outputs] == [
            (o.name, o.uri.replace(dagster_root, ""), o.sha256) for o in dagster.outputs
        ], key

    dagster_files = result_files(tmp_path / "dagster" / "storage")
    argo_files = result_files(tmp_path / "argo" / "storage")
    assert set(argo_files) == set(dagster_files)
    arrays = [name for name in argo_files if name.endswith(".npy")]
    assert len(arrays) > 20
    for name in arrays:  # results are deterministic: the same bytes, whoever computed them
        assert argo_files[name] == dagster_files[name], name
    statuses = {
        store.get(S.Measurement, MEASUREMENT).doc.status for store in (metadata_store, second_store)
    }
    assert statuses == {S.MeasurementStatus.READY}  # the example passes the default QC
    # and the bytes are the right ones, not only equal: the TIC image holds pyimzML's TICs
    (tic_image,) = [name for name in arrays if name.endswith("/tic_image.npy")]
    image = np.load(tmp_path / "argo" / "storage" / "results" / tic_image)
    reference = ImzMLParser(str(EXAMPLES / "Example_Processed.imzML"))
    tics = [float(np.sum(reference.getspectrum(i)[1], dtype=np.float64)) for i in range(9)]
    assert image.shape == (3, 3)
    np.testing.assert_allclose(np.sort(image, axis=None), np.sort(tics), rtol=1e-6)
