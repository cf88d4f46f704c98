"""``python -m em2q_msi.steps <step> ...``: one step on one measurement or one chunk.

The same entry point runs in process, as a subprocess, in a Kubernetes pod or an Argo
container. Every step reads and writes fsspec URLs and prints one line of JSON on stdout (its
summary). When Dagster launched the process through Pipes (``DAGSTER_PIPES_CONTEXT`` in the
environment, the only environment variable read in ``em2q_msi``), the summary also goes back to
Dagster as materialization metadata and a log line.

Fixed contracts (people and scripts rely on them):

* ``validate URL``: prints ``{"ok": true|false, "problems": [{"code": ..., "message": ...}]}``;
  exit 0 when valid, 1 when problems were found, 2 on usage errors.
* ``qc URL --out OUTURL [--params JSON-or-file]``: writes ``qc.json`` (the one format of
  ``em2q_msi.qc_report``, as the platform's ``qc_report`` asset writes it: the QC verdict
  ``ok`` and its ``checks``, spectra count, per-spectrum TIC in file order, noise/SNR summary;
  about the source: m/z range, total TIC),
  ``mean_spectrum.npz`` (``mz``, ``intensity``), ``tic_image.npy`` and ``tic_image.png`` under
  OUTURL, and prints a one-line summary.

Other steps: ``chunk URL --k K --index I --out OUTURL`` (chunk i of K as an ``.npy`` folder,
see :mod:`em2q_msi.chunks`) and ``facts URL`` (the measurement facts as JSON).
Exit status 1 also covers a step that failed on its input (the JSON then has ``"error"``).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from em2q_msi import finite_json
from em2q_msi.errors import ChunkError, ImzMLError
from em2q_msi.imzml import ImzML, split_url
from em2q_msi.temporaries import write_atomic

PIPES_ENV = "DAGSTER_PIPES_CONTEXT"
EXIT_OK, EXIT_PROBLEMS, EXIT_USAGE = 0, 1, 2


class UsageError(Exception):
    """Bad command-line input (exit status 2)."""


# -- reporting ------------------------------------------------------------------------------
def pipes_requested(environ: dict[str, str] | os._Environ[str] | None = None) -> bool:
    """Whether Dagster Pipes launched this process (decided by the environment only)."""
    env = os.environ if environ is None else environ
    return PIPES_ENV in env


_jsonable = finite_json.clean  # every JSON this command writes: NaN/inf are null


def _pipes_metadata(summary: dict[str, Any]) -> dict[str, Any]:
    """Scalars as they are, anything nested as a JSON metadata value."""
    out: dict[str, Any] = {}
    for key, value in summary.items():
        if isinstance(value, (bool, int, float, str)) or value is None:
            out[key] = value if value is not None else {"raw_value": None, "type": "null"}
        else:
            out[key] = {"raw_value": value, "type": "json"}
    return out


@contextlib.contextmanager
def reporter(step: str) -> Iterator[Callable[[dict[str, Any]], None]]:
    """Yields ``report(summary)``: prints the JSON line, and with Pipes also sends it to
    Dagster (materialization metadata on asset steps, a log line always)."""
    if not pipes_requested():

        def plain(summary: dict[str, Any]) -> None:
            print(json.dumps(_jsonable(summary), allow_nan=False), flush=True)

        yield plain
        return
    from dagster_pipes import open_dagster_pipes  # lazy: only inside a Pipes launch

    with open_dagster_pipes() as pipes:

        def piped(summary: dict[str, Any]) -> None:
            clean = _jsonable(summary)
            print(json.dumps(clean, allow_nan=False), flush=True)
            pipes.log.info(f"em2q_msi.steps {step}: {json.dumps(clean, allow_nan=False)}")
            if pipes.is_asset_step:
                pipes.report_asset_materialization(metadata=_pipes_metadata(clean))
            else:
                pipes.report_custom_message(clean)

        yield piped


# -- helpers --------------------------------------------------------------------------------
def _json_arg(text: str | None, what: str) -> dict[str, Any]:
    """A JSON object given inline or as a path to a file holding it."""
    if not text:
        return {}
    candidate = Path(text)
    if not text.lstrip().startswith("{") and candidate.is_file():
        text = candidate.read_text(encoding="utf-8")
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise UsageError(f"{what}: not JSON or a JSON file: {exc}") from exc
    if not isinstance(value, dict):
        raise UsageError(f"{what}: expected a JSON object, got {type(value).__name__}")
    return value


def _write_bytes(out_url: str, name: str, data: bytes, storage_options: dict | None) -> str:
    """Write ``data`` to ``<out_url>/<name>`` atomically (``temporaries.write_atomic``)."""
    fs, path = split_url(out_url, storage_options)
    return write_atomic(fs, f"{path.rstrip('/')}/{name}", data)


def _npy_bytes(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array)
    return buf.getvalue()


# -- steps ----------------------------------------------------------------------------------
def run_validate(args: argparse.Namespace) -> tuple[dict[str, Any], int]:
    from em2q_msi.validation import validate

    report = validate(
        args.url,
        storage_options=args.storage_options,
        cache_dir=args.cache_dir,
        check_data=not args.quick,
    )
    return report.to_dict(), EXIT_OK if report.ok else EXIT_PROBLEMS


def run_facts(args: argparse.Namespace) -> tuple[dict[str, Any], int]:
    reader = ImzML.open(args.url, storage_options=args.storage_options, cache_dir=args.cache_dir)
    return {"ok": True, "facts": reader.facts()}, EXIT_OK


def run_chunk(args: argparse.Namespace) -> tuple[dict[str, Any], int]:
    from em2q_msi.chunks import write_measurement_chunk

    if args.k < 1 or not 0 <= args.index < args.k:
        raise UsageError(
            f"--index must be in 0..K-1 and --k >= 1, got index {args.index} of {args.k}"
        )
    reader = ImzML.open(args.url, storage_options=args.storage_options, cache_dir=args.cache_dir)
    start, stop, meta = write_measurement_chunk(
        reader,
        args.k,
        args.index,
        args.out,
        storage_options=args.storage_options,
        extra={"source": args.url, "chunk_index": args.index, "chunk_count": args.k},
    )
    return {
        "ok": True,
        "out": args.out,
        "chunk_index": args.index,
        "chunk_count": args.k,
        "first_index": start,
        "n_spectra": stop - start,
        "n_values": meta["n_values"],
        "bytes": sum(f["bytes"] for f in meta["files"].values()),
    }, EXIT_OK


def run_qc(args: argparse.Namespace) -> tuple[dict[str, Any], int]:
    """QC over all spectra, streamed block by block so memory stays one block."""
    from em2q_msi import qc, qc_report
    from em2q_msi.facts import pixel_grid
    from em2q_msi.parameters import ParameterError, ProcessingParameters

    try:
        params = ProcessingParameters.from_dict(_json_arg(args.params, "--params"))
    except ParameterError as exc:
        raise UsageError(f"--params: {exc}") from exc
    started = time.perf_counter()
    reader = ImzML.open(args.url, storage_options=args.storage_options, cache_dir=args.cache_dir)
    mz_min, mz_max = reader.mz_range()
    accumulator = qc.MeanSpectrumAccumulator.for_measurement(reader.mode, (mz_min, mz_max))
    parts = []
    for block in reader.iter_blocks(block_bytes=args.block_mb << 20):
        parts.append(qc.spectrum_metrics(block, params))
        accumulator.add(block)
    metrics = qc.concatenate_metrics(parts)
    mean_mz, mean_intensity = accumulator.result()
    coords = reader.coordinates
    grid = pixel_grid(reader)
    image = qc.tic_image(coords, metrics["tic"], grid)
    lock_errors = None
    if params.qc.lock_masses:
        peak_mz, _ = qc.mean_spectrum_peaks(mean_mz, mean_intensity, params.peak_picking)
        lock_errors = qc.lock_mass_errors_ppm(
            peak_mz, params.qc.lock_masses, params.qc.lock_mass_search_ppm
        )
    summary = qc.measurement_summary(metrics, grid, lock_errors, params.qc)
    tic = metrics["tic"]
    about = {
        "source": args.url,
        "mode": reader.mode,
        "mz_min": mz_min,
        "mz_max": mz_max,
        "total_tic": float(tic.sum()),
        "grid": grid.to_dict(),
        "parameters_digest": params.digest(),
    }
    report = qc_report.build_qc_report(metrics, summary, about)
    out, so = args.out, args.storage_options
    _write_bytes(out, "qc.json", qc_report.qc_report_bytes(report), so)
    buf = io.BytesIO()
    np.savez(buf, mz=mean_mz, intensity=mean_intensity)
    _write_bytes(out, "mean_spectrum.npz", buf.getvalue(), so)
    _write_bytes(out, "tic_image.npy", _npy_bytes(image), so)
    png = io.BytesIO()
    from em2q_msi.ion_images import to_png

    to_png(image, png, grid=grid)
    _write_bytes(out, "tic_image.png", png.getvalue(), so)
    return {
        "ok": True,
        "qc_ok": summary.ok,
        "out": out,
        "n_spectra": reader.n_spectra,
        "mz_min": mz_min,
        "mz_max": mz_max,
        "total_tic": float(tic.sum()),
        "median_snr": report["snr"]["median"],
        "seconds": round(time.perf_counter() - started, 3),
    }, EXIT_OK


STEPS: dict[str, Callable[[argparse.Namespace], tuple[dict[str, Any], int]]] = {
    "validate": run_validate,
    "facts": run_facts,
    "chunk": run_chunk,
    "qc": run_qc,
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m em2q_msi.steps",
        description="Run one EM²Q MSI step; prints a one-line JSON summary.",
    )
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("url", help="the .imzML (local path or fsspec URL; the .ibd beside it)")
    common.add_argument(
        "--storage-options",
        default=None,
        help="fsspec storage options as JSON (or a JSON file), for input and output URLs",
    )
    common.add_argument("--cache-dir", default=None, help="folder for the imzML index cache")
    sub = parser.add_subparsers(dest="step", required=True)
    v = sub.add_parser("validate", parents=[common], help="report every problem of the pair")
    v.add_argument("--quick", action="store_true", help="skip checksum and data checks")
    sub.add_parser("facts", parents=[common], help="print the measurement facts")
    c = sub.add_parser("chunk", parents=[common], help="write chunk i of K as .npy files")
    c.add_argument("--k", type=int, required=True, help="number of chunks K")
    c.add_argument("--index", type=int, required=True, help="chunk index i, 0-based")
    c.add_argument("--out", required=True, help="URL of the chunk folder")
    q = sub.add_parser("qc", parents=[common], help="QC metrics, mean spectrum and TIC image")
    q.add_argument("--out", required=True, help="URL of the output folder")
    q.add_argument("--params", default=None, help="parameter set as JSON or a JSON file")
    q.add_argument("--block-mb", type=int, default=64, help="spectra read per block, in MiB")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse: 2 on usage errors, 0 for --help
        return int(exc.code or 0)
    try:
        args.storage_options = _json_arg(args.storage_options, "--storage-options") or None
    except UsageError as exc:
        print(json.dumps({"ok": False, "error": {"code": "usage", "message": str(exc)}}))
        return EXIT_USAGE
    with reporter(args.step) as report:
        try:
            summary, status = STEPS[args.step](args)
        except UsageError as exc:
            summary, status = {"ok": False, "error": {"code": "usage", "message": str(exc)}}, 2
        except (ImzMLError, ChunkError) as exc:
            summary = {"ok": False, "error": {"code": exc.code, "message": str(exc)}}
            status = EXIT_PROBLEMS
        except FileNotFoundError as exc:
            summary = {"ok": False, "error": {"code": "file_missing", "message": str(exc)}}
            status = EXIT_PROBLEMS
        report(summary)
    return status


if __name__ == "__main__":
    sys.exit(main())
