"""Provenance against real materializations (issue 17): output checksums, verify, stale
partitions after a code change, reprocessing only those, and certificates.

One measurement (the official continuous example, 3 chunks) is materialized once for the
module; tests that tamper with storage put the bytes back; the reprocess test runs last.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from pathlib import Path

import dagster as dg
import fsspec
import pytest

from em2q import provenance as prov
from em2q_assets.definitions import build_definitions
from em2q_assets.partitions import chunk_keys
from em2q_resources import code_versions
from em2q_resources.connections import set_up_metadata_store
from em2q_resources.metadata import load_schema
from em2q_resources.metadata.store import MetadataStore
from em2q_resources.results_layout import manifest_key
from em2q_resources.settings import Settings
from em2q_resources.storage import StorageResource
from tests.em2q_assets.conftest import CHUNKS, register_copy, remember_storage
from tests.em2q_assets.test_assets import MEASUREMENT_LEVEL, SPECTRA_LEVEL, materialize_measurement

S = load_schema()
M = "prov"
CHUNK_PARTITIONS = [f"{M}|{key}" for key in chunk_keys(CHUNKS)]


@pytest.fixture(scope="module")
def made(elasticsearch_url, tmp_path_factory):
    """The example measurement materialized once: (defs, instance, store, storage)."""
    tmp = tmp_path_factory.mktemp("provenance")
    store = MetadataStore.connect(elasticsearch_url, index_prefix=f"test-{uuid.uuid4().hex[:8]}")
    set_up_metadata_store(store)
    settings = remember_storage(
        Settings(
            elasticsearch_url=elasticsearch_url, index_prefix=store.prefix,
            storage=str(tmp / "storage"), cache_dir=tmp / "cache", spectra_chunks=CHUNKS,
        )
    )  # fmt: skip
    defs = build_definitions(settings)
    instance = dg.DagsterInstance.ephemeral()
    register_copy(store, tmp / "upload", "Example_Continuous", M)
    assert all(r.success for r in materialize_measurement(defs, instance, M))
    yield defs, instance, store, StorageResource(root=settings.storage), settings
    store.drop_all()


def swap_kernel(module: str, function: str):
    """Read ``module`` with ``function`` redefined at its end: a changed kernel, as the code
    versions see it (returns the previous reader, for ``code_versions.restore``)."""
    original = code_versions.read_module_source

    def read(name: str) -> str | None:
        source = original(name)
        if name == module and source is not None:
            source += f"\n\ndef {function}(*args, **kwargs):\n    return None  # swapped\n"
        return source

    return code_versions.use_sources(read)


@pytest.fixture
def swapped_peak_picking():
    previous = swap_kernel("em2q_msi.peaks", "preprocess_and_pick")
    yield
    code_versions.restore(previous)


def _local(url: str) -> Path:
    return Path(fsspec.core.url_to_fs(url)[1])


def _sha256(url: str) -> str:
    with fsspec.open(url, "rb") as handle:
        return hashlib.sha256(handle.read()).hexdigest()


def _folder_sha256(url: str) -> tuple[str, int]:
    fs, root = fsspec.core.url_to_fs(url)
    lines, total = [], 0
    for path in sorted(fs.find(root)):
        data = fs.cat_file(path)
        lines.append(f"{path[len(root.rstrip('/')) + 1 :]} {hashlib.sha256(data).hexdigest()} "
                     f"{len(data)}\n")  # fmt: skip
        total += len(data)
    return hashlib.sha256("".join(lines).encode()).hexdigest(), total


def test_every_recorded_output_checksum_is_the_sha256_of_the_stored_bytes(made):
    _, _, store, _, _ = made
    runs = prov.succeeded_runs(store, M)
    outputs = [(r, o) for r in runs for o in r.outputs or []]
    assert len(outputs) > 20
    for _run, output in outputs:
        fs, path = fsspec.core.url_to_fs(output.uri)
        if fs.isdir(path):  # a chunk of spectra: the digest of its files' digests
            assert (output.sha256, output.size) == _folder_sha256(output.uri), output.uri
        else:
            assert output.sha256 == _sha256(output.uri), output.uri
            assert output.size == fs.size(path)


def test_manifests_carry_the_checksums_their_run_recorded(made):
    _, _, store, storage, _ = made
    for run in prov.succeeded_runs(store, M):
        if not run.outputs:
            continue
        chunk = int(run.partition.split("|")[1]) if "|" in run.partition else None
        manifest = json.loads(
            fsspec.open(
                storage.url(manifest_key(run.workflow, M, chunk, run.parameter_set_hash)), "rb"
            )
            .open()
            .read()
        )
        assert manifest["checksums"] == {
            o.name: {"sha256": o.sha256, "size": o.size} for o in run.outputs
        }


def test_workflow_runs_record_each_steps_own_code_version(made):
    _, _, store, _, _ = made
    from em2q_resources.catalog import CATALOG

    for run in prov.succeeded_runs(store, M):
        assert run.code_version == CATALOG.code_version(run.workflow)


def test_a_step_in_a_pod_records_the_image_digest_and_the_same_checksums(made):
    from em2q_assets import step as step_cli

    _, _, store, _, settings = made
    digest = "sha256:" + "ab" * 32
    step_cli.run(
        "mean_spectrum", M, run_id="pod-run", settings=settings.with_overrides(image_digest=digest)
    )
    runs = [r for r in prov.succeeded_runs(store, M) if r.workflow == "mean_spectrum"]
    assert [r.image_digest for r in runs] == [None, digest]
    first, again = ({o.name: o.sha256 for o in r.outputs} for r in runs)
    assert again == first


def test_verify_finds_nothing_wrong_in_untouched_storage(made):
    _, _, store, storage, _ = made
    found = prov.verify(store, storage, M)
    assert found.ok and found.checked > 20 and found.unrecorded == 0


def test_verify_names_a_tampered_and_a_deleted_file(made):
    _, _, store, storage, _ = made
    runs = prov.succeeded_runs(store, M)
    tic = next(o for r in runs if r.workflow == "tic_image" for o in r.outputs if o.name == "tic")
    mz = next(o for r in runs if r.workflow == "mean_spectrum" for o in r.outputs if o.name == "mz")
    tic_path, mz_path = _local(tic.uri), _local(mz.uri)
    kept_tic, kept_mz = tic_path.read_bytes(), mz_path.read_bytes()
    try:
        tic_path.write_bytes(kept_tic[:-1] + bytes([kept_tic[-1] ^ 1]))
        mz_path.unlink()
        found = prov.verify(store, storage, M)
        assert sorted((p.asset, p.name, p.problem) for p in found.problems) == [
            ("mean_spectrum", "mz", "missing"),
            ("tic_image", "tic", "changed"),
        ]
        only_tic = prov.verify(store, storage, M, asset="tic_image")
        assert [p.uri for p in only_tic.problems] == [tic.uri]
    finally:
        tic_path.write_bytes(kept_tic)
        mz_path.write_bytes(kept_mz)


def test_certificate_of_an_untouched_result_verifies_its_whole_chain(made):
    _, _, store, storage, _ = made
    certified = prov.certificate(store, storage, M, "peak_table")
    assert certified.ok, certified.problems
    assert [u["name"] for u in certified.uploads] == ["IMZML", "IBD"]
    steps = [(s.asset, s.partition) for s in certified.steps]
    assert steps == [
        ("raw_measurement", M),
        *[("spectra_chunks", p) for p in CHUNK_PARTITIONS],
        *[("preprocessed_chunks", p) for p in CHUNK_PARTITIONS],
        ("mean_spectrum", M),
        ("qc_report", M),
        ("peak_table", M),
    ]
    assert all(s.engine == "DAGSTER" and s.code_version == s.current_code_version
               for s in certified.steps)  # fmt: skip


def test_certificate_of_a_tampered_result_fails_naming_the_file(made):
    _, _, store, storage, _ = made
    certified = prov.certificate(store, storage, M, "peak_table")
    feature_mz = next(o for s in certified.steps if s.asset == "peak_table" for o in s.outputs
                      if o["name"] == "feature_mz")  # fmt: skip
    path = _local(feature_mz["uri"])
    kept = path.read_bytes()
    try:
        path.write_bytes(kept + b"\0")
        tampered = prov.certificate(store, storage, M, "peak_table")
        assert not tampered.ok
        assert tampered.problems == [f"peak_table {M} feature_mz changed: {feature_mz['uri']}"]
    finally:
        path.write_bytes(kept)


def test_certificate_rerun_recomputes_identical_bytes_in_a_scratch_place(made, tmp_path):
    _, _, store, storage, settings = made
    before = len(prov.succeeded_runs(store, M))
    certified = prov.rerun(
        prov.certificate(store, storage, M, "mean_spectrum"), store, storage, settings, tmp_path
    )
    assert certified.ok, certified.problems
    assert {d["name"] for d in certified.rerun["identical"]} >= {"mz", "intensity", "spectra"}
    assert certified.rerun["differing"] == []
    assert len(prov.succeeded_runs(store, M)) == before  # nothing written to the platform
    assert list(tmp_path.iterdir()) == []


def cli(settings: Settings, *args: str):
    from click.testing import CliRunner

    from em2q.cli import main

    env = {
        "EM2Q_ELASTICSEARCH_URL": settings.elasticsearch_url,
        "EM2Q_INDEX_PREFIX": settings.index_prefix,
        "EM2Q_STORAGE": settings.storage,
        "EM2Q_CACHE_DIR": str(settings.cache_dir),
    }
    return CliRunner().invoke(main, list(args), env=env, catch_exceptions=False)


def test_cli_verify_passes_untouched_storage_and_fails_a_tampered_file(made):
    _, _, store, storage, settings = made
    assert cli(settings, "verify", M).exit_code == 0
    qc = next(o for r in prov.succeeded_runs(store, M) if r.workflow == "qc_report"
              for o in r.outputs)  # fmt: skip
    path = _local(qc.uri)
    kept = path.read_bytes()
    try:
        path.write_bytes(b"{}")
        result = cli(settings, "verify", "--all")
        assert result.exit_code == 1
        assert f"CHANGED: {M} qc_report {M} qc: {qc.uri}" in result.output
    finally:
        path.write_bytes(kept)


def test_cli_certificate_prints_the_chain_and_verifies(made):
    _, _, store, _, settings = made
    result = cli(settings, "certificate", f"{M}/ion_images")
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0] == f"certificate of ion_images of {M} (parameter set default@v1)"
    assert lines[-1] == "VERIFIED"
    ion_run = next(r for r in prov.succeeded_runs(store, M) if r.workflow == "ion_images")
    assert any(line.startswith(f"ion_images [{M}]") and ion_run.run_id in line for line in lines)


def test_cli_stale_and_reprocess_dry_run_name_the_same_partitions(made, swapped_peak_picking):
    _, _, _, _, settings = made
    listed = json.loads(cli(settings, "stale", "--json").output)
    assert listed["count"] == 6
    planned = json.loads(cli(settings, "reprocess", "--stale", "--dry-run", "--json").output)
    assert planned["launched"] == {}
    assert sum(len(keys) for keys in planned["plan"][M].values()) == listed["count"]


def test_nothing_is_stale_right_after_materializing(made):
    _, _, store, _, _ = made
    assert prov.stale(store).partitions == []


def test_a_changed_kernel_makes_exactly_its_dependent_partitions_stale(made, swapped_peak_picking):
    _, _, store, _, _ = made
    report = prov.stale(store)
    assert sorted((p.asset, p.partition) for p in report.partitions) == sorted(
        [("preprocessed_chunks", p) for p in CHUNK_PARTITIONS]
        + [("qc_report", M), ("peak_table", M), ("ion_images", M)]
    )
    code_changed = {p.asset for p in report.partitions if p.reasons[0].startswith("code ")}
    assert code_changed == {"preprocessed_chunks"}
    assert report.estimated_s == pytest.approx(
        sum(p.estimated_s for p in report.partitions), abs=1e-3
    )
    assert report.estimated_s > 0
    old = next(p for p in report.partitions if p.asset == "preprocessed_chunks").made_with_code
    since = prov.stale(store, since_code_version=old)
    assert {p.asset for p in since.partitions} == {"preprocessed_chunks"} and since.count == 3


def test_another_parameter_set_makes_the_parameter_dependent_partitions_stale(made):
    _, _, store, _, _ = made
    store.save_parameter_set("prov-strict", {"peak_picking": {"snr_threshold": 50}}, author="ada")
    report = prov.stale(store, parameter_set="prov-strict")
    assert sorted({p.asset for p in report.partitions}) == [
        "ion_images", "peak_table", "preprocessed_chunks", "qc_report",
    ]  # fmt: skip
    assert all("made with parameter set default@v1" in p.reasons[0] for p in report.partitions)


def test_reprocessing_the_stale_partitions_reruns_only_those(made, swapped_peak_picking):
    defs, instance, store, _, _ = made
    plan = prov.reprocess_plan(prov.stale(store))
    assert plan == {
        M: {
            "preprocessed_chunks": CHUNK_PARTITIONS,
            "qc_report": [M],
            "peak_table": [M],
            "ion_images": [M],
        }
    }
    before = {r.id for r in prov.succeeded_runs(store, M)}
    assets = list(defs.assets)
    for key in plan[M]["preprocessed_chunks"]:
        chunk = key.split("|")[1]
        partition = dg.MultiPartitionKey({"measurement": M, "spectra_chunk": chunk})
        assert dg.materialize(assets, selection=["preprocessed_chunks"], partition_key=partition,
                              instance=instance, resources=defs.resources).success  # fmt: skip
    measurement_level = [a for a in MEASUREMENT_LEVEL if a in plan[M]]
    assert dg.materialize(assets, selection=measurement_level, partition_key=M,
                          instance=instance, resources=defs.resources).success  # fmt: skip
    new = [r for r in prov.succeeded_runs(store, M) if r.id not in before]
    assert sorted({r.workflow for r in new}) == sorted(plan[M])
    assert not {"spectra_chunks", "raw_measurement"} & {r.workflow for r in new}
    assert SPECTRA_LEVEL[0] not in plan[M]
    assert prov.stale(store).partitions == []
