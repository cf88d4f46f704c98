"""A big processed dataset through the real local platform, within memory (issue 13, target 6).

Generates a processed-mode (centroid) imzML with pyimzml's writer, streamed spectrum by
spectrum (``--full``: 300×300 pixels × 10,000 peaks, float64 m/z + float32 intensities,
about 10.8 GB; default 60×60 × 2,000 for a few minutes' run), kept under ``--workdir`` so a
rerun reuses it. Then, in the same run:

1. **plain**: the same work as plain ``em2q_msi`` calls in one subprocess (validate, read every
   block, QC metrics, preprocessing + peaks, mean spectrum, QC summary), with its peak RSS;
2. **platform**: a real Elasticsearch + ``dagster dev`` (webserver, daemon, sensors,
   automation), ``upload_measurement`` into local storage, wait until READY. A sampler reads the
   high-water mark (``VmHWM`` of ``/proc/PID/status``: the kernel's own peak, so nothing is
   missed between samples) of every process of the deployment every 0.2 s; each run's process
   (``dagster api execute_run``) is named by the assets its run materialized (from the
   ``WorkflowRun`` records).

Prints the wall times, their ratio, and the peak RSS per process against the 1.5 GB target.
Run: ``.venv/bin/python -m benchmarks.bench_big [--full | --pixels N --peaks P] [--workdir D]``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil

from benchmarks.bench_platform import free_port, fresh_platform, timestamp
from em2q.platform import dagster_dev, dagster_home
from em2q.setup_file import read_setup
from em2q.upload import upload_measurement
from em2q_msi.synthetic import write_imzml
from em2q_resources.elasticsearch_server import elasticsearch_url
from em2q_resources.metadata import load_schema
from em2q_resources.settings import PROJECT_ROOT, Settings
from em2q_resources.storage import StorageResource

LIMIT_BYTES = 1.5e9
GB = 1e9

_PLAIN = """
import json, sys, time
from pathlib import Path
from benchmarks.bench_platform import plain
seconds = plain(sys.argv[1], Path(sys.argv[2]))
hwm = [l for l in open("/proc/self/status") if l.startswith("VmHWM:")][0].split()[1]
print(json.dumps({"seconds": seconds, "maxrss_bytes": int(hwm) * 1024}))
"""


def high_water_mark(pid: int) -> int:
    """The process's peak resident set so far (bytes), 0 once it is gone."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


class PeakSampler(threading.Thread):
    """Samples the peak RSS of every process whose DAGSTER_HOME is the deployment's."""

    def __init__(self, home: Path, interval_s: float = 0.2) -> None:
        super().__init__(daemon=True)
        self.home, self.interval_s = str(home), interval_s
        self.peaks: dict[int, dict] = {}
        self._halt = threading.Event()

    def run(self) -> None:
        while not self._halt.is_set():
            for process in psutil.process_iter(["pid", "cmdline"]):
                pid = process.info["pid"]
                known = self.peaks.get(pid)
                if known is None:
                    try:
                        if process.environ().get("DAGSTER_HOME") != self.home:
                            continue
                    except (psutil.Error, OSError):
                        continue
                    cmdline = " ".join(process.info["cmdline"] or [])
                    try:
                        born = process.create_time()
                    except psutil.Error:
                        continue
                    known = self.peaks[pid] = {"cmdline": cmdline, "peak": 0, "born": born}
                peak = high_water_mark(pid)
                if peak:
                    known["peak"], known["seen"] = max(known["peak"], peak), time.time()
            self._halt.wait(self.interval_s)

    def stop(self) -> None:
        self._halt.set()
        self.join()


def role(process: dict, steps: list[tuple[float, float, str]]) -> str:
    """A readable name for one process of the deployment. A run's process (started by the code
    server through multiprocessing, so its command line does not name the run) is named by the
    steps recorded while it lived."""
    cmdline = process["cmdline"]
    for name in ("dagster_webserver", "dagster._daemon", "api grpc", "code-server", "dagster dev"):
        if name in cmdline:
            return name
    if "multiprocessing" in cmdline:
        born, seen = process["born"], process.get("seen", process["born"])
        inside = sorted({a for start, end, a in steps if born <= start and end <= seen + 1})
        return f"run process ({', '.join(inside) or 'no step'})"
    return cmdline[:60]


def generate(workdir: Path, pixels: int, peaks: int) -> Path:
    base = workdir / f"processed-{pixels}x{pixels}x{peaks}"
    imzml = base.with_suffix(".imzML")
    if imzml.exists() and base.with_suffix(".ibd").exists():
        return imzml
    started = time.perf_counter()
    partial = workdir / f"partial-{pixels}x{pixels}x{peaks}"
    written = Path(write_imzml(partial, mode="processed", n_x=pixels, n_y=pixels, n_values=peaks))
    text = written.read_text(encoding="utf-8").replace(partial.name + ".ibd", base.name + ".ibd")
    partial.with_suffix(".ibd").rename(base.with_suffix(".ibd"))
    imzml.write_text(text, encoding="utf-8")
    written.unlink()
    print(f"  generated in {time.perf_counter() - started:.0f} s", flush=True)
    return imzml


