"""Measurement-level results read from all chunks of one measurement: the mean spectrum, the
TIC image, the peak table (features × spectra) and ion images, with plots shown in the Dagster
UI. Each step function is named after its asset (declared in ``em2q_resources.catalog``)."""

import io
import time

import numpy as np

from em2q_assets.adapters import Partition
from em2q_assets.measurements import measurement_grid
from em2q_assets.provenance import (
    Image,
    StepContext,
    StepResult,
    manifest_inputs,
    recorded_run,
)
from em2q_msi import ion_images as ions
from em2q_msi.chunks import iter_chunk
from em2q_msi.features import bin_peaks
from em2q_msi.peaks import PeakList
from em2q_msi.qc import MeanSpectrumAccumulator
from em2q_msi.qc import tic_image as make_tic_image
from em2q_resources.parameter_sets import ResolvedParameters
from em2q_resources.results_layout import read_npy, result_key, write_bytes, write_json, write_npy
from em2q_resources.storage import StorageResource

#: ion images made when the parameter set names no m/z: the most frequent features
DEFAULT_ION_IMAGE_COUNT = 6


def spectrum_png(mz: np.ndarray, intensity: np.ndarray, title: str) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    figure, axes = plt.subplots(figsize=(7, 2.6), dpi=80)
    axes.plot(mz, intensity, linewidth=0.6)
    axes.set_xlabel("m/z")
    axes.set_ylabel("mean intensity")
    axes.set_title(title, fontsize=9)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", metadata={"Software": None})
    plt.close(figure)
    return buffer.getvalue()


def _chunk_arrays(storage: StorageResource, manifests: dict, prefix: str) -> list[dict]:
    return [
        {
            name[len(prefix) :]: read_npy(storage, uri)
            for name, uri in manifest["outputs"].items()
            if name.startswith(prefix)
        }
        for _, manifest in sorted(manifests.items())
    ]


def mean_spectrum(
    step: StepContext, partition: Partition, inputs: dict, parameters=None
) -> StepResult:
    """The mean of all raw spectra, merged from the chunks' running sums."""
    measurement_id, storage = partition.measurement_id, step.storage
    chunks = inputs["spectra_chunks"]
    folder = result_key(measurement_id, "mean_spectrum", None, None)
    with recorded_run(
        step, "mean_spectrum", str(partition), measurement_id=measurement_id
    ) as record:
        manifest_inputs(record, "spectra_chunks", chunks)
        total = None
        for state in _chunk_arrays(storage, chunks, "mean_"):
            part = MeanSpectrumAccumulator.from_state(state)
            total = part if total is None else total.merge(part)
        mz, intensity = total.result()
        png = spectrum_png(mz, intensity, f"{measurement_id}: mean spectrum")
        outputs = {
            "mz": write_npy(storage, f"{folder}/mz.npy", mz),
            "intensity": write_npy(storage, f"{folder}/intensity.npy", intensity),
            "plot": write_bytes(storage, f"{folder}/mean_spectrum.png", png),
        }
        record.wrote_all(outputs)
    top = int(np.argmax(intensity)) if intensity.size else 0
    return StepResult(
        {
            "measurement_id": measurement_id,
            "folder": folder,
            "outputs": outputs,
            "checksums": record.checksums_json(),
        },
        metadata={
            "points": int(mz.size),
            "m/z range": f"{mz.min():.4f} – {mz.max():.4f}" if mz.size else "empty",
            "base peak m/z": float(mz[top]) if mz.size else 0.0,
            "mean spectrum": Image(png, "mean spectrum"),
        },
    )


