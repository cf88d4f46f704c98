"""A big processed dataset through the real local platform: peak RSS of every process.

Issue 13, target 6: a generated processed-mode imzML (``--full``: 300×300 pixels × 10,000 peaks
per spectrum, float64 m/z, float32 intensities, ~10.8 GB) goes from ``upload_measurement`` to
READY through a real Elasticsearch and ``dagster dev`` (webserver, daemon, code server, one
process per run), and on to its last asset (``ion_images``). Printed:

* the wall time, upload → READY and upload → last asset;
* the peak RSS of every process of the platform: ``VmHWM`` (the kernel's high-water mark of the
  resident set) read from ``/proc/<pid>/status`` of every process under this one, sampled
  every 0.2 s while it lives (a process that lives less than one sampling period can be
  missed; the last 0.2 s of growth before a process exits too). Run workers
  (``dagster api execute_run``) are named by their Dagster run (``DAGSTER_RUN_ID`` in their
  environment) and the steps that run executed (``WorkflowRun`` documents); per step, the
  largest RSS sampled while it ran;
* the same steps as plain ``em2q_msi`` calls in one process on the same file (validate; read
  every block for the mean spectrum, TIC and QC metrics; preprocess and pick peaks; bin the
  peaks into the peak table; ion images of the most frequent features) with its wall time and
  peak RSS, and the platform / plain ratios.

Target: every process ≤ 1.5 GB peak RSS, reading ranged (the .ibd is never loaded whole).
Elasticsearch (a JVM with a fixed 512 MB heap) is printed apart: it is the metadata store,
not the platform's processing.

The dataset is generated once, streamed spectrum by spectrum with pyimzml's ``ImzMLWriter``,
and kept in ``--data-dir`` (default ``$TMPDIR/em2q-bench-big``) so a rerun reuses it; the
platform's storage (the uploaded copy and the chunks) lives in a temporary folder removed at
the end. Scales: ``--scale small`` (default, 60×60×2,000: 0.09 GB, about 2 minutes),
``medium`` (150×150×5,000: 1.4 GB, about 5 minutes), ``full`` (or ``--full``: 300×300×10,000,
11 GB; about 10 minutes on 2 cores, 8 when the dataset is reused; 35 GB free disk: the
dataset, its uploaded copy and the chunks). Results of a full run: ``docs/reading.md``.

Run: ``.venv/bin/python -m benchmarks.bench_big [--scale small|medium|full] [--chunks 8]``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

import psutil

if TYPE_CHECKING:
    from em2q_resources.settings import Settings

SCALES = {"small": (60, 60, 2_000), "medium": (150, 150, 5_000), "full": (300, 300, 10_000)}
LIMIT_BYTES = int(1.5 * 2**30)
#: one value in this many is an ion shared by every spectrum (the rest is noise), so QC
#: passes and the peak table has real features (denser ions raise the noise estimate of the
#: smoothed centroids above QC's SNR threshold)
VALUES_PER_ION = 100
SAMPLE_S = 0.2
GB = 1e9
MiB = 2**20


# -- the dataset ----------------------------------------------------------------------------
def dataset(folder: Path, n_x: int, n_y: int, peaks: int) -> Path:
    """The cached processed dataset of this scale, generated on the first call (written under
    a temporary name and renamed when complete, so a killed generation is never reused)."""
    from em2q_msi.synthetic import write_imzml

    ions = max(1, peaks // VALUES_PER_ION)
    name = f"processed-{n_x}x{n_y}x{peaks}-{ions}ions"
    done = folder / name / f"{name}.imzML"
    if done.exists() and done.with_suffix(".ibd").exists():
        print(f"reusing {done} ({_size(done) / GB:.2f} GB)", flush=True)
        return done
    partial = folder / f".{name}.partial"
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    started = time.perf_counter()
    print(f"generating {n_x}×{n_y} pixels × {peaks:,} peaks (processed) …", flush=True)
    write_imzml(partial / name, mode="processed", n_x=n_x, n_y=n_y, n_values=peaks, n_ions=ions)
    shutil.rmtree(folder / name, ignore_errors=True)
    partial.rename(folder / name)
    print(
        f"  {_size(done) / GB:.2f} GB in {time.perf_counter() - started:.0f} s "
        f"(pyimzml ImzMLWriter, one spectrum in memory at a time)",
        flush=True,
    )
    return done


def _size(imzml: Path) -> int:
    return imzml.stat().st_size + imzml.with_suffix(".ibd").stat().st_size


# -- watching processes ----------------------------------------------------------------------
@dataclass
class Watched:
    pid: int
    label: str
    run_id: str | None
    first_s: float
    last_s: float = 0.0
    hwm_bytes: int = 0
    samples: list[tuple[float, int]] = field(default_factory=list)


def _status_kb(pid: int, key: str) -> int:
    with open(f"/proc/{pid}/status", encoding="ascii", errors="replace") as f:
        for line in f:
            if line.startswith(key):
                return int(line.split()[1])
    return 0


_RUN_ID = re.compile(r"storage/([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})")


def _label(cmd: str) -> str:
    for needle, label in (
        ("org.elasticsearch", "elasticsearch (JVM, 512 MB heap)"),
        ("upload_measurement", "upload (upload_measurement, as `em2q upload`)"),
        ("multiprocessing.spawn", "run worker"),
        ("execute_run", "run worker"),
        ("dagster_webserver", "dagster webserver"),
        ("dagster-webserver", "dagster webserver"),
        ("dagster._daemon", "dagster daemon"),
        ("dagster-daemon", "dagster daemon"),
        ("api grpc", "code server (dagster api grpc)"),
        ("code-server start", "code server proxy (dagster code-server start)"),
        ("multiprocessing.resource_tracker", "multiprocessing resource tracker"),
        ("tail -F", "compute-log capture (tail)"),
        ("compute_logs", "compute-log capture"),
        (" dev ", "dagster dev (supervisor)"),
    ):
        if needle in cmd:
            return label
    return cmd[:80]


class Sampler:
    """Every process under this one, sampled every ``SAMPLE_S``: ``VmHWM`` and RSS."""

    def __init__(self) -> None:
        self.me = psutil.Process(os.getpid())
        self.t0 = time.perf_counter()
        self.procs: dict[int, Watched] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(SAMPLE_S)

    def sample(self) -> None:
        now = time.perf_counter() - self.t0
        for proc in self.me.children(recursive=True):
            try:
                watched = self.procs.get(proc.pid)
                if watched is None:
                    cmd = " ".join(proc.cmdline())
                    watched = self.procs[proc.pid] = Watched(proc.pid, _label(cmd), None, now)
                    # a run worker's compute logs are captured by children whose command
                    # line names the run's log folder: that is how a worker gets its run id
                    found = _RUN_ID.search(cmd)
                    parent = self.procs.get(proc.ppid())
                    if found and parent is not None and parent.label == "run worker":
                        parent.run_id = found.group(1)
                hwm = _status_kb(proc.pid, "VmHWM:") * 1024
                rss = _status_kb(proc.pid, "VmRSS:") * 1024
            except (psutil.Error, OSError, ValueError):
                continue
            watched.hwm_bytes = max(watched.hwm_bytes, hwm)
            watched.last_s = now
            watched.samples.append((now, rss))


# -- the platform ----------------------------------------------------------------------------
def _timestamp(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def platform(imzml: Path, work: Path, chunks: int, url: str, timeout_s: float) -> dict:
    """Upload through ``upload_measurement`` (what the CLI and the client call) and wait for
    READY and for the last asset, sampling every process."""
    from benchmarks.bench_platform import free_port
    from em2q.platform import dagster_dev
    from em2q_resources.connections import set_up_metadata_store
    from em2q_resources.metadata import MetadataStore, load_schema
    from em2q_resources.settings import Settings

    schema = load_schema()
    settings = Settings(
        elasticsearch_url=url,
        index_prefix="bench-big",
        storage=str(work / "storage"),
        cache_dir=work / "cache",
        spectra_chunks=chunks,
    )
    store = MetadataStore.connect(url, index_prefix=settings.index_prefix)
    store.drop_all()
    set_up_metadata_store(store)  # indices and the default parameter set, as `em2q setup`
    final = {schema.MeasurementStatus.READY, schema.MeasurementStatus.FAILED}
    with Sampler() as sampler, dagster_dev(settings, url, port=free_port()):
        started_wall = time.time()
        started = time.perf_counter()
        # in a process of its own, as `em2q upload` runs, so its memory is sampled too
        measurement_id = _upload(imzml, work, settings)
        uploaded_s = time.perf_counter() - started
        status_s = None
        last_s = None
        while time.perf_counter() - started < timeout_s:
            doc = store.get(schema.Measurement, measurement_id).doc
            if status_s is None and doc.status in final:
                status_s = time.perf_counter() - started
            if status_s is not None:
                store.refresh()
                done = {
                    r.workflow
                    for r in store.scan(
                        schema.WorkflowRun, filters={"measurement_id": measurement_id}
                    )
                    if r.finished_at
                }
                if doc.status == schema.MeasurementStatus.FAILED or "ion_images" in done:
                    last_s = time.perf_counter() - started
                    break
            time.sleep(0.5)
        sampler.sample()
        status = schema.MeasurementStatus._VALUES_TO_NAMES[doc.status]
        reason = doc.status_reason
    store.refresh()
    runs = list(store.scan(schema.WorkflowRun, filters={"measurement_id": measurement_id}))
    store.drop_all()
    # a wall-clock timestamp minus ``offset`` is seconds on the sampler's clock
    offset = started_wall - (started - sampler.t0)
    steps = []
    for r in runs:
        if not (r.started_at and r.finished_at):
            continue
        steps.append(
            {
                "asset": r.workflow,
                "partition": r.partition,
                "run_id": r.run_id,
                "start_s": _timestamp(r.started_at) - offset,
                "stop_s": _timestamp(r.finished_at) - offset,
            }
        )
    return {
        "status": status,
        "reason": reason,
        "upload_s": uploaded_s,
        "status_s": status_s,
        "last_s": last_s,
        "processes": list(sampler.procs.values()),
        "steps": steps,
        "t_upload_start": started - sampler.t0,
    }


_UPLOAD = """
import json, sys
from pathlib import Path
from em2q.setup_file import read_setup
from em2q.upload import upload_measurement
from em2q_resources.metadata import MetadataStore
from em2q_resources.settings import PROJECT_ROOT, Settings
from em2q_resources.storage import StorageResource
imzml, work, url, prefix, storage, cache_dir, chunks = sys.argv[1:]
settings = Settings(elasticsearch_url=url, index_prefix=prefix, storage=storage,
                    cache_dir=Path(cache_dir), spectra_chunks=int(chunks))
