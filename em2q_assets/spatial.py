"""Spatial results: the segmentation of one measurement's pixels on its peak table
(``segmentation``), and of a study's members on their aligned features (``study_segmentation``).

The step functions are named after their assets (declared in ``em2q_resources.catalog``); the
science is ``em2q_msi.spatial.segment`` / ``segment_members`` with the parameter set's
``segmentation`` values.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import time
from typing import Any

import numpy as np

from em2q_assets.adapters import Partition, StudyPartition
from em2q_assets.measurements import measurement_grid
from em2q_assets.provenance import Image, StepContext, StepResult, manifest_inputs, recorded_run
from em2q_msi import spatial
from em2q_resources.parameter_sets import ResolvedParameters
from em2q_resources.results_layout import (
    read_csr_zarr,
    read_npy,
    read_peak_table,
    result_key,
    study_key,
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


def _member_grid(step: StepContext, member: str, coordinates: np.ndarray) -> Any:
    """The member's pixel grid from its facts when they hold its pixels, else the bounding
    box of its coordinates."""
    from em2q_msi.facts import grid_from_facts
    from em2q_msi.geometry import GeometryError, PixelGrid

    doc = step.store.get(step.store.schema.Measurement, member).doc
    grid = grid_from_facts(doc.facts)
    if grid is not None:
        try:
            grid.indices(coordinates)
            return grid
        except GeometryError:
            pass
    return PixelGrid.from_coordinates(coordinates)


def study_segmentation(
    step: StepContext, partition: StudyPartition, inputs: dict, parameters: Any = None
) -> StepResult:
    """One segmentation of all the study's members on their aligned features
    (``spatial.segment_members``: one normalisation, PCA and clustering over every member's
    pixels), so a segment number is the same tissue in every member; per member its segment
    map (PNG, in the segments' colours shared by all members) and labels, for the study its
    segments' top features. The study's parameter set's ``segmentation`` values;
    ``spatial_smoothing`` (per image) is applied to each member's map after the joint
    clustering. A study too small to segment gets one segment and the reason in ``note``."""
    from em2q_resources import studies

    started = time.perf_counter()
    aligned = inputs["aligned_features"]
    study_id, storage = partition.study_id, step.storage
    resolved = studies.parameters(step.store, studies.get(step.store, study_id))
    settings = resolved.params.segmentation
    members = list(aligned["members"])
    inputs_digest = json.dumps(
        [aligned["axis_hash"], [aligned["members"][m]["features"] for m in members],
         settings.to_dict()],
        sort_keys=True,
    )  # fmt: skip
    folder = study_key(
        study_id, "study_segmentation", hashlib.sha256(inputs_digest.encode()).hexdigest()[:16]
    )
    with recorded_run(
        step, "study_segmentation", study_id, measurement_id=None, parameters=resolved
    ) as record:
        record.read("axis_mz", aligned["axis_mz"])
        feature_mz = read_npy(storage, aligned["axis_mz"])
        matrices, coordinates = {}, {}
        for member in members:
            matrix, arrays = read_csr_zarr(storage, aligned["members"][member]["features"])
            record.read(member, aligned["members"][member]["features"])
            matrices[member] = matrix.toarray()
            coordinates[member] = arrays["coordinates"]
        note = None
        joint = dataclasses.replace(settings, spatial_smoothing="none")
        try:
            result = spatial.segment_members(matrices, joint)
            k, seg = result.segmentation.k, result.segmentation
            labels = {m: result.labels_of(m) for m in members}
            means, effect, top = seg.mean_spectra, seg.effect_size, seg.top_features
        except ValueError as exc:  # SpatialError, or a degenerate matrix sklearn refuses
            note = f"not segmented: {exc}"
            k = 1
            labels = {m: np.zeros(matrices[m].shape[0], np.int64) for m in members}
            means = np.vstack(list(matrices.values())).mean(axis=0, keepdims=True)
            effect, top = np.zeros_like(means), np.zeros((1, 0), np.int64)
        colours = spatial.segment_colours(k)
        outputs: dict[str, str] = {}
        per_member: dict[str, dict] = {}
        for member in members:
            grid = _member_grid(step, member, coordinates[member])
            image = grid.image(coordinates[member], labels[member], fill_value=-1)
            if settings.spatial_smoothing == "majority" and note is None and not grid.is_3d:
                image = np.where(
                    image >= 0,
                    spatial.majority_filter(
                        image.astype(np.int64), k, settings.smoothing_radius_pixels, image >= 0
                    ),
                    -1,
                )
                labels[member] = image[grid.indices(coordinates[member])].astype(np.int64)
            where = f"{folder}/members/{member}"
            per_member[member] = {
                "labels": write_npy(storage, f"{where}/labels.npy", labels[member]),
                "segment_map": write_npy(storage, f"{where}/segment_map.npy", image),
                "png": write_bytes(storage, f"{where}/segment_map.png", segment_map_png(image, k)),
                "sizes": np.bincount(labels[member], minlength=k).astype(int).tolist(),
            }
        sizes = np.sum([per_member[m]["sizes"] for m in members], axis=0)
        segments = [
            {
                "segment": c,
                "colour": colours[c],
                "pixels": int(sizes[c]),
                "pixels_per_member": {m: per_member[m]["sizes"][c] for m in members},
                "top": [
                    {
                        "mz": float(feature_mz[j]),
                        "effect_size": float(effect[c, j]),
                        "mean_intensity": float(means[c, j]),
                    }
                    for j in top[c]
                ],  # fmt: skip
            }
            for c in range(k)
        ]
        summary = {
            "k": k,
            "method": settings.method,
            "spatial_smoothing": settings.spatial_smoothing,
            "note": note,
            "segments": segments,
        }
        outputs["mean_spectra"] = write_npy(storage, f"{folder}/mean_spectra.npy", means)
        outputs["top_ions"] = write_json(storage, f"{folder}/top_ions.json", summary)
        record.wrote_all({**outputs, **{m: per_member[m]["png"] for m in members}})
    return StepResult(
        {
            "study_id": study_id,
            "folder": folder,
            "axis_hash": aligned["axis_hash"],
            "parameter_set": resolved.id,
            "k": k,
            "note": note,
            "members": per_member,
            "outputs": outputs,
        },
        metadata={
            "members": len(members),
            "segments": k,
            "pixels per segment": ", ".join(str(int(n)) for n in sizes),
            "note": note or "",
            "seconds": round(time.perf_counter() - started, 3),
        },
        data_version=folder.rsplit("/", 1)[-1],
    )
