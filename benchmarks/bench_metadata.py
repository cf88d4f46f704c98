"""Metadata store benchmarks on a real local Elasticsearch.

1. Bulk-ingest N realistic Measurement documents through ``MetadataStore.bulk_put`` (schema
   validation + Thrift → JSON included) and, in the same run, the same documents as prepared
   dicts through the raw ``elasticsearch.helpers.bulk``; prints documents/s and the ratio
   (target ≥ 0.8×).
2. With those documents loaded: p50/p95 latency of a faceted catalog query (full text +
   3 filters + 5 facets) and of a get-by-id (target p95 ≤ 50 ms for the catalog query).

Run: ``make bench`` or ``.venv/bin/python -m benchmarks.bench_metadata [--documents N]``.
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
import uuid

from elasticsearch import helpers

from em2q_resources.elasticsearch_server import elasticsearch_url
from em2q_resources.metadata import MetadataStore, load_schema
from em2q_resources.metadata import schema as sch
from em2q_resources.metadata.synthetic import OPERATORS, ORGANISMS, WORDS, measurement
from em2q_resources.settings import Settings


def percentile(samples: list[float], q: float) -> float:
    return statistics.quantiles(samples, n=100, method="inclusive")[int(q) - 1]


def bench_ingest(url: str, n_documents: int, rounds: int) -> tuple[MetadataStore, list]:
    schema = load_schema()
    rng = random.Random(7)
    print(f"generating {n_documents:,} measurements …", flush=True)
    docs = [measurement(schema, i, rng) for i in range(n_documents)]
    raw_sources = [sch.to_document(d) for d in docs]
    best_raw = best_store = 0.0
    store = None
    for round_index in range(rounds):
        raw = MetadataStore.connect(url, index_prefix=f"bench-raw-{uuid.uuid4().hex[:6]}")
        raw.ensure_indices()
        alias = raw.alias("Measurement")
        started = time.perf_counter()
        ok, errors = helpers.bulk(
            raw.client,
            ({"_index": alias, "_id": s["id"], "_source": s} for s in raw_sources),
            chunk_size=1000,
            stats_only=True,
        )
        raw_rate = n_documents / (time.perf_counter() - started)
        assert ok == n_documents and not errors
        raw.drop_all()

        if store is not None:
            store.drop_all()
        store = MetadataStore.connect(url, index_prefix=f"bench-store-{uuid.uuid4().hex[:6]}")
        store.ensure_indices()
        started = time.perf_counter()
        result = store.bulk_put(docs, chunk_size=1000)
        store_rate = n_documents / (time.perf_counter() - started)
        assert result.ok and result.succeeded == n_documents
        print(
            f"  round {round_index + 1}: raw helpers.bulk {raw_rate:,.0f} docs/s, "
            f"MetadataStore.bulk_put {store_rate:,.0f} docs/s",
            flush=True,
        )
        best_raw, best_store = max(best_raw, raw_rate), max(best_store, store_rate)
    print(
        f"bulk ingest of {n_documents:,} Measurement documents: store {best_store:,.0f} docs/s, "
        f"raw helper {best_raw:,.0f} docs/s, ratio {best_store / best_raw:.2f}x (target >= 0.8x)"
    )
    store.refresh()
    return store, docs


def bench_queries(store: MetadataStore, docs: list, n_queries: int) -> None:
    schema = load_schema()
    rng = random.Random(11)
    for _ in range(20):  # warm caches the way a running catalog is warm
        store.search(schema.Measurement, text=rng.choice(WORDS), page_size=20)
    catalog_ms = []
    for _ in range(n_queries):
        started = time.perf_counter()
        page = store.search(
            schema.Measurement,
            text=rng.choice(WORDS),
            filters={
                "settings.polarity": rng.choice(["POSITIVE", "NEGATIVE"]),
                "sample.organism": rng.choice(ORGANISMS),
                "settings.resolving_power": {"gte": rng.choice([10_000, 50_000, 100_000])},
            },
            facets=[
                "settings.analyzer",
                "settings.source",
                "status",
                "operator",
                "sample.organ",
            ],
            sort=[("uploaded_at", True)],
            page_size=20,
        )
        catalog_ms.append((time.perf_counter() - started) * 1000)
        assert page.facets["status"] is not None
    get_ms = []
    for _ in range(n_queries):
        doc_id = rng.choice(docs).id
        started = time.perf_counter()
        store.get(schema.Measurement, doc_id)
        get_ms.append((time.perf_counter() - started) * 1000)
    assert OPERATORS  # facets above include the operator names these documents carry
    print(
        f"catalog query (text + 3 filters + 5 facets) on {len(docs):,} docs: "
        f"p50 {percentile(catalog_ms, 50):.1f} ms, p95 {percentile(catalog_ms, 95):.1f} ms "
        f"(target p95 <= 50 ms; ratio to target {percentile(catalog_ms, 95) / 50:.2f})"
    )
    print(
        f"get by id: p50 {percentile(get_ms, 50):.1f} ms, p95 {percentile(get_ms, 95):.1f} ms "
        f"(catalog p95 / get p95 = {percentile(catalog_ms, 95) / percentile(get_ms, 95):.1f}x)"
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--documents", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--queries", type=int, default=300)
    args = parser.parse_args(argv)
    settings = Settings.from_env()
    with elasticsearch_url(settings) as url:
        store, docs = bench_ingest(url, args.documents, args.rounds)
        try:
            bench_queries(store, docs, args.queries)
        finally:
            store.drop_all()


if __name__ == "__main__":
    main()
