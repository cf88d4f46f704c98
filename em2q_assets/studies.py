"""Study-level assets, one partition per study (``em2q_resources.catalog.STUDY_ASSETS``).

The numbers come from ``em2q_msi.study`` (docs/processing.md, "Study comparison"); this module
reads the study (``em2q_resources.studies``), its members' peaks (their ``preprocessed_chunks``
results under the processing hash of the study's parameter set) and files the results under
``studies/<study>/<asset>/…`` (``em2q_resources.results_layout``). ``em2q_msi.study`` (scipy) is imported inside the
steps, so loading the code location does not load scipy.

Incremental: a member's own peak list and its alignment are cached under a key of everything
they depend on (the member's peak results, the study parameters, and for the alignment the
feature axis), so adding a member computes only its own peak list and alignment, plus the
reference and the comparison. The feature axis the members are aligned to is kept across
rebuilds of the reference while :func:`em2q_msi.study.reference_change` says the rebuilt
reference fits it (no feature moved by more than ``study.drift_tolerance_ppm``, none added);
otherwise the ``reference_drift`` check fails (a warning), the axis becomes the new reference and
every member is re-aligned to it: the earlier alignments are stale, never mixed with new ones.
"""

from __future__ import annotations

import hashlib
import io
import json
import time
from typing import Any

import numpy as np

from em2q_assets.adapters import StudyPartition
from em2q_assets.provenance import StepContext, StepResult, recorded_run
from em2q_msi.errors import StepFailed
from em2q_msi.parameters import StudyParameters
from em2q_msi.qc import QCCheck
from em2q_resources import studies
from em2q_resources.results_layout import (
    exists,
    member_peak_manifests,
    read_csr_zarr,
    read_json,
    read_member_peaks,
    read_npy,
    study_key,
    study_manifest_key,
    write_bytes,
    write_csr_zarr,
    write_json,
    write_npy,
)

REFERENCE_FIELDS = ("mz", "n_measurements", "frequency", "width_ppm")


def _digest(*parts: Any) -> str:
    text = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def _member_inputs(step: StepContext, member: str, processing_hash: str) -> list[dict]:
    manifests = member_peak_manifests(step.storage, member, processing_hash)
    if not manifests:
        raise StepFailed(
            f"member {member!r} has no peaks for the study's parameter set (processing hash "
            f"{processing_hash[:16]}): materialize its preprocessed_chunks with that set first",
            metadata={"member": member},
        )
    return manifests


def _own_peaks(
    step: StepContext, study_id: str, member: str, manifests: list[dict], params: StudyParameters
) -> tuple[np.ndarray, bool]:
    """The member's own peak m/z (``measurement_peaks``), cached; ``(mz, computed now)``."""
    from em2q_msi import study as core

    key = study_key(
        study_id,
        "study_reference_peaks",
        "members",
        member,
        _digest(manifests, params.digest())[:16],
    )
    if exists(step.storage, f"{key}/done.json"):
        return read_npy(step.storage, step.storage.url(f"{key}/mz.npy")), False
    peaks = read_member_peaks(step.storage, manifests)
    own = core.measurement_peaks(
        peaks["mz"], peaks["intensity"], peaks["offsets"], params.tolerance_ppm,
        params.min_pixel_frequency,
    )  # fmt: skip
    write_npy(step.storage, f"{key}/mz.npy", own.mz)
    write_json(step.storage, f"{key}/done.json", {"member": member, "features": int(own.mz.size)})
    return own.mz, True


def _previous(step: StepContext, asset: str, study_id: str) -> dict | None:
    key = study_manifest_key(asset, study_id)
    return read_json(step.storage, step.storage.url(key)) if exists(step.storage, key) else None


