"""Search the catalog by m/z: every measurement's peak table, one document per feature.

A measurement's ``peak_table`` (one parameter set) becomes one ``PeakFeature`` document per
feature (m/z, frequency, mean and summed intensity, fraction of the TIC) in the
``<prefix>-peak_features`` index, whose mapping comes from the Thrift IDL like every other
index. Writing uses the official client's bulk helper; a re-materialized table replaces the
previous one (documents beyond the new feature count are deleted after the new ones are in, by id).

A query ("m/z 760.5851 ± 3 ppm with at least 1 % of the TIC") is answered in two steps:

1. the peak index: a range on ``mz`` and on ``tic_fraction``, collapsed on the measurement
   (the best-matching feature of each, by TIC fraction);
2. the measurements index: the matched ids plus any text/filters, with facets taken from the
   measurement documents themselves (instrument, organ, condition …), so facets never go stale
   when a measurement's description is edited.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from elasticsearch import NotFoundError, helpers

from em2q_resources.metadata.schema import SchemaViolation, check_identifier
from em2q_resources.metadata.store import MetadataStore, SearchPage

#: facets an m/z search shows when the caller names none (fields of the Measurement document)
DEFAULT_MZ_FACETS = (
    "settings.instrument_id",
    "settings.analyzer",
    "settings.polarity",
    "sample.organism",
    "sample.organ",
    "sample.condition",
)
#: the most measurements one m/z query gathers before the catalog filters and pages them
MAX_MATCHED_MEASUREMENTS = 10_000
_ENTITY = "PeakFeature"


class InvalidMzQuery(SchemaViolation):
    """An m/z query the catalog cannot answer (a negative m/z, a tolerance out of range …)."""


@dataclass(frozen=True)
class PeakFeatures:
    """A peak table's features as the index holds them (arrays of one length, per feature)."""

    mz: np.ndarray
    frequency: np.ndarray
    summed_intensity: np.ndarray
    #: spectra of the measurement (the mean intensity divides by it)
    spectra: int
    #: total ion current of the measurement (the TIC fraction divides by it)
    total_tic: float

    @classmethod
    def from_table(cls, mz, frequency, intensities, total_tic: float) -> PeakFeatures:
        """From a feature × spectrum matrix (dense or ``scipy.sparse``)."""
        summed = np.asarray(intensities.sum(axis=1), dtype=np.float64).ravel()
        return cls(
            np.asarray(mz, np.float64),
            np.asarray(frequency, np.float64),
            summed,
            int(intensities.shape[1]),
            float(total_tic),
        )

    @property
    def tic_fraction(self) -> np.ndarray:
        return (
            self.summed_intensity / self.total_tic
            if self.total_tic > 0
            else self.summed_intensity * 0.0
        )

    @property
    def mean_intensity(self) -> np.ndarray:
        return self.summed_intensity / max(self.spectra, 1)


@dataclass(frozen=True)
class MzMatch:
    """The feature of one measurement that matched an m/z query best (highest TIC fraction)."""

    measurement_id: str
    mz: float
    ppm_error: float
    tic_fraction: float
    frequency: float
    parameter_set_id: str


@dataclass(frozen=True)
class MzSearchPage:
    """Measurements holding the m/z (a page of them, with facets) and each one's match."""

    page: SearchPage
    matches: dict[str, MzMatch]
    #: measurements whose peak table holds the m/z, before text and filters
    measurements_with_peak: int

    @property
    def hits(self) -> list[Any]:
        return self.page.hits

    @property
    def total(self) -> int:
        return self.page.total

    @property
    def facets(self) -> dict[str, list[tuple[str, int]]]:
        return self.page.facets


def mz_window(mz: float, ppm: float) -> tuple[float, float]:
    """``(low, high)`` m/z of ``mz ± ppm`` (parts per million of ``mz``)."""
    check_mz_query(mz, ppm, 0.0)
    half = mz * ppm * 1e-6
    return mz - half, mz + half


def check_mz_query(mz: Any, ppm: Any, min_tic_fraction: Any) -> None:
    """Refuse what no peak can match, with the reason."""
    for name, value in (("mz", mz), ("ppm", ppm), ("min_tic_fraction", min_tic_fraction)):
        if (
            not isinstance(value, int | float)
            or isinstance(value, bool)
            or not math.isfinite(value)
        ):
            raise InvalidMzQuery(name, f"expected a finite number, got {value!r}")
    if mz <= 0:
        raise InvalidMzQuery("mz", f"must be positive, got {mz}")
    if not 0 < ppm <= 10_000:
        raise InvalidMzQuery("ppm", f"must be within (0, 10000] ppm, got {ppm}")
    if not 0 <= min_tic_fraction <= 1:
        raise InvalidMzQuery(
            "min_tic_fraction",
            f"a fraction of the TIC within 0–1 (0.01 is 1 %), got {min_tic_fraction}",
        )