def tic_image(step: StepContext, partition: Partition, inputs: dict, parameters=None) -> StepResult:
    """Total ion current per pixel, from the chunks' TIC vectors and coordinates."""
    measurement_id, storage = partition.measurement_id, step.storage
    chunks = inputs["spectra_chunks"]
    folder = result_key(measurement_id, "tic_image", None, None)
    with recorded_run(step, "tic_image", str(partition), measurement_id=measurement_id) as record:
        manifest_inputs(record, "spectra_chunks", chunks)
        ordered = [manifest for _, manifest in sorted(chunks.items())]
        tic = np.concatenate([read_npy(storage, m["outputs"]["tic"]) for m in ordered])
        coordinates = np.concatenate(
            [read_npy(storage, f"{m['outputs']['spectra']}/coordinates.npy") for m in ordered]
        )
        grid = measurement_grid(inputs["raw_measurement"])
        image = make_tic_image(coordinates, tic, grid)
        png = ions.png_bytes(image, grid=grid)
        outputs = {
            "tic": write_npy(storage, f"{folder}/tic.npy", tic),
            "image": write_npy(storage, f"{folder}/tic_image.npy", image),
            "png": write_bytes(storage, f"{folder}/tic_image.png", png),
        }
        record.wrote_all(outputs)
    return StepResult(
        {
            "measurement_id": measurement_id,
            "folder": folder,
            "outputs": outputs,
            "checksums": record.checksums_json(),
            "grid": grid.to_dict(),
        },
        metadata={
            "pixels": int(tic.size),
            "total TIC": float(tic.sum()),
            "TIC image": Image(png, "TIC image"),
        },
    )


def _peak_list(storage: StorageResource, manifests: dict) -> PeakList:
    """Every chunk's peaks in one list, filled array by array and chunk by chunk into arrays
    of the final size: a measurement's peaks are held once, not once per chunk and once
    joined (what binning reads: m/z, intensity, offsets; the SNR is left zero, unread)."""
    ordered = [manifest["outputs"] for _, manifest in sorted(manifests.items())]
    offsets = [read_npy(storage, outputs["peaks_offsets"]) for outputs in ordered]
    sizes = [int(o[-1] - o[0]) for o in offsets]
    total = sum(sizes)
    arrays = {}
    for name in ("mz", "intensity"):
        out = None
        pos = 0
        for outputs, size in zip(ordered, sizes, strict=True):
            part = read_npy(storage, outputs[f"peaks_{name}"])
            if out is None:
                out = np.empty(total, part.dtype)
            out[pos : pos + size] = part
            pos += size
        arrays[name] = out if out is not None else np.zeros(0)
    coordinates = [read_npy(storage, outputs["peaks_coordinates"]) for outputs in ordered]
    parts_offsets = np.zeros(1, np.int64)
    if offsets:
        shifts = np.cumsum([0, *sizes[:-1]])
        parts_offsets = np.concatenate(
            [offsets[0][:1] - offsets[0][0]]
            + [o[1:] - o[0] + s for o, s in zip(offsets, shifts, strict=True)]
        ).astype(np.int64)
    n = parts_offsets.size - 1
    return PeakList(
        mz=arrays["mz"],
        intensity=arrays["intensity"],
        snr=np.zeros(total, np.float32),  # calloc'd pages: no memory until touched
        offsets=parts_offsets,
        noise=np.zeros(n),
        coordinates=np.concatenate(coordinates) if coordinates else np.zeros((0, 3), np.int64),
    )


