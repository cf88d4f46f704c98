"""Comparing results side by side: several measurements under one parameter set, or one
measurement under several sets (``?m=…&p=…``): QC checks, mean spectra, ion images."""

from __future__ import annotations

import contextlib
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from em2q.results import ResultNotReady
from em2q.web import plots
from em2q.web.deps import (
    AppSettings,
    Backends,
    CurrentUser,
    measurement_results,
    saved_parameter_sets,
)
from em2q.web.forms import mz_list
from em2q.web.pages import render
from em2q_resources.auth import Action, require
from em2q_resources.metadata import SchemaViolation
from em2q_resources.parameter_sets import DEFAULT_NAME

router = APIRouter()

#: the most measurements (or parameter sets) one comparison shows
MAX_COMPARED = 8


@router.get("/compare", response_class=HTMLResponse)
def compare_page(
    request: Request,
    user: CurrentUser,
    connections: Backends,
    settings: AppSettings,
    mz: str = "",
    ppm: float = 10.0,
):
    require(user, Action.READ)
    measurements = [m for m in request.query_params.getlist("m") if m]
    sets = [p for p in request.query_params.getlist("p") if p]
    if len(measurements) > MAX_COMPARED or len(sets) > MAX_COMPARED:
        raise SchemaViolation("m", f"compare at most {MAX_COMPARED} measurements or sets")
    if len(measurements) == 1 and len(sets) >= 2:
        columns = [(measurements[0], p) for p in sets]
    else:
        columns = [(m, sets[0] if sets else DEFAULT_NAME) for m in measurements]
    compared = []
    for measurement_id, parameter_set in columns:
        results = measurement_results(connections, settings, measurement_id, parameter_set)
        entry: dict[str, Any] = {
            "id": measurement_id,
            "title": results.measurement.title,
            "parameter_set": results.parameters.id,
            "label": f"{measurement_id} · {results.parameters.id}",
            "results": results,
        }
        try:
            entry["qc"] = results.qc_report()
        except ResultNotReady as exc:
            entry["waiting"] = str(exc)
        with contextlib.suppress(ResultNotReady):
            entry["spectrum"] = results.mean_spectrum()
        compared.append(entry)
    chosen_mz, mz_problem = mz_list(mz, ppm)
    spectra = [(c["label"], *c["spectrum"]) for c in compared if "spectrum" in c]
    figure_spectra = (
        plots.figure_json(plots.spectra_figure(spectra, "Mean spectra")) if spectra else ""
    )
    figure_images = ""
    if chosen_mz and compared:
        images = [
            (f"{c['label']}<br>m/z {v:g} ± {ppm:g} ppm", c["results"].ion_image(v, ppm))
            for v in chosen_mz
            for c in compared
        ]
        figure_images = plots.figure_json(plots.images_figure(images, columns=len(compared)))
    check_names = []
    for c in compared:
        for check in (c.get("qc") or {}).get("checks", []):
            if check["name"] not in check_names:
                check_names.append(check["name"])
    return render(
        request,
        "compare.html",
        compared=compared,
        check_names=check_names,
        measurements=measurements,
        sets=sets,
        parameter_sets=[p.id for p in saved_parameter_sets(connections.store)],
        mz=mz,
        ppm=ppm,
        mz_problem=mz_problem,
        figure_spectra=figure_spectra,
        figure_images=figure_images,
    )
