"""QC numbers in the catalog: one ``QcRecord`` per measurement and parameter set, so the QC
of an instrument can be charted over time (``em2q_msi.qc_trends``) without opening every
``qc.json``. Written by the ``qc_trends`` asset; read by it, the web page and the client."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from em2q_resources.metadata.schema import utc_now
from em2q_resources.metadata.store import MetadataStore


def instrument_of(measurement: Any) -> str:
    """What a control chart groups by: the setup's instrument id, else the analyzer's name."""
    settings = measurement.settings
    if getattr(settings, "instrument_id", None):
        return settings.instrument_id
    from em2q_resources.metadata import load_schema

    analyzer = settings.analyzer
    return load_schema().Analyzer._VALUES_TO_NAMES.get(analyzer, str(analyzer))


def record_qc(
    store: MetadataStore,
    measurement: Any,
    parameter_set_id: str,
    numbers: Mapping[str, float],
    *,
    refresh: bool = False,
) -> Any:
    """Write (or replace) the ``QcRecord`` of ``measurement`` under ``parameter_set_id``."""
    s = store.schema
    record = s.QcRecord(
        id=f"{measurement.id}/{parameter_set_id}",
        measurement_id=measurement.id,
        parameter_set_id=parameter_set_id,
        instrument=instrument_of(measurement),
        acquired_at=measurement.acquired_at or measurement.uploaded_at,
        metrics=[s.QcMetric(name=k, value=float(v)) for k, v in sorted(numbers.items())],
        recorded_at=utc_now(),
    )
    store.update(record, None, refresh=refresh)
    return record


def instrument_history(
    store: MetadataStore, instrument: str, parameter_set_id: str | None = None
) -> list[Any]:
    """Every ``QcRecord`` of ``instrument`` (of one parameter set, when given), oldest first
    (acquisition time, then measurement id)."""
    filters: dict[str, Any] = {"instrument": instrument}
    if parameter_set_id:
        filters["parameter_set_id"] = parameter_set_id
    records = list(store.scan(store.schema.QcRecord, filters=filters))
    return sorted(records, key=lambda r: (r.acquired_at, r.measurement_id))


def instruments(store: MetadataStore) -> list[tuple[str, int]]:
    """``(instrument, QC records)`` of every instrument with QC records."""
    page = store.search(store.schema.QcRecord, facets=["instrument"], page_size=1)
    return page.facets.get("instrument", [])


def numbers_of(record: Any) -> dict[str, float]:
    return {m.name: m.value for m in record.metrics}
