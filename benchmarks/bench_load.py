"""The web catalog under load, on loopback: concurrent uploads, searches, same-file and
same-name races through the real HTTP surface (uvicorn, CSRF tokens and all).

1. **mixed**: rounds of ``--uploads`` (40) concurrent uploads of distinct small imzML pairs,
   while searches arrive at ``--qps`` (50/s) on ``/catalog``, for ``--duration`` (60 s);
2. **same file**: 5 concurrent uploads of one pair → one registered, four refusals naming it;
3. **same name**: 5 concurrent saves of one parameter-set name (different values) → 5
   distinct versions.

Prints errors (target 0), p50/p95/p99 latencies, and whether every upload was registered
exactly once and every save got its own version. Exit 1 when a check fails.

Run: ``.venv/bin/python -m benchmarks.bench_load [--duration 60] [--uploads 40] [--qps 50]``.
Uses ``EM2Q_ELASTICSEARCH_URL`` when set, else starts the project's own Elasticsearch.
"""

from __future__ import annotations

import argparse
import random
import re
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing
from pathlib import Path

import httpx
import numpy as np

from em2q.setup_file import read_setup
from em2q.upload import file_sha256
from em2q.web import create_app
from em2q.web.forms import setup_form_values
from em2q.web.server import serve_in_thread
from em2q_msi.synthetic import write_imzml
from em2q_resources.elasticsearch_server import elasticsearch_url
from em2q_resources.metadata import MetadataStore, load_schema
from em2q_resources.settings import PROJECT_ROOT, Settings
from em2q_resources.storage import StorageResource

SETUP = read_setup(PROJECT_ROOT / "examples" / "setup.yaml")
WORDS = ["kidney", "mouse", "brain", "POSITIVE", "orbitrap", "tissue", "lipid", "example"]


def browser(url: str) -> httpx.Client:
    """An HTTP client holding the catalog's CSRF cookie and sending its token, like a page."""
    client = httpx.Client(base_url=url, timeout=120)
    client.get("/static/em2q.css")
    client.headers["X-CSRF-Token"] = client.cookies["em2q_csrf"]
    client.headers["Accept"] = "application/json"
    return client


def upload(url: str, imzml: Path, title: str) -> tuple[int, float, dict]:
    with closing(browser(url)) as client, imzml.open("rb") as xml, imzml.with_suffix(".ibd").open("rb") as ibd:  # fmt: skip
        started = time.perf_counter()
        answer = client.post(
            "/upload",
            data={**setup_form_values(SETUP), "title": title},
            files={"imzml": (imzml.name, xml), "ibd": (imzml.with_suffix(".ibd").name, ibd)},
        )
        elapsed = time.perf_counter() - started
    try:
        body = answer.json()
    except ValueError:
        body = {"text": answer.text[:300]}
    return answer.status_code, elapsed, body


def percentiles(latencies: list[float]) -> str:
    if not latencies:
        return "no requests"
    p50, p95, p99 = np.percentile(np.asarray(latencies) * 1000, [50, 95, 99])
    return f"n={len(latencies)} p50 {p50:.0f} ms, p95 {p95:.0f} ms, p99 {p99:.0f} ms"


def searches(url: str, qps: float, stop: threading.Event, record: Callable) -> None:
    """GET /catalog at a fixed rate (requests start on schedule, answered by a worker pool)."""
    with closing(browser(url)) as client, ThreadPoolExecutor(16) as pool:

        def one() -> None:
            params = {"q": " ".join(random.sample(WORDS, random.randint(0, 2)))}
            if random.random() < 0.3:
                params["f"] = random.choice(["status=UPLOADED", "settings.polarity=POSITIVE"])
            started = time.perf_counter()
            try:
                status = client.get("/catalog", params=params).status_code
            except httpx.HTTPError as exc:
                status = repr(exc)
            record(status, time.perf_counter() - started)

        next_at = time.perf_counter()
        while not stop.is_set():
            pool.submit(one)
            next_at += 1 / qps
            time.sleep(max(0.0, next_at - time.perf_counter()))