def study_reference_peaks(
    step: StepContext, partition: StudyPartition, inputs: dict, parameters: Any = None
) -> StepResult:
    """The reference of the study's current members, and the feature axis they are aligned to."""
    from em2q_msi import study as core

    started = time.perf_counter()
    study_id = partition.study_id
    study = studies.get(step.store, study_id)
    resolved = studies.parameters(step.store, study)
    params = resolved.study
    groups = studies.member_groups(step.store, study)
    if len(groups) < 1:
        raise StepFailed(f"study {study_id!r} has no members: add measurements first")
    with recorded_run(
        step, "study_reference_peaks", study_id, measurement_id=None, parameters=resolved
    ) as record:
        own, computed = [], []
        for member in groups:
            manifests = _member_inputs(step, member, resolved.content_hash)
            record.read(member, manifests[0]["folder"].rsplit("/", 1)[0])
            mz, fresh = _own_peaks(step, study_id, member, manifests, params)
            own.append(mz)
            if fresh:
                computed.append(member)
        reference = core.reference_peaks(own, params.tolerance_ppm, params.min_frequency)
        settings = _digest(params.digest(), resolved.content_hash)
        previous = _previous(step, "study_reference_peaks", study_id)
        change, stale = None, []
        axis = reference.mz
        if previous is not None and previous["settings"] == settings:
            old_axis = read_npy(step.storage, previous["outputs"]["axis_mz"])
            old = core.ReferencePeaks(
                old_axis, np.ones(old_axis.size, np.int64), np.ones(old_axis.size),
                np.zeros(old_axis.size), params.tolerance_ppm,
            )  # fmt: skip
            change = core.reference_change(old, reference, params.drift_tolerance_ppm)
            if change.stale:
                stale = list(previous["members"])
            else:
                axis = old_axis
        axis_hash = _digest(np.asarray(axis).tobytes().hex(), settings)
        folder = study_key(study_id, "study_reference_peaks", axis_hash[:16])
        outputs = {
            f"reference_{name}": write_npy(
                step.storage, f"{folder}/reference_{name}.npy", np.asarray(getattr(reference, name))
            )
            for name in REFERENCE_FIELDS
        }
        outputs["axis_mz"] = write_npy(step.storage, f"{folder}/axis_mz.npy", np.asarray(axis))
        record.wrote_all(outputs)
    moved = change.moved_ppm if change is not None else np.zeros(0)
    largest = float(np.nanmax(np.abs(moved))) if np.isfinite(moved).any() else 0.0
    drift = {
        "compared": change is not None,
        "stale": bool(change is not None and change.stale),
        "moved": int(change.moved.size) if change is not None else 0,
        "added": int(change.added.size) if change is not None else 0,
        "removed": int(change.removed.size) if change is not None else 0,
        "largest_shift_ppm": largest,
        "stale_members": stale,
    }
    manifest = {
        "study_id": study_id,
        "folder": folder,
        "members": list(groups),
        "groups": groups,
        "design": list(study.design or []),
        "parameter_set": resolved.id,
        "processing_hash": resolved.content_hash,
        "study_parameters": params.to_dict(),
        "settings": settings,
        "axis_hash": axis_hash,
        "n_features": int(np.asarray(axis).size),
        "drift": drift,
        "outputs": outputs,
    }
    detail = (
        f"{drift['moved']} feature(s) moved > {params.drift_tolerance_ppm} ppm, "
        f"{drift['added']} added: re-aligning {len(stale)} earlier member(s)"
        if drift["stale"]
        else "no earlier reference"
        if change is None
        else f"largest shift {largest:.3g} ppm, no feature added"
    )
    check = QCCheck(
        "reference_drift", largest, params.drift_tolerance_ppm, "<=",
        not drift["stale"], detail,
    )  # fmt: skip
    return StepResult(
        manifest,
        metadata={
            "members": len(groups),
            "features": manifest["n_features"],
            "reference features": reference.n_features,
            "own peak lists computed": len(computed),
            "parameter set": resolved.id,
            "stale alignments": len(stale),
            "seconds": round(time.perf_counter() - started, 3),
        },
        data_version=axis_hash[:24],
        checks=[check],
    )


