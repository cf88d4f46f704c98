"""The step entry point: its fixed contracts, run as a real subprocess where the contract is the
process (exit status, stdout), in process otherwise; and the Dagster Pipes path end to end."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from pyimzml.ImzMLParser import ImzMLParser

from em2q_msi import steps
from em2q_msi.chunks import read_chunk
from em2q_msi.imzml import ImzML

REPO = Path(__file__).resolve().parents[2]


def run_step(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    import os

    base = {k: v for k, v in os.environ.items() if k != steps.PIPES_ENV}
    return subprocess.run(
        [sys.executable, "-m", "em2q_msi.steps", *args],
        capture_output=True,
        text=True,
        encoding="utf-8",
        cwd=REPO,
        env={**base, **(env or {})},
        timeout=120,
    )


def last_json(stdout: str) -> dict:
    return json.loads(stdout.strip().splitlines()[-1])


def test_validate_prints_ok_report_and_exits_0(example_continuous, cache_dir):
    proc = run_step("validate", example_continuous, "--cache-dir", cache_dir)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == {"ok": True, "problems": []}


def test_validate_prints_problems_and_exits_1(small_processed, broken_copy):
    path = broken_copy(small_processed, edit_ibd=lambda b: bytes([b[0] ^ 1]) + b[1:-700])
    proc = run_step("validate", path)
    assert proc.returncode == 1, proc.stderr
    report = json.loads(proc.stdout)
    assert report["ok"] is False
    assert [p["code"] for p in report["problems"]] == ["uuid_mismatch", "ibd_truncated"]
    assert all(set(p) == {"code", "message"} for p in report["problems"])


def test_validate_without_url_is_a_usage_error_exit_2():
    proc = run_step("validate")
    assert proc.returncode == 2 and "url" in proc.stderr


def test_unknown_step_is_a_usage_error():
    assert steps.main(["frobnicate", "x"]) == 2


def test_validate_of_missing_file_reports_it(tmp_path, capsys):
    assert steps.main(["validate", str(tmp_path / "none.imzML")]) == 1
    report = json.loads(capsys.readouterr().out)
    assert report["problems"][0]["code"] == "file_missing"


def test_qc_writes_its_outputs_with_tic_equal_to_pyimzml(
    example_processed, cache_dir, tmp_path, capsys
):
    out = tmp_path / "qc"
    assert steps.main(["qc", example_processed, "--out", str(out), "--cache-dir", cache_dir]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["ok"] is True and summary["n_spectra"] == 9
    assert sorted(p.name for p in out.iterdir()) == [
        "mean_spectrum.npz",
        "qc.json",
        "tic_image.npy",
        "tic_image.png",
    ]
    report = json.loads((out / "qc.json").read_text(encoding="utf-8"))
    parser = ImzMLParser(example_processed)
    expected = [float(np.sum(parser.getspectrum(i)[1], dtype=np.float64)) for i in range(9)]
    np.testing.assert_allclose(report["per_spectrum_tic"], expected, rtol=1e-12)
    assert report["total_tic"] == pytest.approx(sum(expected), rel=1e-12)
    assert report["n_spectra"] == 9 and report["mz_min"] == pytest.approx(100.0833358)
    assert {"noise", "snr", "peaks_per_spectrum"} <= set(report)
    image = np.load(out / "tic_image.npy")
    assert image.shape == (3, 3)
    assert image[0, 1] == pytest.approx(expected[1])  # x=2, y=1
    mean = np.load(out / "mean_spectrum.npz")
    assert mean["mz"].shape == mean["intensity"].shape and mean["mz"].size > 0
    assert (out / "tic_image.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_qc_rejects_bad_parameters_as_usage(example_processed, cache_dir, tmp_path, capsys):
    status = steps.main(
        [
            "qc",
            example_processed,
            "--out",
            str(tmp_path / "q"),
            "--cache-dir",
            cache_dir,
            "--params",
            '{"nonsense": {}}',
        ]
    )
    assert status == 2
    assert "unknown processing step" in json.loads(capsys.readouterr().out)["error"]["message"]


def test_qc_on_s3_writes_outputs_to_s3(small_continuous, s3_bucket, capsys):
    import fsspec

    from tests.em2q_msi.conftest import upload_pair

    bucket, options = s3_bucket
    url = "s3://" + upload_pair(small_continuous, bucket, options)
    opts = json.dumps({k: v for k, v in options.items() if k != "skip_instance_cache"})
    status = steps.main(["qc", url, "--out", f"{bucket}/results/qc", "--storage-options", opts])
    assert status == 0, capsys.readouterr()
    fs = fsspec.filesystem("s3", **options)
    report = json.loads(fs.cat_file(f"{bucket}/results/qc/qc.json"))
    here = ImzML.open(small_continuous).read_block(0, 12)
    np.testing.assert_allclose(
        report["per_spectrum_tic"], here.intensity.sum(axis=1, dtype=np.float64)
    )


def test_chunk_step_writes_chunk_i_of_k(small_processed, tmp_path, capsys):
    out = str(tmp_path / "chunk1")
    assert steps.main(["chunk", small_processed, "--k", "3", "--index", "1", "--out", out]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["first_index"] == 4 and summary["n_spectra"] == 4
    block = read_chunk(out)
    expected = ImzML.open(small_processed).read_block(4, 8)
    np.testing.assert_array_equal(block.mz, expected.mz)
    np.testing.assert_array_equal(block.intensity, expected.intensity)
    assert block.first_index == 4


def test_chunk_index_outside_k_is_a_usage_error(small_processed, tmp_path, capsys):
    assert steps.main(["chunk", small_processed, "--k", "2", "--index", "2", "--out", "x"]) == 2


def test_facts_step_prints_facts(example_continuous, cache_dir, capsys):
    assert steps.main(["facts", example_continuous, "--cache-dir", cache_dir]) == 0
    facts = json.loads(capsys.readouterr().out)["facts"]
    assert facts["mode"] == "continuous" and facts["pixel_size_um"] == {"x": 100.0, "y": 100.0}


def test_pipes_detection_is_environment_driven(monkeypatch):
    assert steps.pipes_requested({}) is False
    assert steps.pipes_requested({"DAGSTER_PIPES_CONTEXT": "x"}) is True
    monkeypatch.delenv(steps.PIPES_ENV, raising=False)
    assert steps.pipes_requested() is False


def test_pipes_launch_reports_materialization_metadata(small_continuous, tmp_path):
    """The process side of Dagster Pipes, with the file-based context and message channels
    Dagster itself uses for subprocesses; the messages file is what Dagster would read."""
    from dagster_pipes import encode_param

    messages = tmp_path / "messages.jsonl"
    context = {
        "asset_keys": ["tic_image"],
        "code_version_by_asset_key": None,
        "provenance_by_asset_key": None,
        "partition_key": None,
        "partition_key_range": None,
        "partition_time_window": None,
        "run_id": "test-run",
        "job_name": "test",
        "retry_number": 0,
        "extras": {},
    }
    env = {
        "DAGSTER_PIPES_CONTEXT": encode_param({"data": context}),
        "DAGSTER_PIPES_MESSAGES": encode_param({"path": str(messages)}),
    }
    proc = run_step(
        "chunk", small_continuous, "--k", "2", "--index", "0", "--out", str(tmp_path / "c"), env=env
    )
    assert proc.returncode == 0, proc.stderr
    assert last_json(proc.stdout)["n_spectra"] == 6  # the plain JSON line is still printed
    sent = [json.loads(line) for line in messages.read_text(encoding="utf-8").splitlines()]
    methods = [m["method"] for m in sent]
    assert methods[0] == "opened" and methods[-1] == "closed"
    materialization = next(m for m in sent if m["method"] == "report_asset_materialization")
    metadata = materialization["params"]["metadata"]
    assert metadata["n_spectra"]["raw_value"] == 6 and metadata["chunk_count"]["raw_value"] == 2