measurement = upload_measurement(
    imzml,
    setup=read_setup(PROJECT_ROOT / "examples" / "setup.yaml"),
    store=MetadataStore.connect(url, index_prefix=prefix),
    storage=StorageResource.from_settings(settings),
    progress=False,
    cache_dir=Path(work) / "cache" / "upload-index",
)
print(json.dumps({"id": measurement.id}))
"""


def _upload(imzml: Path, work: Path, settings: Settings) -> str:
    """``upload_measurement`` (what ``em2q upload`` and the client call) in a child process;
    returns the measurement's id."""
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            _UPLOAD,
            str(imzml),
            str(work),
            settings.elasticsearch_url,
            settings.index_prefix,
            settings.storage,
            str(settings.cache_dir),
            str(settings.spectra_chunks),
        ],
        capture_output=True,
        text=True,
        check=False,
        cwd=Path(__file__).resolve().parent.parent,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"upload failed: {proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])["id"]


# -- plain em2q_msi calls ----------------------------------------------------------------------
_PLAIN = """
import json, sys, time
from benchmarks.bench_big import plain_steps
t0 = time.perf_counter()
result = plain_steps(sys.argv[1], sys.argv[2])
hwm = [l for l in open("/proc/self/status") if l.startswith("VmHWM:")][0].split()[1]
print(json.dumps({**result, "seconds": time.perf_counter() - t0, "hwm_bytes": int(hwm) * 1024}))
"""