def _align_member(
    step: StepContext, folder: str, member: str, manifests: list[dict], axis: np.ndarray,
    params: StudyParameters,
) -> dict:  # fmt: skip
    from em2q_msi import study as core

    peaks = read_member_peaks(step.storage, manifests)
    aligned = core.align_to_reference(
        peaks["mz"], peaks["intensity"], peaks["offsets"], axis, params.tolerance_ppm
    )
    factors = core.normalisation_factors(peaks["mz"], peaks["intensity"], peaks["offsets"], params)
    means = core.measurement_means(aligned, factors)
    url = write_csr_zarr(
        step.storage, f"{folder}/features.zarr", aligned,
        {"coordinates": peaks["coordinates"], "normalisation": factors},
        {"measurement_id": member, "normalisation": params.normalisation},
    )  # fmt: skip
    done = {
        "member": member,
        "features": url,
        "means": write_npy(step.storage, f"{folder}/means.npy", means.mean),
        "n_pixels": means.n_pixels,
        "pixels_used": means.pixels_used,
        "stored_values": int(aligned.nnz),
    }
    write_json(step.storage, f"{folder}/member.json", done)  # last: the cache entry exists now
    return done


def aligned_features(
    step: StepContext, partition: StudyPartition, inputs: dict, parameters: Any = None
) -> StepResult:
    """Each member's pixels × features matrix on the axis, cached per member and axis."""
    started = time.perf_counter()
    reference = inputs["study_reference_peaks"]
    study_id = partition.study_id
    params = StudyParameters.from_dict(reference["study_parameters"])
    axis = read_npy(step.storage, reference["outputs"]["axis_mz"])
    members: dict[str, dict] = {}
    realigned, reused = [], []
    with recorded_run(step, "aligned_features", study_id, measurement_id=None) as record:
        record.read("axis_mz", reference["outputs"]["axis_mz"])
        for member in reference["members"]:
            manifests = _member_inputs(step, member, reference["processing_hash"])
            key = _digest(manifests, reference["axis_hash"])[:16]
            folder = study_key(
                study_id, "aligned_features", reference["axis_hash"][:16], member, key
            )
            if exists(step.storage, f"{folder}/member.json"):
                members[member] = read_json(step.storage, step.storage.url(f"{folder}/member.json"))
                reused.append(member)
            else:
                members[member] = _align_member(step, folder, member, manifests, axis, params)
                realigned.append(member)
            record.wrote(member, members[member]["features"])
    manifest = {
        "study_id": study_id,
        "axis_hash": reference["axis_hash"],
        "axis_mz": reference["outputs"]["axis_mz"],
        "groups": reference["groups"],
        "members": members,
        "realigned": realigned,
        "reused": reused,
        "folder": study_key(study_id, "aligned_features", reference["axis_hash"][:16]),
    }
    return StepResult(
        manifest,
        metadata={
            "members": len(members),
            "re-aligned": len(realigned),
            "reused": len(reused),
            "pixels": sum(m["n_pixels"] for m in members.values()),
            "features": int(axis.size),
            "seconds": round(time.perf_counter() - started, 3),
        },
        data_version=_digest(reference["axis_hash"], sorted(members.items()))[:24],
    )


def _roi_replicates(
    step: StepContext, aligned: dict, study_rois: list[Any]
) -> tuple[list[str], list[str], np.ndarray]:
    """``(labels "<measurement>/<roi>", groups, ROIs × features means)`` of a ROI-level study:
    each ROI's pixels (``em2q_msi.spatial.roi_spectrum_indices`` on the measurement's grid)
    averaged from its aligned features (``em2q_msi.study.roi_means``)."""
    from em2q_msi import spatial
    from em2q_msi import study as core
    from em2q_msi.facts import grid_from_facts
    from em2q_msi.geometry import PixelGrid
    from em2q_resources import rois

    labels, groups, rows = [], [], []
    schema = step.store.schema
    for member in dict.fromkeys(r.measurement_id for r in study_rois):
        if member not in aligned["members"]:
            raise core.StudyError(f"member {member!r} is not aligned yet")
        matrix, arrays = read_csr_zarr(step.storage, aligned["members"][member]["features"])
        coordinates = arrays["coordinates"]
        doc = step.store.get(schema.Measurement, member).doc
        grid = grid_from_facts(doc.facts) or PixelGrid.from_coordinates(coordinates)
        mine = [r for r in study_rois if r.measurement_id == member]
        indices = [
            spatial.roi_spectrum_indices(
                rois.geometry_of(rois.get(step.store, member, r.roi)), grid, coordinates
            )
            for r in mine
        ]
        names = [f"ROI {r.roi!r} of {member!r}" for r in mine]
        rows.append(core.roi_means(matrix, arrays["normalisation"], indices, names))
        labels += [f"{member}/{r.roi}" for r in mine]
        groups += [r.group for r in mine]
    return labels, groups, np.vstack(rows)


