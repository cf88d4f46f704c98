"""The results layout: exact keys (unchanged since results were first written), exact bytes,
one manifest spelling, one qc.json format, and surfaces that read results without Dagster's
layer."""

from __future__ import annotations

import io
import json
import math
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from em2q_msi.qc import QCError, measurement_summary
from em2q_msi.qc_report import build_qc_report
from em2q_msi.temporaries import MARK
from em2q_resources import results_layout as layout
from em2q_resources.storage import StorageResource

REPO = Path(__file__).resolve().parents[2]
DIGEST = "0123456789abcdef" + "f" * 48  # a parameter-set hash: its first 16 hex name the folder


@pytest.fixture
def storage(tmp_path: Path) -> StorageResource:
    return StorageResource(root=str(tmp_path / "storage"))


def test_result_keys_are_spelled_as_the_stored_results_are():
    assert layout.result_key("m-1", "spectra_chunks", None, 3) == (
        "results/m-1/spectra_chunks/raw/chunk-0003"
    )
    assert layout.result_key("m-1", "peak_table", DIGEST, None) == (
        "results/m-1/peak_table/0123456789abcdef/all"
    )


def test_manifest_key_is_the_manifest_json_of_the_result_folder():
    assert layout.manifest_key("qc_report", "m-1", None, DIGEST) == (
        "results/m-1/qc_report/0123456789abcdef/all/manifest.json"
    )
    assert layout.manifest_key("preprocessed_chunks", "m-1", 12, DIGEST) == (
        "results/m-1/preprocessed_chunks/0123456789abcdef/chunk-0012/manifest.json"
    )


def test_a_manifest_written_through_the_layout_lands_at_its_exact_key_with_exact_bytes(
    storage, tmp_path
):
    key = layout.manifest_key("tic_image", "m-7", None, None)

    url = layout.write_json(storage, key, {"outputs": {"png": "x"}, "n": math.nan, "a": 1})

    path = tmp_path / "storage" / "results" / "m-7" / "tic_image" / "raw" / "all" / "manifest.json"
    assert url == storage.url(key) and Path(url.removeprefix("file://")) == path
    assert path.read_bytes() == b'{\n "a": 1,\n "n": null,\n "outputs": {\n  "png": "x"\n }\n}'
    assert [p.name for p in path.parent.iterdir()] == ["manifest.json"]  # no temporary left
    assert layout.read_json(storage, url) == {"a": 1, "n": None, "outputs": {"png": "x"}}


def test_an_array_is_stored_as_plain_npy(storage):
    array = np.arange(6, dtype="<f4").reshape(2, 3)[:, ::2]  # not contiguous: stored C-ordered
    url = layout.write_npy(storage, "results/m-1/tic_image/raw/all/image.npy", array)
    expected = io.BytesIO()
    np.save(expected, np.ascontiguousarray(array), allow_pickle=False)
    assert layout.read_bytes(storage, url) == expected.getvalue()
    np.testing.assert_array_equal(layout.read_npy(storage, url), array)


def test_the_first_write_into_a_folder_sweeps_a_dead_writers_temporary(storage, tmp_path):
    folder = tmp_path / "storage" / "results" / "m-2" / "mean_spectrum" / "raw" / "all"
    folder.mkdir(parents=True)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, encoding="utf-8", check=True)  # fmt: skip
    from em2q_msi import temporaries

    orphan = folder / f".mz.npy{MARK}{temporaries._HOST}-{int(dead.stdout)}-abc123"
    orphan.write_bytes(b"half")

    layout.write_npy(storage, "results/m-2/mean_spectrum/raw/all/mz.npy", np.zeros(2))

    assert sorted(p.name for p in folder.iterdir()) == ["mz.npy"]


def qc_inputs():
    metrics = {
        "tic": np.array([1.0, 2.0, 3.0]),
        "snr": np.array([5.0, np.inf, 7.0]),
        "noise": np.array([1.0, 0.0, 1.0]),
        "n_peaks": np.array([2, 3, 4]),
        "n_nonzero": np.array([1, 1, 1]),
    }
    return metrics, measurement_summary(metrics, (1, 3))


