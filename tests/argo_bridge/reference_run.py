"""The Dagster side of comparing a Workflow run on Argo with a Dagster run: one measurement
materialized in process, its WorkflowRun documents and result files (tests/cluster/test_argo.py)."""

import warnings

import dagster as dg

from em2q_assets.partitions import chunk_keys
from em2q_resources.catalog import CATALOG
from em2q_resources.lifecycle import Stage
from em2q_resources.metadata import load_schema
from em2q_resources.metadata.store import MetadataStore
from em2q_resources.settings import Settings
from tests.em2q_assets.conftest import remember_storage

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