def peak_table(
    step: StepContext, partition: Partition, inputs: dict, parameters: ResolvedParameters | None
) -> StepResult:
    """Peaks of all spectra binned into features: the feature × spectrum matrix."""
    assert parameters is not None, "peak_table needs a parameter set"
    measurement_id, storage = partition.measurement_id, step.storage
    chunks = inputs["preprocessed_chunks"]
    folder = result_key(measurement_id, "peak_table", parameters.content_hash, None)
    with recorded_run(
        step, "peak_table", str(partition), measurement_id=measurement_id, parameters=parameters
    ) as record:
        manifest_inputs(record, "preprocessed_chunks", chunks)
        table = bin_peaks(
            _peak_list(storage, chunks),
            tolerance_ppm=parameters.params.binning.tolerance_ppm,
            min_frequency=parameters.params.binning.min_frequency,
        )  # the peak list is freed here, before the matrix is written
        matrix = table.intensities.tocoo()
        outputs = {
            "feature_mz": write_npy(storage, f"{folder}/feature_mz.npy", table.mz),
            "frequency": write_npy(storage, f"{folder}/frequency.npy", table.frequency),
            "matrix_row": write_npy(
                storage, f"{folder}/matrix_row.npy", matrix.row.astype(np.int64)
            ),
            "matrix_col": write_npy(
                storage, f"{folder}/matrix_col.npy", matrix.col.astype(np.int64)
            ),
            "matrix_value": write_npy(storage, f"{folder}/matrix_value.npy", matrix.data),
            "shape": write_json(storage, f"{folder}/shape.json", list(table.intensities.shape)),
        }
        record.wrote_all(outputs)
        # the catalog's m/z search: the features go into the peak index once the table is written
        from em2q_resources.metadata.peak_index import PeakFeatures, index_peak_table

        total_tic = sum(
            float(read_npy(storage, m["outputs"]["metric_tic"]).sum()) for m in chunks.values()
        )
        indexed = index_peak_table(
            step.store,
            measurement_id,
            parameters.id,
            parameters.content_hash,
            PeakFeatures.from_table(table.mz, table.frequency, table.intensities, total_tic),
        )
    order = np.argsort(-table.frequency, kind="stable")[:DEFAULT_ION_IMAGE_COUNT]
    return StepResult(
        {
            "measurement_id": measurement_id,
            "folder": folder,
            "parameter_hash": parameters.content_hash,
            "outputs": outputs,
            "checksums": record.checksums_json(),
            "frequent_mz": [float(table.mz[i]) for i in order],
        },
        metadata={
            "features": int(table.n_features),
            "spectra": int(table.intensities.shape[1]),
            "non-zero entries": int(table.intensities.nnz),
            "features searchable by m/z": indexed,
            "parameter set": parameters.id,
        },
    )


def ion_images(
    step: StepContext, partition: Partition, inputs: dict, parameters: ResolvedParameters | None
) -> StepResult:
    """Ion images of the parameter set's m/z list, else of the most frequent features."""
    assert parameters is not None, "ion_images needs a parameter set"
    measurement_id, storage = partition.measurement_id, step.storage
    chunks = inputs["spectra_chunks"]
    settings = parameters.params.ion_images
    folder = result_key(measurement_id, "ion_images", parameters.content_hash, None)
    mz_values = list(settings.mz) or inputs["peak_table"]["frequent_mz"]
    started = time.perf_counter()
    with recorded_run(
        step, "ion_images", str(partition), measurement_id=measurement_id, parameters=parameters
    ) as record:
        manifest_inputs(record, "spectra_chunks", chunks)
        intensity_parts, coordinate_parts = [], []
        for _, manifest in sorted(chunks.items()):
            spectra = manifest["outputs"]["spectra"]
            for block in iter_chunk(spectra, storage_options=storage.storage_options):
                intensity_parts.append(
                    ions.ion_intensities(
                        block, mz_values, settings.tolerance_ppm, settings.tolerance_da
                    )
                )
                coordinate_parts.append(block.coordinates)
        grid = measurement_grid(inputs["raw_measurement"])
        if mz_values:
            values = np.concatenate(intensity_parts, axis=1)
            images = ions.ion_images(np.concatenate(coordinate_parts), values, grid)
        else:
            images = np.zeros((0, *grid.image_shape))
        outputs = {
            "mz": write_npy(storage, f"{folder}/mz.npy", np.asarray(mz_values, dtype=np.float64)),
            "images": write_npy(storage, f"{folder}/images.npy", images),
        }
        pngs = {}
        for i, mz in enumerate(mz_values):
            png = ions.png_bytes(images[i], grid=grid)
            pngs[mz] = png
            outputs[f"png_{i}"] = write_bytes(storage, f"{folder}/mz_{mz:.4f}.png", png)
        record.wrote_all(outputs)
    shown = {f"m/z {mz:.4f}": Image(png, f"m/z {mz:.4f}") for mz, png in list(pngs.items())[:4]}
    return StepResult(
        {
            "measurement_id": measurement_id,
            "folder": folder,
            "parameter_hash": parameters.content_hash,
            "mz": mz_values,
            "outputs": outputs,
            "checksums": record.checksums_json(),
            "grid": grid.to_dict(),
        },
        metadata={
            "images": len(mz_values),
            "window": f"±{settings.tolerance_ppm} ppm"
            if settings.tolerance_ppm
            else f"±{settings.tolerance_da} Da",
            "seconds": round(time.perf_counter() - started, 3),
            **shown,
        },
    )