def test_qc_json_of_the_platform_keeps_its_fields_and_bytes(storage):
    metrics, summary = qc_inputs()
    about = {"measurement_id": "m-1", "parameter_set": "default@v1"}
    folder = layout.result_key("m-1", "qc_report", DIGEST, None)

    url = layout.write_qc_report(storage, folder, build_qc_report(metrics, summary, about))

    assert url == storage.url(f"{folder}/qc.json")
    expected = {
        **summary.to_dict(),
        "measurement_id": "m-1",
        "parameter_set": "default@v1",
        "per_spectrum_tic": [1.0, 2.0, 3.0],
        "snr": {"min": 5.0, "median": 6.0, "max": 7.0, "not_finite": 1,
                "reason": "1 of 3 spectra left out: noise estimate 0, SNR not a number"},
        "noise": {"min": 0.0, "median": 1.0, "max": 1.0},
        "peaks_per_spectrum": {"min": 2.0, "median": 3.0, "max": 4.0},
    }  # fmt: skip
    assert layout.read_bytes(storage, url) == layout.json_bytes(expected)
    assert layout.read_qc_report(storage, url) == json.loads(layout.json_bytes(expected))


def test_about_fields_may_not_overwrite_the_verdict():
    metrics, summary = qc_inputs()
    with pytest.raises(QCError, match=r"\['ok'\]"):
        build_qc_report(metrics, summary, {"ok": True})


def test_a_file_that_is_not_a_qc_report_is_named(storage):
    url = layout.write_json(storage, "results/m-1/qc_report/raw/all/qc.json", {"checks": []})
    with pytest.raises(QCError, match=re.escape(f"{url}: not a QC report (no boolean 'ok')")):
        layout.read_qc_report(storage, url)


def test_the_surfaces_name_no_results_layout_of_the_dagster_layer():
    pattern = re.compile(r"em2q_assets(\.|\s+import\s+)(storage_io|io_managers|run_failures)\b")
    offenders = [
        f"{path.relative_to(REPO)}:{number}"
        for path in sorted((REPO / "em2q").rglob("*.py"))
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if pattern.search(line)
    ]
    assert offenders == []


def test_the_surfaces_load_no_dagster_asset_module():
    code = (
        "import sys, em2q.results, em2q.client, em2q.web.app\n"
        "print(sorted(m for m in sys.modules if m.startswith('em2q_assets.')))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          encoding="utf-8", check=True, cwd=REPO)  # fmt: skip
    # the results layout, the workflows and the catalogue live below the Dagster layer
    assert set(json.loads(done.stdout.replace("'", '"'))) == set()


def test_written_files_carry_the_sha256_and_size_of_the_stored_bytes(tmp_path):
    import hashlib

    from em2q_resources.results_layout import checksum_of, write_json, write_npy

    storage = StorageResource(root=str(tmp_path))
    for url in (
        write_npy(storage, "r/a.npy", np.arange(5.0)),
        write_json(storage, "r/b.json", {"x": 1}),
    ):
        stored = (tmp_path / "r" / url.rsplit("/", 1)[1]).read_bytes()
        assert url.checksum.sha256 == hashlib.sha256(stored).hexdigest()
        assert url.checksum.size == len(stored)
        assert checksum_of(storage, url) == url.checksum


def test_a_folder_checksum_changes_when_one_of_its_files_does(tmp_path):
    from em2q_resources.results_layout import checksum_of

    storage = StorageResource(root=str(tmp_path))
    (tmp_path / "chunk" / "sub").mkdir(parents=True)
    (tmp_path / "chunk" / "meta.json").write_bytes(b"{}")
    (tmp_path / "chunk" / "sub" / "mz.npy").write_bytes(b"12345")
    before = checksum_of(storage, storage.url("chunk"))
    assert before.size == 7
    (tmp_path / "chunk" / "sub" / "mz.npy").write_bytes(b"12346")
    assert checksum_of(storage, storage.url("chunk")).sha256 != before.sha256


def test_checksum_of_a_missing_file_raises_file_not_found(tmp_path):
    from em2q_resources.results_layout import checksum_of

    storage = StorageResource(root=str(tmp_path))
    with pytest.raises(FileNotFoundError):
        checksum_of(storage, storage.url("gone.npy"))
