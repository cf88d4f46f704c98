"""One measurement under two parameter sets: peaks gained and lost, peak-list overlap within
± ppm, per-feature ion-image correlation and the TIC ratio (``em2q_msi.parameter_diff``)."""

from __future__ import annotations

import math

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from em2q.results import diff_parameter_sets
from em2q.web.deps import (
    AppSettings,
    Backends,
    CurrentUser,
    measurement_results,
    saved_parameter_sets,
)
from em2q.web.pages import render
from em2q_resources.auth import Action, require
from em2q_resources.metadata import SchemaViolation

router = APIRouter()

#: the most paired / gained / lost features a page lists (the summary counts them all)
MAX_LISTED = 500


@router.get("/diff", response_class=HTMLResponse)
def parameter_diff_page(
    request: Request,
    user: CurrentUser,
    connections: Backends,
    settings: AppSettings,
    m: str = "",
    a: str = "",
    b: str = "",
    ppm: float = 5.0,
):
    require(user, Action.READ)
    if not math.isfinite(ppm) or not 0 < ppm <= 10_000:
        raise SchemaViolation("ppm", f"must be within (0, 10000], got {ppm}")
    diff = None
    if m and a and b:
        diff = diff_parameter_sets(
            measurement_results(connections, settings, m, a),
            measurement_results(connections, settings, m, b),
            tolerance_ppm=ppm,
        )
    pairs = []
    if diff is not None:
        pairs = [
            (float(x), float(y), float(e), None if math.isnan(r) else float(r))
            for x, y, e, r in zip(
                diff.paired_mz_a, diff.paired_mz_b, diff.ppm_error, diff.correlation, strict=True
            )
        ][:MAX_LISTED]
    return render(
        request,
        "parameter_diff.html",
        measurement_id=m,
        a=a,
        b=b,
        ppm=ppm,
        parameter_sets=[p.id for p in saved_parameter_sets(connections.store)],
        diff=diff,
        summary=diff.summary() if diff is not None else {},
        pairs=pairs,
        gained=[float(v) for v in diff.gained_mz[:MAX_LISTED]] if diff is not None else [],
        lost=[float(v) for v in diff.lost_mz[:MAX_LISTED]] if diff is not None else [],
    )
