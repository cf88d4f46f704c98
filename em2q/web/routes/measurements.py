"""One measurement: its page (metadata, status, QC, mean spectrum, TIC and ion images, runs),
its TIC image, its status as JSON for the page to follow, and deleting it."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from em2q.client import delete_measurement
from em2q.results import MeasurementResults, ResultNotReady
from em2q.web import plots
from em2q.web.deps import (
    AppSettings,
    Backends,
    Connections,
    CurrentUser,
    measurement_results,
    saved_parameter_sets,
)
from em2q.web.forms import mz_list
from em2q.web.pages import FINAL_STATUSES, NotFound, render
from em2q_resources import lifecycle
from em2q_resources.auth import Action, allowed, require
from em2q_resources.metadata import DocumentNotFound, SchemaViolation, load_schema
from em2q_resources.metadata.schema import field_unit, to_document
from em2q_resources.results_layout import read_bytes
from em2q_resources.workflows import startable

router = APIRouter()

#: the metadata page's sections: (title, the document's field paths shown there)
_SECTIONS = [
    ("Measurement", ["title", "description", "operator", "project_id", "study_id", "acquired_at",
                     "uploaded_at", "updated_at", "tags"]),
    ("Sample", ["sample"]),
    ("Spectrometer settings", ["settings"]),
    ("imzML facts", ["facts"]),
]  # fmt: skip


def measurement_document(connections: Connections, measurement_id: str) -> dict[str, Any]:
    return to_document(connections.store.get(load_schema().Measurement, measurement_id).doc)


@router.get("/measurements/{measurement_id}", response_class=HTMLResponse)
def measurement_page(
    request: Request,
    measurement_id: str,
    user: CurrentUser,
    connections: Backends,
    settings: AppSettings,
    p: str = "",
    mz: str = "",
    ppm: float = 10.0,
    launched: str = "",
):
    require(user, Action.READ)
    doc = measurement_document(connections, measurement_id)
    results = measurement_results(connections, settings, measurement_id, p)
    parameters = results.parameters  # an unknown set is a 404 before anything is read
    sections, waiting = _result_sections(results, measurement_id)
    chosen_mz, mz_problem = mz_list(mz, ppm)
    if not chosen_mz and not mz_problem:
        try:
            stored_mz, _ = results.ion_images()
            chosen_mz = [float(v) for v in stored_mz[:4]]
        except ResultNotReady:
            chosen_mz = []
    if chosen_mz:
        try:
            images = [(f"m/z {v:.4f} ± {ppm:g} ppm", results.ion_image(v, ppm)) for v in chosen_mz]
            sections["ion_images"] = plots.figure_json(
                plots.images_figure(images, grid=results.grid())
            )
        except (DocumentNotFound, OSError, ValueError) as exc:  # no raw data to read
            mz_problem = f"no ion images: {exc}"
    detail = doc.get("status_detail")
    next_action = lifecycle.advice(lifecycle.Action(detail["action"]), measurement_id) if (
        detail and detail.get("action")
    ) else ""  # fmt: skip
    if doc["status"] == "FAILED":  # the cause, not "not processed yet … run reprocess"
        failed = f"not available: processing FAILED — {doc.get('status_reason') or ''}"
        waiting = {name: failed for name in waiting}
    store = connections.store
    workflows = startable(store, user) if allowed(user, Action.START_WORKFLOW) else []
    return render(
        request,
        "measurement.html",
        m=doc,
        detail=detail or {},
        next_action=next_action,
        can_retry=doc["status"] == "FAILED" and any(w.name == "standard" for w in workflows),
        final=doc["status"] in FINAL_STATUSES,
        metadata_rows=_metadata_rows(doc),
        parameters=parameters,
        parameter_sets=[p.id for p in saved_parameter_sets(store)],
        sections=sections,
        waiting=waiting,
        mz=", ".join(f"{v:g}" for v in chosen_mz) if not mz_problem else mz,
        mz_problem=mz_problem,
        ppm=ppm,
        runs=[to_document(r) for r in results.runs()],
        workflows=workflows,
        launched=launched,
        launched_url=connections.dagster.ui_url_for_run(launched) if launched else "",
    )


def _result_sections(
    results: MeasurementResults, measurement_id: str
) -> tuple[dict[str, Any], dict[str, str]]:
    """The page's QC, mean spectrum and TIC sections that are ready, and why the others wait."""
    sections: dict[str, Any] = {}
    waiting: dict[str, str] = {}
    try:
        sections["qc"] = results.qc_report()
    except ResultNotReady as exc:
        waiting["qc"] = str(exc)
    try:
        mz_axis, intensity = results.mean_spectrum()
        sections["spectrum"] = plots.figure_json(
            plots.spectra_figure([(measurement_id, mz_axis, intensity)])
        )
    except ResultNotReady as exc:
        waiting["spectrum"] = str(exc)
    try:
        results.manifest("tic_image")
        sections["tic"] = True
        grid = results.grid()
        if grid.is_3d:
            sections["planes"] = f"z = {grid.z_values[0]}…{grid.z_values[-1]}"
        if grid.pixel_size_um:
            sections["pixel_size"] = "{:g} × {:g}".format(*grid.pixel_size_um)
    except ResultNotReady as exc:
        waiting["tic"] = str(exc)
    return sections, waiting


@router.get("/measurements/{measurement_id}/tic.png")
def tic_png(
    measurement_id: str, user: CurrentUser, connections: Backends, settings: AppSettings
) -> Response:
    require(user, Action.READ)
    results = measurement_results(connections, settings, measurement_id, None)
    try:
        png = read_bytes(connections.storage, results.manifest("tic_image")["outputs"]["png"])
    except ResultNotReady as exc:
        raise NotFound(str(exc)) from None
    return Response(png, media_type="image/png", headers={"Cache-Control": "no-cache"})


@router.get("/api/measurements/{measurement_id}/status")
def measurement_status(measurement_id: str, user: CurrentUser, connections: Backends):
    require(user, Action.READ)
    doc = measurement_document(connections, measurement_id)
    detail = doc.get("status_detail")
    return {
        "id": measurement_id,
        "status": doc["status"],
        "reason": doc.get("status_reason"),
        "final": doc["status"] in FINAL_STATUSES,
        "detail": detail,
        "next": lifecycle.advice(lifecycle.Action(detail["action"]), measurement_id)
        if detail and detail.get("action")
        else None,
    }


@router.post("/measurements/{measurement_id}/delete")
def delete(measurement_id: str, user: CurrentUser, connections: Backends):
    require(user, Action.DELETE)
    delete_measurement(connections.store, connections.storage, measurement_id, user)
    return RedirectResponse("/catalog", status_code=303)


def _flatten(value: Any, path: str) -> list[tuple[str, Any]]:
    if isinstance(value, dict):
        rows: list[tuple[str, Any]] = []
        for key, inner in value.items():
            rows += _flatten(inner, f"{path}.{key}")
        return rows
    return [(path, value)]


def _metadata_rows(doc: dict[str, Any]) -> list[tuple[str, list[tuple[str, str, Any, str | None]]]]:
    """``[(section, [(path, label, value, unit)])]`` for the measurement page."""
    measurement = load_schema().Measurement
    sections = []
    for title, paths in _SECTIONS:
        rows = []
        for top in paths:
            if top not in doc:
                continue
            for path, value in _flatten(doc[top], top):
                try:
                    unit = field_unit(measurement, path)
                except SchemaViolation:
                    unit = None
                label = path.split(".", 1)[1] if "." in path and top != path else path
                rows.append((path, label.replace("_", " "), value, unit))
        sections.append((title, rows))
    return sections