def plain_steps(imzml: str, cache_dir: str) -> dict:
    """The platform's steps as plain ``em2q_msi`` calls in this process, streamed block by
    block (no chunk copy: that is the platform's own format)."""
    import numpy as np

    from em2q_msi import ion_images as ions
    from em2q_msi.facts import pixel_grid
    from em2q_msi.features import bin_peaks
    from em2q_msi.imzml import ImzML
    from em2q_msi.parameters import ProcessingParameters
    from em2q_msi.peaks import concatenate_peaks, preprocess_and_pick
    from em2q_msi.qc import (
        MeanSpectrumAccumulator,
        concatenate_metrics,
        measurement_summary,
        spectrum_metrics,
        tic_image,
    )
    from em2q_msi.validation import validate

    params = ProcessingParameters.defaults()
    if not validate(imzml, cache_dir=cache_dir).ok:
        raise RuntimeError(f"{imzml} does not validate")
    reader = ImzML.open(imzml, cache_dir=cache_dir)
    accumulator = MeanSpectrumAccumulator.for_measurement(reader.mode, reader.mz_range())
    metrics, peaks = [], []
    for block in reader.iter_blocks(block_bytes=64 * MiB):
        accumulator.add(block)
        metrics.append(spectrum_metrics(block, params))
        peaks.append(preprocess_and_pick(block, params)[1])
    accumulator.result()
    grid = pixel_grid(reader)
    values = concatenate_metrics(metrics)
    tic_image(reader.coordinates, values["tic"], grid)
    measurement_summary(values, grid, None, params.qc)
    table = bin_peaks(
        concatenate_peaks(peaks), params.binning.tolerance_ppm, params.binning.min_frequency
    )
    order = np.argsort(-table.frequency, kind="stable")[:6]
    mz_values = [float(table.mz[i]) for i in order]
    parts = [
        ions.ion_intensities(block, mz_values, params.ion_images.tolerance_ppm)
        for block in reader.iter_blocks(block_bytes=64 * MiB)
    ]
    ions.ion_images(reader.coordinates, np.concatenate(parts, axis=1), grid)
    return {"features": int(table.n_features)}


