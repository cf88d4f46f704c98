"""The asset graph on S3 storage (moto's real S3 API server) and the definitions' validity."""

from __future__ import annotations

import json
import subprocess
import sys

import fsspec

from em2q.setup_file import read_setup
from em2q.upload import upload_measurement
from em2q_assets.io_managers import ManifestIOManager
from em2q_resources.metadata import load_schema
from em2q_resources.settings import PROJECT_ROOT
from em2q_resources.storage import StorageResource
from tests.em2q_assets.conftest import EXAMPLES
from tests.em2q_assets.test_assets import materialize_measurement

S = load_schema()


def test_uploaded_measurement_is_processed_on_s3_storage(platform, s3_endpoint, s3_root):
    defs, instance, store, tmp = platform
    storage = StorageResource(
        root=s3_root,
        s3_endpoint_url=s3_endpoint.endpoint_url,
        s3_key="testing",
        s3_secret="testing",
    )
    upload_measurement(
        EXAMPLES / "Example_Processed.imzML",
        setup=read_setup(PROJECT_ROOT / "examples" / "setup.yaml"),
        store=store,
        storage=storage,
        progress=False,
        measurement_id="on-s3",
        cache_dir=tmp / "index-cache",
    )
    results = materialize_measurement(
        defs, instance, "on-s3",
        resources={
            "storage": storage,
            "io_manager": ManifestIOManager(
                storage=storage, parameter_set=defs.resources["parameter_set"]
            ),
        },
    )  # fmt: skip
    assert all(r.success for r in results)
    manifest = results[-1].output_for_node("qc_report")
    assert manifest["qc"].startswith("s3://")
    with fsspec.open(manifest["qc"], "rb", **storage.storage_options) as handle:
        report = json.load(handle)
    assert len(report["per_spectrum_tic"]) == 9
    fs = storage.fs
    assert fs.find(storage.url("results/on-s3/ion_images"))  # images written to the bucket
    assert report["ok"] is True  # the example passes the default QC, on S3 as on a folder
    assert store.get(S.Measurement, "on-s3").doc.status == S.MeasurementStatus.READY


def test_dagster_definitions_validate():
    done = subprocess.run(
        [sys.executable, "-m", "dagster", "definitions", "validate", "-w", "workspace.yaml"],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        encoding="utf-8",
        timeout=300,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
