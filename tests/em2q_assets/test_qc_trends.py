"""The ``qc_trends`` step on real QC records in Elasticsearch: an instrument's history of
in-limit measurements, then a planted outlier that the warning check names by its metric."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from em2q_assets.adapters import Partition
from em2q_assets.provenance import StepContext
from em2q_assets.quality import qc_trends
from em2q_resources import parameter_sets
from em2q_resources.catalog import asset
from em2q_resources.metadata import load_schema
from em2q_resources.metadata.synthetic import measurement
from em2q_resources.results_layout import read_json, write_qc_report
from em2q_resources.storage import StorageResource

S = load_schema()
START = datetime(2026, 1, 1, tzinfo=UTC)


def _qc_report(snr: float, coverage: float) -> dict:
    return {
        "ok": True,
        "n_spectra": 100,
        "checks": [
            {"name": "median_snr", "value": snr, "threshold": 3.0, "comparison": ">=", "passed": True},
            {"name": "tic_coverage", "value": coverage, "threshold": 0.9, "comparison": ">=", "passed": True},
        ],
    }  # fmt: skip


@pytest.fixture
def run_qc_trends(metadata_store, tmp_path):
    """``run(index, snr, coverage)``: a measurement of instrument ``qe-1`` acquired on day
    ``index``, its qc.json written, the ``qc_trends`` step run on it; returns the result."""
    storage = StorageResource(root=str(tmp_path / "storage"))
    step = StepContext(store=metadata_store, storage=storage, run_id="test-run", engine="LOCAL")
    parameters = parameter_sets.resolve(metadata_store)

    def run(index: int, snr: float, coverage: float):
        doc = measurement(S, index, acquired_at=(START + timedelta(days=index)).isoformat())
        doc.settings.instrument_id = "qe-1"
        metadata_store.create(doc, refresh=True)
        uri = write_qc_report(storage, f"qc/{doc.id}", _qc_report(snr, coverage))
        return qc_trends(step, Partition(doc.id), {"qc_report": {"qc": uri}}, parameters)

    run.storage = storage
    return run


def _history(run):
    for day, (snr, coverage) in enumerate(
        [(20.1, 0.99), (19.8, 0.98), (20.4, 0.99), (20.0, 0.985), (19.6, 0.99), (20.2, 0.98)]
    ):
        assert run(day, snr, coverage).checks[0].passed  # too few earlier ones, or in limits


def test_a_planted_qc_outlier_gets_a_warning_naming_its_metric(run_qc_trends):
    _history(run_qc_trends)
    result = run_qc_trends(10, 4.0, 0.985)
    (check,) = result.checks
    assert check.name == "qc_control_limits" and check.passed is False
    assert check.detail.startswith("median_snr = 4 outside [")
    assert "tic_coverage" not in check.detail
    assert result.manifest["outside_limits"] == ["median_snr"]


def test_a_measurement_within_the_limits_passes_the_trend_check(run_qc_trends):
    _history(run_qc_trends)
    (check,) = run_qc_trends(10, 20.05, 0.986).checks
    assert check.passed is True


def test_the_trend_chart_holds_the_instruments_history_in_time_order(run_qc_trends):
    _history(run_qc_trends)
    result = run_qc_trends(10, 4.0, 0.985)
    charts = read_json(run_qc_trends.storage, result.manifest["charts"])["charts"]
    snr = charts["median_snr"]
    assert snr["measurements"] == [f"m-{i:07d}" for i in (0, 1, 2, 3, 4, 5, 10)]
    assert snr["values"][-1] == 4.0 and snr["out_of_control"] == [False] * 6 + [True]


def test_the_trend_check_is_a_warning_declared_beside_the_qc_checks():
    (check,) = asset("qc_trends").checks
    assert (check.name, check.blocking, check.severity) == ("qc_control_limits", False, "warn")