def plain(imzml: Path, cache_dir: Path) -> dict:
    proc = subprocess.run(
        [sys.executable, "-c", _PLAIN, str(imzml), str(cache_dir)],
        capture_output=True,
        text=True,
        check=False,
        cwd=Path(__file__).resolve().parent.parent,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"plain em2q_msi calls failed: {proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


# -- report ----------------------------------------------------------------------------------
def _verdict(nbytes: int) -> str:
    return "OK" if nbytes <= LIMIT_BYTES else "OVER 1.5 GB"


def report(result: dict, plain_result: dict | None, size: int) -> list[str]:
    lines = []
    procs: list[Watched] = sorted(result["processes"], key=lambda w: w.first_s)
    steps_by_run: dict[str, list[dict]] = {}
    for step in result["steps"]:
        steps_by_run.setdefault(step["run_id"], []).append(step)
    worst = 0
    lines.append("peak RSS (VmHWM) of every process:")
    helpers = [w for w in procs if w.hwm_bytes < 64 * MiB and not w.run_id]
    if helpers:
        lines.append(
            f"  {len(helpers)} helper processes (compute-log capture, resource tracker, …): "
            f"at most {max(w.hwm_bytes for w in helpers) / MiB:,.0f} MiB each"
        )
    for w in procs:
        if w in helpers:
            continue
        is_es = w.label.startswith("elasticsearch")
        if not is_es:
            worst = max(worst, w.hwm_bytes)
        mine = steps_by_run.get(w.run_id or "", [])
        assets = sorted({s["asset"] for s in mine})
        what = f" run {w.run_id[:8]}: {', '.join(assets)}" if w.run_id else ""
        lines.append(
            f"  {w.label}{what} (pid {w.pid}, {w.first_s:.0f}–{w.last_s:.0f} s): "
            f"{w.hwm_bytes / MiB:,.0f} MiB {_verdict(w.hwm_bytes) if not is_es else '(apart)'}"
        )
    lines.append("per step (largest RSS of its run's process sampled while the step ran):")
    by_run_pid = {w.run_id: w for w in procs if w.run_id}
    per_asset: dict[str, tuple[int, int, float]] = {}
    for step in result["steps"]:
        w = by_run_pid.get(step["run_id"])
        if w is None:
            continue
        during = [
            rss
            for t, rss in w.samples
            if step["start_s"] - SAMPLE_S <= t <= step["stop_s"] + SAMPLE_S
        ]
        peak = max(during, default=0)
        count, best, seconds = per_asset.get(step["asset"], (0, 0, 0.0))
        per_asset[step["asset"]] = (
            count + 1,
            max(best, peak),
            max(seconds, step["stop_s"] - step["start_s"]),
        )
    for asset, (count, peak, seconds) in sorted(per_asset.items(), key=lambda kv: kv[0]):
        lines.append(
            f"  {asset} ({count} partition{'s' if count > 1 else ''}, longest {seconds:.1f} s): "
            f"{peak / MiB:,.0f} MiB"
        )
    ready = result["status_s"] or float("nan")
    last = result["last_s"] or float("nan")
    if plain_result is None:
        versus = "plain em2q_msi calls skipped"
    else:
        plain_rss, plain_s = plain_result["hwm_bytes"], plain_result["seconds"]
        versus = (
            f"plain em2q_msi calls {plain_s:.0f} s, peak RSS {plain_rss / MiB:,.0f} MiB; "
            f"platform / plain: wall {last / plain_s:.1f}x, largest process "
            f"{worst / plain_rss:.1f}x of plain's peak RSS"
        )
    reason = f": {result['reason']}" if result["reason"] else ""
    lines.append(
        f"platform ({result['status']}{reason}) on {size / GB:.2f} GB: upload "
        f"{result['upload_s']:.0f} s, upload → READY {ready:.0f} s, → last asset (ion_images) "
        f"{last:.0f} s; largest process {worst / MiB:,.0f} MiB (target every process <= "
        f"1536 MiB: {_verdict(worst)}); {versus}"
    )
    return lines


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", choices=sorted(SCALES), default="small")
    parser.add_argument("--full", action="store_true", help="the same as --scale full")
    parser.add_argument("--quick", action="store_true", help="the same as --scale small")
    parser.add_argument("--chunks", type=int, default=8, help="K of chunk i of K")
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=Path(tempfile.gettempdir()) / "em2q-bench-big",
        help="where the generated dataset is kept for reruns",
    )
    parser.add_argument("--timeout", type=float, default=3 * 3600, help="seconds to wait")
    parser.add_argument("--skip-plain", action="store_true", help="no plain em2q_msi baseline")
    args = parser.parse_args(argv)
    scale = "full" if args.full else "small" if args.quick else args.scale
    n_x, n_y, peaks = SCALES[scale]
    imzml = dataset(args.data_dir, n_x, n_y, peaks)
    size = _size(imzml)
    from em2q_resources.elasticsearch_server import elasticsearch_url
    from em2q_resources.settings import Settings

    with tempfile.TemporaryDirectory(prefix="em2q-bench-big-", dir=args.data_dir) as folder:
        work = Path(folder)
        plain_result = None
        if not args.skip_plain:
            plain_result = plain(imzml, work / "plain-cache")
            print(
                f"plain em2q_msi calls: {plain_result['seconds']:.1f} s, peak RSS "
                f"{plain_result['hwm_bytes'] / MiB:,.0f} MiB",
                flush=True,
            )
        with elasticsearch_url(Settings.from_env()) as url:
            result = platform(imzml, work, args.chunks, url, args.timeout)
    for line in report(result, plain_result, size):
        print(line, flush=True)


if __name__ == "__main__":
    main()
