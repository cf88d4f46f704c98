"""Spectra-level assets, one partition per ``measurement × spectra_chunk``.

``spectra_chunks`` copies chunk *i of K* of the raw spectra into the platform's chunk format
(fast partial reads for every later step) with the chunk's TIC and mean-spectrum sums;
``preprocessed_chunks`` runs the chosen parameter set's preprocessing and peak picking on it.

Both use ``BackfillPolicy.single_run``: backfills (workflows) materialize all chunks of a
measurement in one run (chunks side by side in one process) instead of one run per chunk, which
would spend most of the time starting runs. After an ingest, the ``ingested_measurements``
sensor requests that one run directly (not through automation: Dagster turns an automation
request for a partition range into a backfill, and the backfill daemon works on a 30-second
cycle). A single chunk can still be materialized on demand.
"""

import hashlib
import json
import time

import numpy as np

from em2q_assets.adapters import Launch, Partition
from em2q_assets.provenance import StepContext, StepResult, recorded_run
from em2q_msi.chunks import iter_chunk, write_measurement_chunk
from em2q_msi.imzml import ImzML
from em2q_msi.peaks import concatenate_peaks, preprocess_and_pick
from em2q_msi.qc import (
    MeanSpectrumAccumulator,
    concatenate_metrics,
    spectrum_metrics,
    total_ion_current,
)
from em2q_resources.metadata import load_schema
from em2q_resources.parameter_sets import ResolvedParameters
from em2q_resources.results_layout import result_key, write_json, write_npy

#: memory bound of one block read inside a chunk (reading the imzML; a chunk is read back in
#: blocks of ``em2q_msi.chunks.CHUNK_BLOCK_BYTES``: spectra of 10,000 peaks are 120 kB each)
BLOCK_BYTES = 32 * 1024 * 1024


def mean_accumulator(raw: dict) -> MeanSpectrumAccumulator:
    """The mean-spectrum set-up of the measurement ``raw_measurement`` describes."""
    return MeanSpectrumAccumulator.for_measurement(raw["mode"], raw["mz_range"])


def spectra_chunks(
    step: StepContext,
    partition: Partition,
    inputs: dict,
    parameters: ResolvedParameters | None = None,
    *,
    launch: Launch | None = None,
) -> StepResult:
    """Chunk i of K of the raw spectra in the chunk format, with its TIC and mean sums.

    In process, the sums are gathered while the chunk is written; with ``launch`` the chunk is
    written elsewhere (a subprocess or a pod running ``python -m em2q_msi.steps chunk``) and
    the sums are read back from it.
    """
    raw = inputs["raw_measurement"]
    measurement_id, chunk, chunk_count = (
        partition.measurement_id,
        partition.chunk,
        partition.chunk_count,
    )
    started = time.perf_counter()
    storage = step.storage
    folder = result_key(measurement_id, "spectra_chunks", None, chunk)
    with recorded_run(
        step, "spectra_chunks", str(partition), measurement_id=measurement_id
    ) as record:
        record.read("imzml", raw["imzml_uri"])
        accumulator = mean_accumulator(raw)
        tic_parts: list[np.ndarray] = []

        def summarise(block) -> None:
            accumulator.add(block)
            tic_parts.append(total_ion_current(block))

        out = storage.url(f"{folder}/spectra")
        if launch is None:
            reader = ImzML.open(raw["imzml_uri"], storage_options=storage.storage_options)
            start, stop, meta = write_measurement_chunk(
                reader,
                chunk_count,
                chunk,
                out,
                storage_options=storage.storage_options,
                extra={"measurement_id": measurement_id, "chunk": chunk, "of": chunk_count},
                on_block=summarise,
                block_bytes=BLOCK_BYTES,
            )
        else:
            arguments = [raw["imzml_uri"], "--k", str(chunk_count), "--index", str(chunk)]
            meta = launch([*arguments, "--out", out])
            start, stop = meta["first_index"], meta["first_index"] + meta["n_spectra"]
            for block in iter_chunk(out, storage_options=storage.storage_options):
                summarise(block)
        tic = np.concatenate(tic_parts) if tic_parts else np.zeros(0)
        outputs = {
            "spectra": storage.url(f"{folder}/spectra"),
            "tic": write_npy(storage, f"{folder}/tic.npy", tic),
            **{
                f"mean_{name}": write_npy(storage, f"{folder}/mean_{name}.npy", np.asarray(value))
                for name, value in accumulator.state().items()
            },
        }
        record.wrote_all(outputs)
        step.store.update(
            load_schema().SpectraPartition(
                id=f"{measurement_id}/{chunk}of{chunk_count}",
                measurement_id=measurement_id,
                chunk_index=chunk,
                chunk_count=chunk_count,
                first_spectrum=start,
                stop_spectrum=stop,
                storage_uri=outputs["spectra"],
            ),
            None,
        )
    manifest = {
        "measurement_id": measurement_id,
        "chunk": chunk,
        "folder": folder,
        "first_spectrum": start,
        "stop_spectrum": stop,
        "mode": raw["mode"],
        "outputs": outputs,
        "checksums": record.checksums_json(),
    }
    return StepResult(
        manifest,
        metadata={
            "spectra": stop - start,
            "spectrum range": f"[{start}, {stop})",
            "values": int(meta["n_values"]),
            "seconds": round(time.perf_counter() - started, 3),
        },
        data_version=_digest(raw, chunk, chunk_count),
    )


