"""The one ``Definitions`` of the EM²Q code location, composed from settings and the asset
catalogue (:mod:`em2q_resources.catalog`): every asset is built from its declaration."""

from __future__ import annotations

import dagster as dg

from em2q_assets import sensors
from em2q_assets.adapters import build_assets, build_study_assets
from em2q_assets.chain import build_chain_jobs
from em2q_assets.external_runs import external_materializations
from em2q_assets.io_managers import ManifestIOManager
from em2q_assets.k8s import run_executor, step_retry_policy
from em2q_resources.catalog import CATALOG, Catalog
from em2q_resources.connections import open_storage
from em2q_resources.launcher import StepLauncherResource
from em2q_resources.lifecycle import Stage
from em2q_resources.metadata.resource import MetadataStoreResource, ParameterSetResource
from em2q_resources.settings import Settings

DEFAULT_ELASTICSEARCH_URL = "http://127.0.0.1:9200"


def build_definitions(
    settings: Settings | None = None, catalog: Catalog = CATALOG
) -> dg.Definitions:
    """The code location: ``catalog`` 's assets, the sensors, resources and executor."""
    settings = settings or Settings.from_env()
    # loading the definitions needs no cluster (`dagster definitions validate`)
    metadata = MetadataStoreResource.from_settings(
        settings, url=settings.elasticsearch_url or DEFAULT_ELASTICSEARCH_URL
    )
    storage = open_storage(settings)
    # configured at launch, so the IO manager's field and the steps' resource are one instance:
    # a set chosen in the launchpad (resources.parameter_set.config.name) is the hash both the
    # steps write under and the IO manager reads under
    parameter_set = ParameterSetResource.configure_at_launch(metadata=metadata)
    step_launcher = StepLauncherResource.from_settings(settings)
    retry_policy = step_retry_policy(settings.run_executor)  # a lost step pod runs again
    assets = build_assets(
        settings.spectra_chunks, catalog, settings.chunk_workers, retry_policy=retry_policy
    )
    stage_assets = catalog.stage_assets
    return dg.Definitions(
        # One process per run, steps in it: a run's steps are short and share imports (numba
        # kernels, the Elasticsearch client); heavy fan-out happens across runs (partitions).
        # EM2Q_RUN_EXECUTOR=k8s_job: a Kubernetes Job per step instead (em2q_assets.k8s).
        executor=run_executor(settings.run_executor, step_launcher),
        # each asset's op tagged with its step kind's pod resources (k8s_job_executor, argo_bridge)
        assets=[*assets, *build_study_assets(catalog, retry_policy)],
        # the chain's three jobs, each run requesting the next (em2q_assets.chain)
        jobs=build_chain_jobs(settings.dagster_url, stage_assets, settings.spectra_chunks),
        sensors=[
            sensors.build_new_measurements_sensor(catalog.ingest),
            sensors.build_ingested_measurements_sensor(catalog.ingest, settings.spectra_chunks),
            sensors.build_chunked_measurements_sensor(
                stage_assets[Stage.CHUNKS][-1], settings.spectra_chunks
            ),
            *sensors.build_lifecycle_sensors(settings.dagster_url, settings.stalled_after_s),
            external_materializations,
            # stopped by default: the chain's sensors request each stage the moment the one
            # before has done its work (em2q_assets.sensors); the eager conditions would request
            # the measurement-level assets a second time. An admin who wants a person's UI run
            # of an upstream asset propagated downstream starts it (docs/admin-guide.md).
            dg.AutomationConditionSensorDefinition(
                "em2q_automation",
                target=dg.AssetSelection.all(),
                minimum_interval_seconds=30,
                default_status=dg.DefaultSensorStatus.STOPPED,
            ),
        ],
        resources={
            "metadata": metadata,
            "storage": storage,
            "parameter_set": parameter_set,
            "step_launcher": step_launcher,
            "io_manager": ManifestIOManager(storage=storage, parameter_set=parameter_set),
        },
    )


defs = build_definitions()