def mixed(url: str, folder: Path, args: argparse.Namespace, store: MetadataStore) -> bool:
    stop = threading.Event()
    search_log: list[tuple[object, float]] = []
    lock = threading.Lock()

    def record(status: object, elapsed: float) -> None:
        with lock:
            search_log.append((status, elapsed))

    searcher = threading.Thread(target=searches, args=(url, args.qps, stop, record), daemon=True)
    searcher.start()
    uploads: list[tuple[int, float, dict, str]] = []
    started = time.monotonic()
    round_no = 0
    while round_no == 0 or time.monotonic() - started < args.duration:
        pairs = []
        for n in range(args.uploads):
            path = write_imzml(folder / f"r{round_no}-{n}", n_x=3, n_y=3, seed=round_no * 1000 + n)
            pairs.append(Path(path))
        with ThreadPoolExecutor(args.uploads) as pool:
            answers = list(
                pool.map(lambda p: upload(url, p, f"load {p.stem}"), pairs)  # noqa: B023
            )
        uploads += [(*a, file_sha256(p)) for a, p in zip(answers, pairs, strict=True)]
        round_no += 1
    stop.set()
    searcher.join(timeout=60)
    time.sleep(1)  # the last scheduled searches finish

    upload_errors = [(s, b) for s, _, b, _ in uploads if s != 201]
    search_errors = [s for s, _ in search_log if s != 200]
    print(f"mixed: {round_no} round(s) of {args.uploads} concurrent uploads in "
          f"{time.monotonic() - started:.0f} s, searches at {args.qps:g}/s")  # fmt: skip
    print(f"  uploads:  {percentiles([e for _, e, _, _ in uploads])}; errors {len(upload_errors)}")
    print(f"  searches: {percentiles([e for _, e in search_log])}; errors {len(search_errors)}")
    for status, body in upload_errors[:5]:
        print(f"    upload error {status}: {body}")
    for status in search_errors[:5]:
        print(f"    search error {status}")
    store.refresh()
    schema = load_schema()
    registered: dict[str, int] = {}
    for doc in store.scan(schema.Measurement):
        for checksum in {f.checksum for f in doc.files or []}:
            registered[checksum] = registered.get(checksum, 0) + 1
    once = all(registered.get(sha) == 1 for s, _, _, sha in uploads if s == 201)
    lost = [sha for s, _, _, sha in uploads if s != 201 and registered.get(sha)]
    print(f"  every accepted upload registered exactly once: {once}; refused but registered: "
          f"{len(lost)}; {len(set(registered) & {sha for *_, sha in uploads})} of {len(uploads)} "
          "uploaded imzML files found in the catalog")  # fmt: skip
    return not upload_errors and not search_errors and once and not lost


def same_file(url: str, folder: Path, store: MetadataStore) -> bool:
    path = Path(write_imzml(folder / "twin", n_x=3, n_y=3, seed=987654))
    with ThreadPoolExecutor(5) as pool:
        answers = list(pool.map(lambda n: upload(url, path, f"twin {n}"), range(5)))
    kept = [b["id"] for s, _, b in answers if s == 201]
    named = [
        m.group(1)
        for s, _, b in answers
        if s == 422 and (m := re.search(r"already uploaded as (\S+)", b["errors"].get("imzml", "")))
    ]
    store.refresh()
    schema = load_schema()
    sha = file_sha256(path)
    registered = [
        m.id for m in store.scan(schema.Measurement) if sha in {f.checksum for f in m.files or []}
    ]
    ok = len(kept) == 1 and named == kept * 4 and registered == kept
    print(f"same file x5: registered {registered}, accepted {kept}, refusals name {named}: "
          f"{'ok' if ok else 'FAILED'}; {percentiles([e for _, e, _ in answers])}")  # fmt: skip
    return ok


def same_name(url: str) -> bool:
    name = f"load-{uuid.uuid4().hex[:6]}"

    def save(n: int) -> tuple[int, str]:
        with closing(browser(url)) as client:
            answer = client.post(
                "/parameter-sets",
                data={"name": name, "value:qc.min_median_snr": str(10 + n)},
                follow_redirects=False,
            )
        return answer.status_code, answer.headers.get("location", "")

    with ThreadPoolExecutor(5) as pool:
        answers = list(pool.map(save, range(5)))
    versions = sorted(location.rsplit("@", 1)[-1] for status, location in answers if status == 303)
    ok = versions == [f"v{n}" for n in range(1, 6)]
    print(f"same name x5: versions {versions}: {'ok' if ok else 'FAILED'}; statuses "
          f"{sorted(s for s, _ in answers)}")  # fmt: skip
    return ok


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=60.0, help="seconds of mixed load")
    parser.add_argument("--uploads", type=int, default=40, help="concurrent uploads per round")
    parser.add_argument("--qps", type=float, default=50.0, help="searches per second")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="em2q-load-") as scratch:
        folder = Path(scratch)
        base = Settings.from_env()
        with elasticsearch_url(base) as url:
            settings = base.with_overrides(
                elasticsearch_url=url,
                index_prefix=f"bench-load-{uuid.uuid4().hex[:6]}",
                storage=str(folder / "storage"),
                cache_dir=folder / "cache",
            )
            store = MetadataStore.connect(url, index_prefix=settings.index_prefix)
            store.ensure_indices()
            storage = StorageResource.from_settings(settings)
            try:
                with serve_in_thread(create_app(settings, store=store, storage=storage)) as web:
                    results = [
                        mixed(web, folder, args, store),
                        same_file(web, folder, store),
                        same_name(web),
                    ]
            finally:
                store.drop_all()
    print("all checks passed" if all(results) else "SOME CHECKS FAILED")
    return 0 if all(results) else 1


if __name__ == "__main__":
    sys.exit(main())