def preprocessed_chunks(
    step: StepContext,
    partition: Partition,
    inputs: dict,
    parameters: ResolvedParameters | None,
) -> StepResult:
    """The parameter set's preprocessing, peak picking and per-spectrum QC metrics."""
    assert parameters is not None, "preprocessed_chunks needs a parameter set"
    spectra = inputs["spectra_chunks"]
    measurement_id, chunk = partition.measurement_id, partition.chunk
    started = time.perf_counter()
    storage = step.storage
    params = parameters.params
    folder = result_key(measurement_id, "preprocessed_chunks", parameters.content_hash, chunk)
    with recorded_run(
        step,
        "preprocessed_chunks",
        str(partition),
        measurement_id=measurement_id,
        parameters=parameters,
    ) as record:
        source = spectra["outputs"]["spectra"]
        record.read("spectra", source)
        peak_parts, metric_parts = [], []
        for block in iter_chunk(source, storage_options=storage.storage_options):
            peak_parts.append(preprocess_and_pick(block, params)[1])
            metric_parts.append(spectrum_metrics(block, params))
        peaks = concatenate_peaks(peak_parts)
        metrics = concatenate_metrics(metric_parts)
        outputs = {
            f"peaks_{name}": write_npy(storage, f"{folder}/peaks_{name}.npy", getattr(peaks, name))
            for name in ("mz", "intensity", "snr", "offsets", "coordinates")
        }
        outputs |= {
            f"metric_{name}": write_npy(storage, f"{folder}/metric_{name}.npy", values)
            for name, values in metrics.items()
        }
        outputs["parameters"] = write_json(storage, f"{folder}/parameters.json", parameters.values)
        record.wrote_all(outputs)
    n_peaks = int(peaks.offsets[-1] - peaks.offsets[0])
    manifest = {
        "measurement_id": measurement_id,
        "chunk": chunk,
        "folder": folder,
        "parameter_set": parameters.id,
        "parameter_hash": parameters.content_hash,
        "first_spectrum": spectra["first_spectrum"],
        "outputs": outputs,
        "checksums": record.checksums_json(),
    }
    return StepResult(
        manifest,
        metadata={
            "parameter set": parameters.id,
            "peaks": n_peaks,
            "peaks per spectrum": round(n_peaks / max(1, len(peaks)), 1),
            "median SNR": float(np.median(metrics["snr"])) if len(peaks) else 0.0,
            "seconds": round(time.perf_counter() - started, 3),
        },
        data_version=_digest(spectra, parameters.content_hash),
    )


def _digest(*parts) -> str:
    text = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:24]
