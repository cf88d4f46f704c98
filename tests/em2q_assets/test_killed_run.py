"""A run killed in the middle of a measurement's chunks, then executed again: the metadata and
the results end consistent (no half records, no half files visible, nothing duplicated)."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg
import numpy as np

from em2q.setup_file import read_setup
from em2q.upload import upload_measurement
from em2q_assets.definitions import build_definitions
from em2q_assets.partitions import chunk_keys
from em2q_msi.chunks import read_chunk
from em2q_msi.imzml import ImzML
from em2q_msi.synthetic import write_imzml
from em2q_resources.metadata import load_schema
from em2q_resources.settings import PROJECT_ROOT, Settings
from em2q_resources.storage import StorageResource

S = load_schema()
CHUNKS = 4
PAUSE_HOOK = Path(__file__).parents[1] / "fixtures" / "pause_hook"


def test_a_killed_chunk_run_executed_again_leaves_consistent_metadata(
    metadata_store, elasticsearch_url, tmp_path
):
    store = metadata_store
    settings = Settings(
        elasticsearch_url=elasticsearch_url,
        index_prefix=store.prefix,
        storage=str(tmp_path / "storage"),
        cache_dir=tmp_path / "cache",
        spectra_chunks=CHUNKS,
    )
    (tmp_path / "data").mkdir()
    imzml = write_imzml(tmp_path / "data" / "small", n_x=12, n_y=12, n_values=2_000)
    measurement = upload_measurement(
        imzml,
        setup=read_setup(PROJECT_ROOT / "examples" / "setup.yaml"),
        store=store,
        storage=StorageResource.from_settings(settings),
        progress=False,
        cache_dir=tmp_path / "cache",
    )
    m = measurement.id
    home = tmp_path / "dagster"
    home.mkdir()
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n", encoding="utf-8")
    instance = dg.DagsterInstance.from_config(str(home))
    instance.add_dynamic_partitions("measurement", [m])
    defs = build_definitions(settings)
    assert dg.materialize(
        list(defs.assets), selection=["raw_measurement"], partition_key=m,
        instance=instance, resources=defs.resources,
    ).success  # fmt: skip

    keys = chunk_keys(CHUNKS)
    command = [
        sys.executable, "-m", "dagster", "asset", "materialize",
        "-m", "em2q_assets.definitions", "-a", "defs",
        "--select", "spectra_chunks,preprocessed_chunks",
        "--partition-range", f"{m}|{keys[0]}...{m}|{keys[-1]}",
    ]  # fmt: skip
    env = {
        **os.environ,
        "DAGSTER_HOME": str(home),
        "EM2Q_ELASTICSEARCH_URL": elasticsearch_url,
        "EM2Q_INDEX_PREFIX": store.prefix,
        "EM2Q_STORAGE": settings.storage,
        "EM2Q_CACHE_DIR": str(settings.cache_dir),
        "EM2Q_SPECTRA_CHUNKS": str(CHUNKS),
        "EM2Q_CHUNK_WORKERS": "1",  # one chunk after the other
    }

    def chunk_records(status=None):
        store.refresh()
        filters = {"measurement_id": m, "workflow": "spectra_chunks"}
        hits = store.search(S.WorkflowRun, filters=filters, page_size=100).hits
        return [r for r in hits if status is None or r.status == status]

    # the run pauses once its first chunk is recorded (tests/fixtures/pause_hook) and is
    # killed there: between chunk 1 and the others, whatever the machine's speed
    marker = tmp_path / "paused-after-first-chunk"
    paused_env = {
        **env,
        "PYTHONPATH": os.pathsep.join([str(PAUSE_HOOK), env.get("PYTHONPATH", "")]),
        "PAUSE_AFTER_RECORD": "spectra_chunks:1",
        "PAUSE_MARKER": str(marker),
    }
    killed = subprocess.Popen(
        command, cwd=PROJECT_ROOT, env=paused_env, start_new_session=True,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    deadline = time.monotonic() + 300  # a bound against a hang, not a speed figure
    try:
        while not marker.exists():
            assert killed.poll() is None, "the run ended before its first chunk was recorded"
            assert time.monotonic() < deadline, "the run never recorded its first chunk"
            time.sleep(0.05)
    finally:
        os.killpg(killed.pid, signal.SIGKILL)
        killed.wait()
    finished_before_kill = chunk_records()
    assert len(finished_before_kill) == 1  # exactly the chunk recorded before the pause
    assert [r.partition for r in finished_before_kill] == marker.read_text().splitlines()
    killed_run = finished_before_kill[0].run_id
    # what the killed run recorded is whole: finished chunks only, no half documents
    assert all(r.status == S.RunStatus.SUCCEEDED and r.outputs for r in finished_before_kill)

    again = subprocess.run(
        command,
        cwd=PROJECT_ROOT,
        env=env,
        capture_output=True,
        text=True,
        encoding="utf-8",
        timeout=300,
    )
    assert again.returncode == 0, again.stderr[-3000:]

    records = chunk_records()
    rerun = [r for r in records if r.run_id != killed_run]
    assert len(rerun) == CHUNKS and all(r.status == S.RunStatus.SUCCEEDED for r in rerun)
    assert len({r.run_id for r in rerun}) == 1  # all chunks again in one run
    partitions = store.search(
        S.SpectraPartition, filters={"measurement_id": m}, sort=["chunk_index"], page_size=100
    ).hits
    assert [p.chunk_index for p in partitions] == list(range(CHUNKS))  # upserted, not doubled

    # the temporaries the killed writer left were swept when the chunks were written again
    results = tmp_path / "storage" / "results" / m
    assert [p for p in results.rglob("*") if ".tmp-" in p.name] == []
    # every chunk reads back exactly as the source file says
    source = ImzML.open(imzml)
    for chunk in range(CHUNKS):
        folder = tmp_path / "storage" / "results" / m / "spectra_chunks" / "raw"
        manifest = json.loads(
            (folder / f"chunk-{chunk:04d}" / "manifest.json").read_text(encoding="utf-8")
        )
        block = read_chunk(manifest["outputs"]["spectra"])
        expected = source.read_block(manifest["first_spectrum"], manifest["stop_spectrum"])
        np.testing.assert_array_equal(block.intensity, expected.intensity)
    # and the measurement finishes as if nothing had happened
    final = dg.materialize(
        list(defs.assets), selection=["mean_spectrum", "tic_image", "qc_report"],
        partition_key=m, instance=instance, resources=defs.resources, raise_on_error=False,
    )  # fmt: skip
    report = final.output_for_node("qc_report")
    assert report["measurement_id"] == m
    assert report["ok"] is True  # the synthetic peaks pass the default QC, as without a kill
    assert store.get(S.Measurement, m).doc.status == S.MeasurementStatus.READY