def plain_call(imzml: Path, cache: Path) -> dict:
    completed = subprocess.run(
        [sys.executable, "-c", _PLAIN, str(imzml), str(cache)],
        capture_output=True,
        encoding="utf-8",
        cwd=PROJECT_ROOT,
        check=False,
    )
    if completed.returncode != 0:
        raise RuntimeError(f"plain em2q_msi failed: {completed.stderr[-2000:]}")
    return json.loads(completed.stdout.strip().splitlines()[-1])


def platform(imzml: Path, work: Path, url: str, chunks: int) -> dict:
    schema = load_schema()
    settings, store = fresh_platform(url, work, "bench-big", chunks)
    sampler = PeakSampler(dagster_home(settings))
    with dagster_dev(settings, url, port=free_port()):
        sampler.start()
        started = time.perf_counter()
        measurement = upload_measurement(
            imzml,
            setup=read_setup(PROJECT_ROOT / "examples" / "setup.yaml"),
            store=store,
            storage=StorageResource.from_settings(settings),
            progress=False,
            cache_dir=work / "cache" / "upload-index",
        )
        uploaded = time.perf_counter() - started
        final = {schema.MeasurementStatus.READY, schema.MeasurementStatus.FAILED}
        while (doc := store.get(schema.Measurement, measurement.id).doc).status not in final:
            if time.perf_counter() - started > 3600:
                raise TimeoutError("not READY after an hour")
            time.sleep(0.5)
        wall = time.perf_counter() - started
        time.sleep(1.0)  # the last run's process exits
        sampler.stop()
    store.refresh()
    steps = [
        (timestamp(r.started_at), timestamp(r.finished_at), r.workflow)
        for r in store.scan(schema.WorkflowRun, filters={"measurement_id": measurement.id})
    ]
    store.drop_all()
    return {
        "wall": wall,
        "upload": uploaded,
        "status": schema.MeasurementStatus._VALUES_TO_NAMES[doc.status],
        "detail": doc.status_detail.message if doc.status_detail else "",
        "peaks": {
            pid: (role(p, steps), p["peak"])
            for pid, p in sampler.peaks.items()
            if p["peak"] > 2**24
        },
        "upload_process_peak": high_water_mark(psutil.Process().pid),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--full", action="store_true", help="300×300 × 10,000 peaks (~10.8 GB)")
    parser.add_argument("--pixels", type=int, default=60, help="pixels per side")
    parser.add_argument("--peaks", type=int, default=2_000, help="peaks per spectrum")
    parser.add_argument("--chunks", type=int, default=8)
    parser.add_argument(
        "--workdir", type=Path, default=PROJECT_ROOT / ".cache" / "bench-big",
        help="where the dataset is kept between runs",
    )  # fmt: skip
    args = parser.parse_args(argv)
    pixels, peaks = (300, 10_000) if args.full else (args.pixels, args.peaks)
    args.workdir.mkdir(parents=True, exist_ok=True)
    print(f"dataset: processed {pixels}×{pixels} pixels × {peaks:,} peaks", flush=True)
    imzml = generate(args.workdir, pixels, peaks)
    size = imzml.with_suffix(".ibd").stat().st_size
    work = args.workdir / "run"
    subprocess.run(["rm", "-rf", str(work)], check=True)
    work.mkdir()
    plain = plain_call(imzml, work / "plain-cache")
    print(
        f"plain em2q_msi in one process: {plain['seconds']:.1f} s over {size / GB:.2f} GB, "
        f"peak RSS {plain['maxrss_bytes'] / GB:.2f} GB",
        flush=True,
    )
    with elasticsearch_url(Settings.from_env()) as url:
        result = platform(imzml, work, url, args.chunks)
    subprocess.run(["rm", "-rf", str(work)], check=True)
    print(
        f"platform upload → {result['status']}: {result['wall']:.1f} s wall (upload "
        f"{result['upload']:.1f} s); platform / plain = {result['wall'] / plain['seconds']:.1f}x"
    )
    if result["status"] != "READY":
        print(f"  not READY: {result['detail']}")
    worst = max([result["upload_process_peak"], *(p for _, p in result["peaks"].values())])
    print(f"  upload (this process): peak RSS {result['upload_process_peak'] / GB:.2f} GB")
    for name, peak in sorted(result["peaks"].values(), key=lambda item: -item[1]):
        print(f"  {name}: peak RSS {peak / GB:.2f} GB")
    print(
        f"peak RSS of every process <= {LIMIT_BYTES / GB:.1f} GB (target): worst "
        f"{worst / GB:.2f} GB = {worst / size:.3f}x the data -> "
        f"{'OK' if worst <= LIMIT_BYTES else 'OVER TARGET'}"
    )


if __name__ == "__main__":
    main()
