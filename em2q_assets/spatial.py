"""Spatial results of one measurement: the segmentation of its pixels on the peak table.

The step function is named after its asset (declared in ``em2q_resources.catalog``); the
science is ``em2q_msi.spatial.segment`` with the parameter set's ``segmentation`` values.
"""

from __future__ import annotations

import io
import time

import numpy as np

from em2q_assets.adapters import Partition
from em2q_assets.measurements import measurement_grid
from em2q_assets.provenance import Image, StepContext, StepResult, manifest_inputs, recorded_run
from em2q_msi import spatial
from em2q_resources.parameter_sets import ResolvedParameters
from em2q_resources.results_layout import (
    read_npy,
    read_peak_table,
    result_key,
    write_bytes,
    write_json,
    write_npy,
)


def segment_map_png(image: np.ndarray, k: int) -> bytes:
    """The segment map as a PNG in the segments' colours (not acquired: transparent)."""
    from PIL import Image as PILImage

    buffer = io.BytesIO()
    rgba = spatial.segment_image_rgba(image if image.ndim == 2 else image[0], k)
    PILImage.fromarray(rgba).save(buffer, format="PNG")
    return buffer.getvalue()


def segmentation(
    step: StepContext, partition: Partition, inputs: dict, parameters: ResolvedParameters | None
) -> StepResult:
    """Segments of the measurement's pixels (PCA + k-means or a Gaussian mixture on the peak
    table), their mean spectra and distinguishing features.

    A measurement too small to segment (fewer pixels than segments, no features) gets one
    segment and the reason in ``note``: a result, not a failed run."""
    assert parameters is not None, "segmentation needs a parameter set"
    measurement_id, storage = partition.measurement_id, step.storage
    settings = parameters.params.segmentation
    folder = result_key(measurement_id, "segmentation", parameters.content_hash, None)
    started = time.perf_counter()
    with recorded_run(
        step, "segmentation", str(partition), measurement_id=measurement_id, parameters=parameters
    ) as record:
        manifest_inputs(record, "peak_table", {"table": inputs["peak_table"]})
        feature_mz, matrix = read_peak_table(storage, inputs["peak_table"]["outputs"])
        chunks = inputs["spectra_chunks"]
        coordinates = np.concatenate(
            [
                read_npy(storage, f"{m['outputs']['spectra']}/coordinates.npy")
                for _, m in sorted(chunks.items())
            ]
        )
        grid = measurement_grid(inputs["raw_measurement"])
        note = None
        try:
            result = spatial.segment(matrix, settings, grid=grid, coordinates=coordinates)
            labels, k, k_scores = result.labels, result.k, result.k_scores
            means, effect, top = result.mean_spectra, result.effect_size, result.top_features
        except ValueError as exc:  # SpatialError, or a degenerate matrix sklearn refuses
            note = f"not segmented: {exc}"
            labels, k, k_scores = np.zeros(matrix.shape[0], np.int64), 1, {}
            means = matrix.mean(axis=0, keepdims=True)
            effect = np.zeros_like(means)
            top = np.zeros((1, 0), np.int64)
        image = grid.image(coordinates, labels, fill_value=-1)
        png = segment_map_png(image, k)
        sizes = np.bincount(labels, minlength=k)
        colours = spatial.segment_colours(k)
        segments = [
            {
                "segment": c,
                "colour": colours[c],
                "pixels": int(sizes[c]),
                "top": [
                    {
                        "mz": float(feature_mz[j]),
                        "effect_size": float(effect[c, j]),
                        "mean_intensity": float(means[c, j]),
                    }
                    for j in top[c]
                ],
            }
            for c in range(k)
        ]
        summary = {
            "k": k,
            "k_scores": {str(key): value for key, value in k_scores.items()},
            "k_criterion": spatial.K_CRITERION if k_scores else None,
            "method": settings.method,
            "spatial_smoothing": settings.spatial_smoothing,
            "note": note,
            "segments": segments,
        }
        outputs = {
            "labels": write_npy(storage, f"{folder}/labels.npy", labels),
            "segment_map": write_npy(storage, f"{folder}/segment_map.npy", image),
            "png": write_bytes(storage, f"{folder}/segment_map.png", png),
            "feature_mz": write_npy(storage, f"{folder}/feature_mz.npy", feature_mz),
            "mean_spectra": write_npy(storage, f"{folder}/mean_spectra.npy", means),
            "top_ions": write_json(storage, f"{folder}/top_ions.json", summary),
        }
        record.wrote_all(outputs)
    return StepResult(
        {
            "measurement_id": measurement_id,
            "folder": folder,
            "parameter_hash": parameters.content_hash,
            "outputs": outputs,
            "k": k,
            "grid": grid.to_dict(),
        },
        metadata={
            "segments": k,
            "pixels per segment": ", ".join(str(int(n)) for n in sizes),
            "k chosen by": spatial.K_CRITERION if k_scores else "the parameter set",
            "note": note or "",
            "seconds": round(time.perf_counter() - started, 3),
            "segment map": Image(png, "segment map"),
        },
    )