def _document_ids(measurement_id: str, parameter_hash: str, start: int, stop: int) -> list[str]:
    return [f"{measurement_id}/{parameter_hash[:16]}/{i}" for i in range(start, stop)]


def peak_documents(
    measurement_id: str, parameter_set_id: str, parameter_hash: str, features: PeakFeatures
) -> list[dict]:
    """The ``PeakFeature`` documents of one peak table (plain dicts: the bulk helper's input)."""
    n = int(features.mz.size)
    columns = (
        features.mz.tolist(),
        features.frequency.tolist(),
        features.mean_intensity.tolist(),
        features.summed_intensity.tolist(),
        features.tic_fraction.tolist(),
    )
    ids = _document_ids(measurement_id, parameter_hash, 0, n)
    return [
        {
            "id": doc_id,
            "measurement_id": measurement_id,
            "parameter_set_id": parameter_set_id,
            "parameter_hash": parameter_hash,
            "mz": mz,
            "frequency": frequency,
            "mean_intensity": mean,
            "summed_intensity": summed,
            "tic_fraction": fraction,
        }
        for doc_id, mz, frequency, mean, summed, fraction in zip(ids, *columns, strict=True)
    ]


def index_peak_tables(
    store: MetadataStore,
    tables: Iterable[tuple[str, str, str, PeakFeatures]],
    *,
    chunk_size: int = 5000,
) -> int:
    """Index many peak tables in one bulk stream (a first load or a re-index of the catalog):
    ``(measurement_id, parameter_set_id, parameter_hash, features)`` each; the features
    written. Unlike :func:`index_peak_table` it does not look for previous, longer tables."""
    alias = store.alias(_ENTITY)

    def actions() -> Iterator[dict]:
        for measurement_id, parameter_set_id, parameter_hash, features in tables:
            _check_table(measurement_id, features)
            for d in peak_documents(measurement_id, parameter_set_id, parameter_hash, features):
                yield {"_index": alias, "_id": d["id"], "_source": d}

    written, _ = store._call(
        lambda: helpers.bulk(
            store.client, actions(), chunk_size=chunk_size, max_retries=store.attempts
        )
    )
    return int(written)


def _check_table(measurement_id: str, features: PeakFeatures) -> None:
    check_identifier(measurement_id, "measurement_id")
    if not (features.mz.size == features.frequency.size == features.summed_intensity.size):
        raise SchemaViolation("features", "mz, frequency and intensities differ in length")
    if not np.all(np.isfinite(features.mz)) or not np.all(np.isfinite(features.tic_fraction)):
        raise SchemaViolation("features", "a feature's m/z or intensity is not finite")


def index_peak_table(
    store: MetadataStore,
    measurement_id: str,
    parameter_set_id: str,
    parameter_hash: str,
    features: PeakFeatures,
    *,
    refresh: bool = False,
    replace: bool = True,
    chunk_size: int = 5000,
) -> int:
    """Index one measurement's peak table (one parameter set); returns the features written.

    The table replaces the one indexed before for the same measurement and parameter set:
    the new documents are written first, then those beyond the new feature count deleted.
    ``replace=False`` skips looking for a previous table (a first bulk load of many).
    """
    _check_table(measurement_id, features)
    alias = store.alias(_ENTITY)
    documents = peak_documents(measurement_id, parameter_set_id, parameter_hash, features)
    before = _indexed_count(store, measurement_id, parameter_hash) if replace else 0
    actions = ({"_index": alias, "_id": d["id"], "_source": d} for d in documents)
    store._call(
        lambda: helpers.bulk(
            store.client, actions, chunk_size=chunk_size, max_retries=store.attempts
        )
    )
    stale = _document_ids(measurement_id, parameter_hash, len(documents), before)
    if stale:  # (the minimal distribution has no delete-by-query: bulk deletes by id)
        deletes = ({"_op_type": "delete", "_index": alias, "_id": i} for i in stale)
        store._call(
            lambda: helpers.bulk(store.client, deletes, chunk_size=chunk_size, raise_on_error=False)
        )
    if refresh:
        store.refresh(_ENTITY)
    return len(documents)


def _measurement_query(measurement_id: str) -> dict:
    return {"bool": {"filter": [{"term": {"measurement_id": measurement_id}}]}}


def count_features(store: MetadataStore, measurement_id: str) -> int:
    """``PeakFeature`` documents of ``measurement_id`` (every parameter set)."""
    try:
        store.refresh(_ENTITY)
        answer = store._call(
            lambda: store.client.count(
                index=store.alias(_ENTITY), query=_measurement_query(measurement_id)
            )
        )
    except NotFoundError:
        return 0
    return int(answer["count"])