def study_comparison(
    step: StepContext, partition: StudyPartition, inputs: dict, parameters: Any = None
) -> StepResult:
    """Contrasts between the design's groups and a PCA of the members."""
    from em2q_msi import study as core

    started = time.perf_counter()
    reference, aligned = inputs["study_reference_peaks"], inputs["aligned_features"]
    study_id = partition.study_id
    if aligned["axis_hash"] != reference["axis_hash"]:
        raise StepFailed(
            f"study {study_id!r}: the alignments are of another feature axis than the reference "
            "(stale); materialize aligned_features first",
        )
    params = StudyParameters.from_dict(reference["study_parameters"])
    axis = read_npy(step.storage, reference["outputs"]["axis_mz"])
    study_rois = studies.roi_replicates(step.store, studies.get(step.store, study_id))
    try:
        if study_rois:  # ROI-level: each ROI's mean is a replicate of its group
            members, groups, values = _roi_replicates(step, aligned, study_rois)
        else:
            members = list(aligned["members"])
            groups = [aligned["groups"][m] for m in members]
            values = np.stack(
                [read_npy(step.storage, aligned["members"][m]["means"]) for m in members]
            )
        comparison = core.compare_groups(values, groups, axis, params)
        pcs = core.pca(values) if len(members) >= 2 else None
    except core.StudyError as exc:
        raise StepFailed(f"study {study_id!r}: {exc}") from None
    folder = study_key(
        study_id, "study_comparison", _digest(aligned["axis_hash"], members, groups)[:16]
    )
    table = comparison.table()
    buffer = io.StringIO()
    table.to_csv(buffer, index=False)
    with recorded_run(step, "study_comparison", study_id, measurement_id=None) as record:
        outputs = {
            "table_csv": write_bytes(
                step.storage, f"{folder}/comparison.csv", buffer.getvalue().encode()
            ),
            "means": write_npy(step.storage, f"{folder}/means.npy", values),
            "pca": write_json(
                step.storage,
                f"{folder}/pca.json",
                {
                    "members": members,
                    "groups": groups,
                    "scores": pcs.scores.tolist() if pcs else [],
                    "explained_variance_ratio": pcs.explained_variance_ratio.tolist()
                    if pcs
                    else [],
                },
            ),
        }
        record.wrote_all(outputs)
    significant = {c.name: int(c.significant.sum()) for c in comparison.contrasts}
    manifest = {
        "study_id": study_id,
        "folder": folder,
        "axis_hash": aligned["axis_hash"],
        "members": members,
        "groups": groups,
        "replicates": "roi" if study_rois else "measurement",
        "test": comparison.test,
        "contrasts": [c.name for c in comparison.contrasts],
        "significant": significant,
        "outputs": outputs,
    }
    metadata: dict[str, Any] = {
        "members": len(members),
        "features": int(axis.size),
        "test": comparison.test,
        **{f"significant ({name})": n for name, n in significant.items()},
        "seconds": round(time.perf_counter() - started, 3),
    }
    if pcs is not None:
        metadata["PC1 explained variance"] = round(float(pcs.explained_variance_ratio[0]), 4)
    return StepResult(manifest, metadata=metadata, data_version=folder.rsplit("/", 1)[-1])
