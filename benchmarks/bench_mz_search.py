"""Catalog search by m/z on a real local Elasticsearch.

N synthetic measurements (default 10,000; ``--quick``: 1,000), each with a peak table of F
features (default 100) drawn from a shared pool of compound m/z values with a per-measurement
mass shift (σ 1.5 ppm) and a TIC share per feature, are indexed with
``peak_index.index_peak_tables`` (the official client's bulk helper, one stream), their Measurement
documents with ``MetadataStore.bulk_put``. Then Q random pool m/z are searched at ±3 ppm (half
of them with ≥ 1 % of the TIC) through ``peak_index.search_mz`` (peak index + catalog page with
facets) → p50/p95 in ms; TARGET p95 ≤ 200 ms. Baseline in the same run: the same queries
answered by ``numpy.searchsorted`` over the same peak lists held in memory (sorted m/z), whose
answers must equal the index's; the ratio says what the service costs over a plain call.

Run: ``.venv/bin/python -m benchmarks.bench_mz_search [--quick] [--measurements N]``
(``EM2Q_ELASTICSEARCH_URL`` for a running cluster, else a local one is started). The quick
run takes about a minute; the full one about five minutes (1 M documents).
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
import uuid

import numpy as np

from em2q_resources.elasticsearch_server import elasticsearch_url
from em2q_resources.metadata import MetadataStore, load_schema
from em2q_resources.metadata.peak_index import (
    PeakFeatures,
    index_peak_tables,
    matching_measurements,
    search_mz,
)
from em2q_resources.metadata.synthetic import measurement
from em2q_resources.settings import Settings

TARGET_P95_MS = 200.0
PPM = 3.0
MIN_TIC = 0.01


def percentile(samples: list[float], q: int) -> float:
    return statistics.quantiles(samples, n=100, method="inclusive")[q - 1]


def synthetic_tables(n: int, features: int, pool_size: int, seed: int = 7):
    """``(pool, tables)``: each table is ``(mz, tic_fraction)`` of one measurement."""
    rng = np.random.default_rng(seed)
    pool = np.sort(rng.uniform(100.0, 1200.0, pool_size))
    tables = []
    for _ in range(n):
        chosen = rng.choice(pool_size, features, replace=False)
        shift_ppm = rng.normal(0.0, 1.5)
        mz = pool[chosen] * (1 + (shift_ppm + rng.normal(0.0, 0.3, features)) * 1e-6)
        share = rng.lognormal(0.0, 1.2, features)
        tables.append((mz, share / share.sum() * rng.uniform(0.3, 0.9)))
    return pool, tables


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1,000 measurements")
    parser.add_argument("--measurements", type=int, default=None)
    parser.add_argument("--features", type=int, default=100, help="features per peak table")
    parser.add_argument("--queries", type=int, default=200)
    args = parser.parse_args(argv)
    n = args.measurements or (1_000 if args.quick else 10_000)
    schema = load_schema()
    pool, tables = synthetic_tables(n, args.features, pool_size=20 * args.features)
    ids = [f"m-{i:07d}" for i in range(n)]

    with elasticsearch_url(Settings.from_env()) as url:
        store = MetadataStore.connect(url, index_prefix=f"bench-mz-{uuid.uuid4().hex[:6]}")
        store.ensure_indices()
        try:
            rng = random.Random(7)
            assert store.bulk_put([measurement(schema, i, rng) for i in range(n)]).ok
            alias = store.alias("PeakFeature")  # a bulk load: no refreshes until it is in
            store.client.indices.put_settings(index=alias, settings={"refresh_interval": "-1"})
            started = time.perf_counter()
            index_peak_tables(
                store,
                (
                    (i, "default@v1", "ab" * 32,
                     PeakFeatures(mz, np.full(mz.size, 0.5), fraction * 1e6, 1000, 1e6))
                    for i, (mz, fraction) in zip(ids, tables, strict=True)
                ),
            )  # fmt: skip
            store.client.indices.put_settings(index=alias, settings={"refresh_interval": None})
            store.refresh()
            seconds = time.perf_counter() - started
            documents = n * args.features
            print(
                f"indexed {n:,} peak tables ({documents:,} features) in {seconds:.1f} s: "
                f"{documents / seconds:,.0f} features/s",
                flush=True,
            )

            # the baseline: every feature in memory, sorted by m/z
            all_mz = np.concatenate([t[0] for t in tables])
            all_fraction = np.concatenate([t[1] for t in tables])
            owner = np.repeat(np.arange(n), [t[0].size for t in tables])
            order = np.argsort(all_mz, kind="stable")
            all_mz, all_fraction, owner = all_mz[order], all_fraction[order], owner[order]

            def plain(mz: float, min_tic: float) -> set[str]:
                half = mz * PPM * 1e-6
                a, b = np.searchsorted(all_mz, [mz - half, mz + half], side="left")
                b = np.searchsorted(all_mz, mz + half, side="right")
                keep = all_fraction[a:b] >= min_tic
                return {ids[i] for i in np.unique(owner[a:b][keep])}

            queries = np.random.default_rng(11).choice(pool, args.queries)
            for mz in queries[:5]:  # warm the caches of both
                search_mz(store, float(mz), PPM)
            service, lookup, baseline = [], [], []
            for k, mz in enumerate(queries):
                min_tic = MIN_TIC if k % 2 else 0.0
                started = time.perf_counter()
                page = search_mz(store, float(mz), PPM, min_tic)
                service.append((time.perf_counter() - started) * 1e3)
                started = time.perf_counter()
                matched = matching_measurements(store, float(mz), PPM, min_tic)
                lookup.append((time.perf_counter() - started) * 1e3)
                started = time.perf_counter()
                expected = plain(float(mz), min_tic)
                baseline.append((time.perf_counter() - started) * 1e3)
                assert set(matched) == expected, f"m/z {mz}: the index and numpy disagree"
                assert page.measurements_with_peak == len(expected)
        finally:
            store.drop_all()

    p50, p95 = percentile(service, 50), percentile(service, 95)
    b50, b95 = percentile(baseline, 50), percentile(baseline, 95)
    print(
        f"m/z search ±{PPM:g} ppm over {n:,} measurements ({args.queries} queries, half with "
        f"≥ {MIN_TIC:.0%} TIC): search_mz p50 {p50:.1f} ms, p95 {p95:.1f} ms "
        f"(TARGET p95 ≤ {TARGET_P95_MS:.0f} ms: {'met' if p95 <= TARGET_P95_MS else 'MISSED'}); "
        f"peak index alone p50 {percentile(lookup, 50):.1f} ms, p95 {percentile(lookup, 95):.1f} ms"
    )
    print(
        f"baseline numpy.searchsorted in memory: p50 {b50:.3f} ms, p95 {b95:.3f} ms; "
        f"ratio search_mz/numpy p95 {p95 / b95:,.0f}x (same answers for every query)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
