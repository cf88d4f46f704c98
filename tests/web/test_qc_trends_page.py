"""The QC trends page on real QC records: the control chart marks the planted outlier only."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

from em2q_resources.metadata import load_schema
from em2q_resources.metadata.qc_records import record_qc
from em2q_resources.metadata.synthetic import measurement

S = load_schema()


def test_qc_trends_page_marks_the_outlier_in_its_metrics_chart_only(client, metadata_store):
    start = datetime(2026, 1, 1, tzinfo=UTC)
    snr = [20.1, 19.8, 20.4, 20.0, 19.6, 20.2, 20.0, 4.0]
    for day, value in enumerate(snr):
        doc = measurement(S, day, acquired_at=(start + timedelta(days=day)).isoformat())
        doc.settings.instrument_id = "qe-1"
        record_qc(metadata_store, doc, "default@v1", {"median_snr": value, "tic_coverage": 0.99})
    metadata_store.refresh("QcRecord")
    page = client.get("/qc-trends", params={"instrument": "qe-1"})
    assert page.status_code == 200
    sections = dict(
        re.findall(
            r'<section class="qc-trend" data-metric="(\w+)">(.*?)</section>', page.text, re.S
        )
    )
    assert set(sections) == {"median_snr", "tic_coverage"}
    outliers = re.findall(
        r'<circle class="out"[^>]*><title>([^<]+)</title>', sections["median_snr"]
    )
    assert outliers == ["m-0000007 (2026-01-08): 4"]
    assert 'class="out"' not in sections["tic_coverage"]