def delete_features(store: MetadataStore, measurement_id: str, *, chunk_size: int = 5000) -> int:
    """Remove every ``PeakFeature`` of ``measurement_id`` (all parameter sets), so an m/z search
    never returns a deleted measurement; returns the documents removed. Part of deleting a
    measurement (``em2q.client.delete_measurement``), not a delete path of its own."""
    check_identifier(measurement_id, "measurement_id")
    store.refresh(_ENTITY)
    alias = store.alias(_ENTITY)
    ids = [
        doc.id
        for doc in store.scan(store.schema.PeakFeature, filters={"measurement_id": measurement_id})
    ]
    if not ids:
        return 0
    deletes = ({"_op_type": "delete", "_index": alias, "_id": i} for i in ids)
    removed, _ = store._call(  # (the minimal distribution has no delete-by-query)
        lambda: helpers.bulk(store.client, deletes, chunk_size=chunk_size, raise_on_error=False)
    )
    store.refresh(_ENTITY)
    return int(removed)


def _indexed_count(store: MetadataStore, measurement_id: str, parameter_hash: str) -> int:
    query = {
        "bool": {
            "filter": [
                {"term": {"measurement_id": measurement_id}},
                {"term": {"parameter_hash": parameter_hash}},
            ]
        }
    }
    try:  # counting is a search: make the previous table's writes visible first
        store.refresh(_ENTITY)
        answer = store._call(lambda: store.client.count(index=store.alias(_ENTITY), query=query))
    except NotFoundError:
        return 0
    return int(answer["count"])


def peak_query(
    mz: float, ppm: float, min_tic_fraction: float = 0.0, parameter_set_id: str | None = None
) -> dict:
    """The peak-index query of ``mz ± ppm`` with at least ``min_tic_fraction`` of the TIC."""
    low, high = mz_window(mz, ppm)
    check_mz_query(mz, ppm, min_tic_fraction)
    clauses: list[dict] = [{"range": {"mz": {"gte": low, "lte": high}}}]
    if min_tic_fraction > 0:
        clauses.append({"range": {"tic_fraction": {"gte": min_tic_fraction}}})
    if parameter_set_id:
        clauses.append({"term": {"parameter_set_id": parameter_set_id}})
    return {"bool": {"filter": clauses}}


def matching_measurements(
    store: MetadataStore,
    mz: float,
    ppm: float = 3.0,
    min_tic_fraction: float = 0.0,
    *,
    parameter_set_id: str | None = None,
) -> dict[str, MzMatch]:
    """``{measurement id: its best match}`` for every measurement holding the m/z."""
    body = {
        "query": peak_query(mz, ppm, min_tic_fraction, parameter_set_id),
        # one hit per measurement, its strongest feature in the window (field collapsing is
        # cheaper than a terms aggregation with a top hit per bucket)
        "collapse": {"field": "measurement_id"},
        "sort": [{"tic_fraction": "desc"}],
        "size": MAX_MATCHED_MEASUREMENTS,
        "_source": ["measurement_id", "mz", "tic_fraction", "frequency", "parameter_set_id"],
        "track_total_hits": False,
    }
    try:
        answer = store._call(lambda: store.client.search(index=store.alias(_ENTITY), **body))
    except NotFoundError:
        return {}
    matches = {}
    for hit in answer["hits"]["hits"]:
        source = hit["_source"]
        matches[source["measurement_id"]] = MzMatch(
            measurement_id=source["measurement_id"],
            mz=source["mz"],
            ppm_error=(source["mz"] - mz) / mz * 1e6,
            tic_fraction=source["tic_fraction"],
            frequency=source["frequency"],
            parameter_set_id=source["parameter_set_id"],
        )
    return matches


def search_mz(
    store: MetadataStore,
    mz: float,
    ppm: float = 3.0,
    min_tic_fraction: float = 0.0,
    *,
    parameter_set_id: str | None = None,
    text: str | None = None,
    filters: Mapping[str, Any] | None = None,
    facets: Sequence[str] | None = None,
    sort: Sequence[str | tuple[str, bool]] = (),
    page_size: int = 20,
    page_token: str | None = None,
) -> MzSearchPage:
    """Measurements whose peak table holds ``mz ± ppm`` at ``min_tic_fraction`` of the TIC or
    more, narrowed by ``text``/``filters`` like :meth:`MetadataStore.search`, with facets of
    the measurement documents (:data:`DEFAULT_MZ_FACETS` when ``facets`` is None)."""
    if "id" in (filters or {}):
        raise InvalidMzQuery("id", "an m/z search chooses the measurements; filter on other fields")
    matches = matching_measurements(
        store, mz, ppm, min_tic_fraction, parameter_set_id=parameter_set_id
    )
    if not matches:
        return MzSearchPage(SearchPage([], 0, {}, None), {}, 0)
    schema = store.schema
    page = store.search(
        schema.Measurement,
        text=text,
        filters={**(filters or {}), "id": sorted(matches)},
        facets=list(DEFAULT_MZ_FACETS if facets is None else facets),
        sort=sort,
        page_size=page_size,
        page_token=page_token,
    )
    shown = {m.id: matches[m.id] for m in page.hits}
    return MzSearchPage(page, shown, len(matches))
