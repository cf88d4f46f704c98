"""The one ``Definitions`` of the EM²Q code location, composed from settings."""

from __future__ import annotations

import dagster as dg

from em2q_assets import measurements, quality, sensors, summaries
from em2q_assets.external_runs import external_materializations
from em2q_assets.io_managers import ManifestIOManager
from em2q_assets.k8s import run_executor, with_k8s_config
from em2q_assets.spectra import build_spectra_assets
from em2q_resources.connections import open_storage
from em2q_resources.launcher import StepLauncherResource
from em2q_resources.metadata.resource import MetadataStoreResource
from em2q_resources.parameter_sets import ParameterSetResource
from em2q_resources.settings import Settings

DEFAULT_ELASTICSEARCH_URL = "http://127.0.0.1:9200"


def build_definitions(settings: Settings | None = None) -> dg.Definitions:
    settings = settings or Settings.from_env()
    # loading the definitions needs no cluster (`dagster definitions validate`)
    metadata = MetadataStoreResource.from_settings(
        settings, url=settings.elasticsearch_url or DEFAULT_ELASTICSEARCH_URL
    )
    storage = open_storage(settings)
    # chosen per run in the launchpad: resources.parameter_set.config.name (default: "default")
    parameter_set = ParameterSetResource(metadata=metadata)
    step_launcher = StepLauncherResource.from_settings(settings)
    chunk_assets = build_spectra_assets(settings.spectra_chunks, settings.chunk_workers)
    return dg.Definitions(
        # One process per run, steps in it: a run's steps are short and share imports (numba
        # kernels, the Elasticsearch client); heavy fan-out happens across runs (partitions).
        # EM2Q_RUN_EXECUTOR=k8s_job: a Kubernetes Job per step instead (em2q_assets.k8s).
        executor=run_executor(settings.run_executor, step_launcher),
        # each asset's op tagged with its step kind's pod resources (k8s_job_executor, argo_bridge)
        assets=with_k8s_config(
            [
                measurements.raw_measurement,
                *chunk_assets,
                summaries.mean_spectrum,
                summaries.tic_image,
                summaries.peak_table,
                summaries.ion_images,
                quality.qc_report,
            ]
        ),
        sensors=[
            sensors.new_measurements,
            sensors.build_ingested_measurements_sensor(chunk_assets, settings.spectra_chunks),
            *sensors.build_lifecycle_sensors(settings.dagster_url, settings.stalled_after_s),
            external_materializations,
            dg.AutomationConditionSensorDefinition(
                "em2q_automation",
                target=dg.AssetSelection.all(),
                minimum_interval_seconds=1,
                default_status=dg.DefaultSensorStatus.RUNNING,
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
