"""``python -m em2q_assets.step``: an asset partition outside Dagster, same results and records."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import fsspec

from em2q_assets import step as step_cli
from em2q_assets.partitions import chunk_keys
from em2q_resources.metadata import load_schema
from em2q_resources.settings import PROJECT_ROOT, Settings
from tests.em2q_assets.conftest import CHUNKS, register_copy
from tests.em2q_assets.test_assets import materialize_measurement

S = load_schema()
ORDER = ["raw_measurement", "spectra_chunks", "preprocessed_chunks", "mean_spectrum",
         "tic_image", "qc_report", "peak_table", "ion_images"]  # fmt: skip


def result_files(root) -> dict[str, bytes]:
    """Result files by path under ``root``; manifests with the storage root taken out."""
    fs, base = fsspec.core.url_to_fs(str(root))
    files = {}
    for path in fs.find(base):
        data = fs.cat_file(path)
        if path.endswith("manifest.json"):
            data = data.replace(str(root).encode(), b"<root>")
        files[path[len(base) :]] = data
    return files


def test_every_asset_of_the_definitions_has_a_step(platform):
    defs, *_ = platform
    graph = defs.resolve_asset_graph()
    keys = {
        key.path[-1]
        for key in graph.get_all_asset_keys()
        if not graph.get(key).metadata.get("em2q/per_study")  # study assets: per study
    }
    assert keys == set(step_cli.steps())


def test_steps_outside_dagster_write_what_dagster_writes(platform, tmp_path):
    defs, instance, store, tmp = platform
    register_copy(store, tmp / "upload", "Example_Continuous", "cont")
    materialize_measurement(defs, instance, "cont")
    dagster_files = result_files(tmp / "storage" / "results" / "cont")

    # the same storage (the upload lives there, and records may point nowhere else), with
    # Dagster's results taken away first: the steps must write them again, byte for byte
    outside = tmp / "storage"
    shutil.rmtree(outside / "results")
    settings = Settings(
        elasticsearch_url=store.url,
        index_prefix=store.prefix,
        storage=str(outside),
        cache_dir=tmp / "cache",
        spectra_chunks=CHUNKS,
    )
    for asset in ORDER:
        chunks = range(CHUNKS) if asset in ("spectra_chunks", "preprocessed_chunks") else [None]
        for chunk in chunks:
            step_cli.run(asset, "cont", chunk=chunk, run_id="wf-1", engine="ARGO",
                         settings=settings)  # fmt: skip
    outside_files = result_files(outside / "results" / "cont")
    assert outside_files.keys() == dagster_files.keys()
    assert [k for k in dagster_files if dagster_files[k] != outside_files[k]] == []

    store.refresh()
    runs = store.search(S.WorkflowRun, filters={"run_id": "wf-1"}, page_size=100).hits
    assert {r.engine for r in runs} == {S.RunEngine.ARGO}
    assert sorted(r.partition for r in runs if r.workflow == "spectra_chunks") == [
        f"cont|{c}" for c in chunk_keys(CHUNKS)
    ]
    assert len(runs) == 2 * CHUNKS + 6
    assert all(r.status == S.RunStatus.SUCCEEDED for r in runs)


def test_the_command_line_reports_missing_upstream_and_bad_usage(platform):
    _, _, store, tmp = platform
    register_copy(store, tmp / "upload", "Example_Continuous", "cont")
    env = {
        **os.environ,
        "EM2Q_ELASTICSEARCH_URL": store.url,
        "EM2Q_INDEX_PREFIX": store.prefix,
        "EM2Q_STORAGE": str(tmp / "storage"),
        "EM2Q_SPECTRA_CHUNKS": str(CHUNKS),
    }

    def step(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "em2q_assets.step", *args],
            cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, encoding="utf-8", timeout=120,
        )  # fmt: skip

    missing = step("mean_spectrum", "--measurement", "cont")
    assert missing.returncode == 1
    assert "not materialized yet" in missing.stderr
    assert "raw_measurement" in missing.stderr and "spectra_chunks chunk 2" in missing.stderr
    assert step("no_such_asset", "--measurement", "cont").returncode == 2
    assert "per chunk" in step("spectra_chunks", "--measurement", "cont").stderr
    ingest = step("raw_measurement", "--measurement", "cont", "--run-id", "sh-1")
    assert ingest.returncode == 0, ingest.stderr
    assert json.loads(ingest.stdout.splitlines()[-1])["manifest"]["n_spectra"] == 9


def test_the_step_command_refuses_ids_outside_the_grammar_before_touching_anything(
    tmp_path, capsys, monkeypatch
):
    storage = tmp_path / "storage"
    (storage / "measurements" / "m1").mkdir(parents=True)
    (storage / "measurements" / "m1" / "data.imzML").write_bytes(b"x")
    monkeypatch.setenv("EM2Q_STORAGE", str(storage))
    for measurement_id in ("../measurements", "..", "m1/../..", "\uff0e\uff0e", "m1\x00"):
        assert step_cli.main(["raw_measurement", "--measurement", measurement_id]) == 2
        assert "is not a valid identifier" in capsys.readouterr().err
    assert step_cli.main(["raw_measurement", "--measurement", "m1", "--parameter-set", "../x"]) == 2
    assert "--parameter-set" in capsys.readouterr().err
    assert sorted(p.name for p in storage.rglob("*")) == ["data.imzML", "m1", "measurements"]
